"""Hostile image sources stored in points, explained end to end through ``Explainer``.

``tests/unit/images/`` covers :class:`ImageSourcePolicy` call by call; here the sources
sit in the payloads of an embedded collection (Qdrant's tutorial layout: no stored
features, so explaining a hit reads its image) and every read goes through ``Explainer``.
Local HTTP servers on loopback (127.0.0.1, 127.0.0.2 and ::1) serve real images, so a
check that let a URL through would load it and draw a heatmap. Each case must be refused
(:class:`SourceNotAllowedError`) or fail to load (:class:`ImageLoadError`: cut off at the
size or time cap, not an image), as its row says. An audit hook records every file opened
and every socket connected while the cases run: nothing outside the roots is opened, and
nothing but the one allowed server is connected to. The servers, the audit hook and the
table of cases are in ``_hostile.py``; the base64 queries of the adapters
(:func:`~qdrant_xai.images.query.load_query_image`, MCP) and HTML reports are tried here too.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient, models

import qdrant_xai.images.local as local_module
from qdrant_xai import (
    ClipEncoder,
    Explainer,
    ImageLoadError,
    QdrantXaiError,
    SourceNotAllowedError,
    StaleFeaturesError,
)
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.images.policy import ImageSourcePolicy
from tests.hardening._hostile import (
    AUDIT,
    LIMIT,
    READ_TIMEOUT,
    TIMEOUT,
    Server,
    control_cases,
    hostile_cases,
    policies_for,
)

pytestmark = pytest.mark.hardening

COLLECTION = "hostile"
TEXT = "a red circle"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The allowed root, with traps inside, and an outside folder holding a real image."""
    base = tmp_path_factory.mktemp("hostile")
    scenes = base / "scenes"
    write_scene_folder(scenes, 2, seed=41, size=64)
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    shutil.copy(scenes / "scene_0000.png", root / "ok.png")
    # a real image outside the root: a check that lets it through would draw a heatmap
    shutil.copy(scenes / "scene_0001.png", outside / "secret.png")
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "zero.png").symlink_to("/dev/zero")
    (root / "dir.png").mkdir()
    os.mkfifo(root / "fifo.png")
    with open(root / "huge.png", "wb") as handle:  # sparse: 64 MB that take no space
        handle.write((root / "ok.png").read_bytes())
        handle.truncate(64 * 1024 * 1024)
    return {"root": root, "outside": outside}


@pytest.fixture(scope="module")
def servers(folders: dict[str, Path]) -> Iterator[dict[str, Server]]:
    png = (folders["root"] / "ok.png").read_bytes()
    running = {
        name: Server(host, png)
        for name, host in (("main", "127.0.0.1"), ("second", "127.0.0.2"), ("v6", "::1"))
    }
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in running.values()]
    for thread in threads:
        thread.start()
    yield running
    for server in running.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stored(tiny_encoder: ClipEncoder, folders: dict[str, Path]) -> Iterator[QdrantClient]:
    """An embedded collection in Qdrant's tutorial layout; points are added per case."""
    client = QdrantClient(":memory:")
    client.create_collection(
        COLLECTION,
        vectors_config={
            v: models.VectorParams(size=tiny_encoder.dim, distance=models.Distance.COSINE)
            for v in ("image", "text")
        },
    )
    yield client
    client.close()


# -- running them --------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # "refused", "load", "ok", or what else came out
    seconds: float
    bytes_read: int
    detail: str
    opened: int = 0  # files the audit hook saw opened
    connected: int = 0  # sockets it saw connected


def _explain(
    encoder: ClipEncoder, client: QdrantClient, policy: ImageSourcePolicy, point: int
) -> Any:
    hits = client.query_points(
        COLLECTION,
        query=[1.0] * encoder.dim,
        using="image",
        query_filter=models.Filter(must=[models.HasIdCondition(has_id=[point])]),
        limit=1,
    ).points
    assert len(hits) == 1
    explainer = Explainer(
        encoder, client, collection_name=COLLECTION, layout="qdrant-tutorial", sources=policy
    )
    return explainer.explain(TEXT, hits, hit_kind="image", errors="raise")


def _classify(exc: BaseException) -> str:
    """What a refusal came out as: the source error itself, or its cause."""
    for error in (exc, exc.__cause__):
        if isinstance(error, SourceNotAllowedError):
            return "refused"
        if isinstance(error, ImageLoadError):
            return "load"
    return f"{type(exc).__name__}: {exc}"


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes the package pulls from responses and files (pass-through spies)."""
    reads = [0]
    iter_raw = httpx.Response.iter_raw
    read_at_most = local_module._read_at_most

    def counting_iter_raw(self: httpx.Response, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in iter_raw(self, *args, **kwargs):
            reads[0] += len(chunk)
            yield chunk

    def counting_read(*args: Any, **kwargs: Any) -> bytes:
        data = read_at_most(*args, **kwargs)
        reads[0] += len(data)
        return data

    monkeypatch.setattr(httpx.Response, "iter_raw", counting_iter_raw)
    monkeypatch.setattr(local_module, "_read_at_most", counting_read)
    return reads


def _inside(path: str, roots: Sequence[Path]) -> bool:
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(r.resolve()) for r in roots)


@pytest.mark.slow
def test_hostile_payload_sources_are_refused_or_cut_off(
    tiny_encoder: ClipEncoder,
    stored: QdrantClient,
    folders: dict[str, Path],
    servers: dict[str, Server],
    counted_reads: list[int],
    figures: Any,
) -> None:
    root, outside = folders["root"], folders["outside"]
    policies = policies_for(root)
    cases = control_cases(root, servers) + hostile_cases(root, outside, servers)
    vector = tiny_encoder.embed_images([root / "ok.png"])[0].tolist()
    stored.upsert(
        COLLECTION,
        points=[
            models.PointStruct(
                id=i,
                vector={"image": vector, "text": vector},
                payload={"image": case.source, "caption": TEXT},
            )
            for i, case in enumerate(cases)
        ],
    )
    allowed_connect = {("127.0.0.1", servers["main"].port)}
    python_prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    outcomes: dict[str, Outcome] = {}
    opened_outside: list[str] = []
    bad_connects: list[str] = []
    for point, case in enumerate(cases):
        counted_reads[0] = 0
        AUDIT.opened.clear()
        AUDIT.connected.clear()
        began = time.monotonic()
        AUDIT.active = True
        try:
            explanations = _explain(tiny_encoder, stored, policies[case.policy], point)
            kind = "ok" if explanations and explanations[0].heatmap is not None else "no heatmap"
            detail = ""
        except QdrantXaiError as exc:
            kind, detail = _classify(exc), str(exc)
        except Exception as exc:  # anything untyped is a failure
            kind, detail = f"untyped {type(exc).__name__}", str(exc)
        finally:
            AUDIT.active = False
        outcomes[case.name] = Outcome(
            kind,
            time.monotonic() - began,
            counted_reads[0],
            detail,
            len(AUDIT.opened),
            len(AUDIT.connected),
        )
        for path in AUDIT.opened:
            relative = not os.path.isabs(path)
            if relative:  # a component opened below a root's descriptor (O_NOFOLLOW walk)
                if Path(path).name in {"secret.png", "passwd", "zero", "outside"}:
                    opened_outside.append(f"{case.name}: {path}")
                continue
            if _inside(path, [root]) and not _inside(path, [outside]):
                continue
            if any(Path(path).resolve().is_relative_to(p) for p in python_prefixes):
                continue  # the interpreter's own files (lazy imports, CA bundle)
            opened_outside.append(f"{case.name}: {path}")
        for address in AUDIT.connected:
            if tuple(address[:2]) not in allowed_connect:
                bad_connects.append(f"{case.name}: {address}")

    wrong = {
        name: f"expected {case.expect}, got {outcomes[name].kind} ({outcomes[name].detail})"
        for name, case in ((c.name, c) for c in cases)
        if outcomes[name].kind != case.expect
    }
    hostile = [c for c in cases if c.expect != "ok"]
    stopped = [c for c in hostile if outcomes[c.name].kind == c.expect]
    slowest = max(hostile, key=lambda c: outcomes[c.name].seconds)
    figures.record("sources", "hostile sources tried (end to end, via Explainer)", len(hostile))
    figures.record("sources", "refused or cut off as expected", f"{len(stopped)}/{len(hostile)}")
    figures.record(
        "sources",
        "refused by policy (SourceNotAllowedError)",
        sum(outcomes[c.name].kind == "refused" for c in hostile),
    )
    figures.record(
        "sources",
        "failed to load / cut off (ImageLoadError)",
        sum(outcomes[c.name].kind == "load" for c in hostile),
    )
    figures.record(
        "sources",
        "controls that must load (and did)",
        f"{sum(outcomes[c.name].kind == 'ok' for c in cases if c.expect == 'ok')}"
        f"/{sum(c.expect == 'ok' for c in cases)}",
    )
    figures.record("sources", "byte cap per source", LIMIT)
    figures.record(
        "sources",
        "most bytes read from one hostile source",
        max(outcomes[c.name].bytes_read for c in hostile),
    )
    figures.record(
        "sources", "bytes /huge got to send before the client hung up", servers["main"].sent
    )
    figures.record(
        "sources",
        "longest time to refusal (s)",
        f"{outcomes[slowest.name].seconds:.2f} ({slowest.name}; timeout {TIMEOUT:g} s)",
    )
    figures.record("sources", "files opened outside the roots", len(opened_outside))
    figures.record("sources", "connections other than to the allowed server", len(bad_connects))
    requested = sorted(
        {f"{name}:{path}" for name in ("second", "v6") for path in servers[name].requests}
    )
    figures.record("sources", "requests reaching the servers on 127.0.0.2 and ::1", len(requested))

    assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())
    # the audit does see reads and connections: the controls made some
    assert outcomes["control: file in the root"].opened > 0
    assert outcomes["control: the allowed server"].connected > 0
    assert opened_outside == []
    assert bad_connects == []
    assert requested == []
    assert max(outcomes[c.name].bytes_read for c in hostile) <= LIMIT + 65536
    assert outcomes[slowest.name].seconds <= TIMEOUT + READ_TIMEOUT + 1.0


def test_adapters_decode_base64_queries_through_the_source_policy(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, figures: Any
) -> None:
    """LangChain's and MCP's image queries (base64, data URIs) go through the policy: an
    oversized one is refused from its length, before any byte is decoded."""
    pytest.importorskip("mcp.server.mcpserver", reason="needs the mcp extra (SDK 2.x)")
    from qdrant_xai_mcp.backend import decode_query_image

    from qdrant_xai import ImageLimits
    from qdrant_xai.images.query import load_query_image

    decoded: list[int] = []
    b64decode = base64.b64decode

    def counting(data: Any, *args: Any, **kwargs: Any) -> bytes:
        decoded.append(len(data))
        return b64decode(data, *args, **kwargs)

    monkeypatch.setattr(base64, "b64decode", counting)
    limits = ImageLimits(max_bytes=LIMIT)
    good = base64.b64encode((folders["root"] / "ok.png").read_bytes()).decode()
    huge = base64.b64encode(b"\0" * (20 * LIMIT)).decode()
    adapters: dict[str, Callable[[str], Any]] = {
        "langchain": lambda text: load_query_image(text, roots=[], limits=limits),
        "mcp": lambda text: decode_query_image(text, limits, what="image_base64"),
    }
    hostile = {
        "huge raw base64": huge,
        "huge data URI": "data:image/png;base64," + huge,
        "data URI of HTML": "data:text/html;base64,PHNjcmlwdD4=",
        "base64 of HTML": base64.b64encode(b"<script>alert(1)</script>" * 4).decode(),
        "truncated PNG": good[: len(good) // 2],
    }
    refused = 0
    for name, adapter in adapters.items():
        for text in (good, "data:image/png;base64," + good):  # what must still work
            assert adapter(text).source == "<query image>"
        for case, text in hostile.items():
            decoded.clear()
            with pytest.raises(QdrantXaiError):
                adapter(text)
            assert all(n <= LIMIT * 4 // 3 + 4 for n in decoded), f"{name}, {case}: {decoded}"
            refused += 1
    figures.record(
        "sources",
        "adapter base64 queries refused (LangChain + MCP)",
        f"{refused}/{len(adapters) * len(hostile)}",
    )


def test_reports_read_hit_images_under_the_explainers_policy(
    tiny_encoder: ClipEncoder, tmp_path: Path, figures: Any
) -> None:
    """A payload that names an image outside ``image_roots`` must not put it into an overlay
    or an HTML report, even when the heatmap itself comes from stored features."""
    from qdrant_xai import Indexer, Searcher
    from qdrant_xai.render import render_section

    root, outside = tmp_path / "root", tmp_path / "outside"
    write_scene_folder(root, 2, seed=11, size=64)
    write_scene_folder(outside, 1, seed=12, size=64)
    client = QdrantClient(":memory:")
    Indexer(client, tiny_encoder, collection_name=COLLECTION).index_folder(root, progress=False)
    hits = Searcher(client, tiny_encoder, collection_name=COLLECTION).search_images(TEXT, limit=2)
    planted = str((outside / "scene_0000.png").resolve())
    client.set_payload(COLLECTION, payload={"source": planted}, points=[hits[0].id])
    hits = Searcher(client, tiny_encoder, collection_name=COLLECTION).search_images(TEXT, limit=2)
    AUDIT.opened.clear()
    AUDIT.active = True
    try:
        restricted = Explainer(tiny_encoder, client, collection_name=COLLECTION, image_roots=[root])
        explained = restricted.explain(TEXT, hits)
        by_source = {e.image_source: e for e in explained}
        with pytest.raises(SourceNotAllowedError):
            by_source[planted].overlay()
        report = render_section(TEXT, explained)
    finally:
        AUDIT.active = False
    assert "no overlay" in report and report.count("alt='heatmap'") == 1
    assert not any(_inside(path, [outside]) for path in AUDIT.opened)
    # without a policy (own collections, the CLI's default) local files are drawn, but the
    # planted one is not the file the point was indexed from: its bytes do not match
    trusting = Explainer(tiny_encoder, client, collection_name=COLLECTION).explain(TEXT, hits)
    for e in trusting:
        if e.image_source == planted:
            with pytest.raises(StaleFeaturesError):
                e.overlay()
        else:
            assert e.overlay().size
    figures.add("sources", "planted report images refused (overlay and HTML report)", 1)
