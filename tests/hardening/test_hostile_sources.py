"""Hostile image sources stored in points, explained end to end through ``Explainer``.

``tests/test_sources.py`` covers :class:`ImageSourcePolicy` call by call; here the sources
sit in the payloads of an embedded collection (Qdrant's tutorial layout: no stored
features, so explaining a hit reads its image) and every read goes through ``Explainer``.
Local HTTP servers on loopback (127.0.0.1, 127.0.0.2 and ::1) serve real images, so a
check that let a URL through would load it and draw a heatmap. Each case must be refused
(:class:`SourceNotAllowedError`) or fail to load (:class:`ImageLoadError`: cut off at the
size or time cap, not an image), as its row says. An audit hook records every file opened
and every socket connected while the cases run: nothing outside the roots is opened, and
nothing but the one allowed server is connected to.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import shutil
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient, models

import qdrant_xai.images.policy as sources_module
from qdrant_xai import (
    ClipEncoder,
    Explainer,
    ImageLoadError,
    QdrantXaiError,
    SourceNotAllowedError,
)
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.images.policy import ImageSourcePolicy

pytestmark = pytest.mark.hardening

COLLECTION = "hostile"
TEXT = "a red circle"
LIMIT = 200_000  # bytes: every policy's cap
HUGE_STREAM = 64 * 1024 * 1024  # what /huge would send if nobody stopped reading
DRIP_SECONDS = 0.05  # between bytes of /drip
TIMEOUT = 1.0  # total seconds per fetch
READ_TIMEOUT = 0.5


# -- audit: files opened and sockets connected --------------------------------------------


@dataclass
class _Audit:
    active: bool = False
    opened: list[str] = field(default_factory=list)
    connected: list[tuple[Any, ...]] = field(default_factory=list)


AUDIT = _Audit()


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not AUDIT.active:
        return
    if event == "open" and args and isinstance(args[0], str | bytes):
        path = args[0]
        AUDIT.opened.append(os.fsdecode(path))
    elif event == "socket.connect" and len(args) > 1:
        AUDIT.connected.append(tuple(args[1]) if isinstance(args[1], tuple) else (args[1],))


sys.addaudithook(_hook)  # audit hooks cannot be removed; this one idles unless active


# -- local HTTP servers on loopback ----------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, png: bytes) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        super().__init__((host, 0), _Handler)
        self.png = png
        self.requests: list[str] = []
        self.sent = 0  # bytes of /huge written before the client hung up
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        return

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        with self.server.lock:
            self.server.requests.append(parts.path)
        route = getattr(self, "_" + parts.path.strip("/").replace("-", "_").replace(".", "_"), None)
        if route is None:
            self._reply(404, "text/plain", b"no such route")
            return
        # the client may stop reading: what the caps are for
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(urllib.parse.parse_qs(parts.query))

    def _reply(self, status: int, media: str, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _ok_png(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "image/png", self.server.png)

    def _redirect(self, query: dict[str, list[str]]) -> None:
        self.send_response(302)
        self.send_header("Location", query["to"][0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _loop(self, _query: dict[str, list[str]]) -> None:
        self._redirect({"to": ["/loop"]})

    def _html(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "text/html", b"<html><script>alert(1)</script></html>")

    def _json(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "application/json", b'{"image": "no"}')

    def _fake_png(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "image/png", b"<html>not a png</html>" * 10)

    def _gzip(self, _query: dict[str, list[str]]) -> None:
        self._reply(200, "image/png", b"\x1f\x8b" + b"\0" * 64, Content_Encoding="gzip")

    def _huge_declared(self, _query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(10**12))
        self.end_headers()
        self.wfile.write(self.server.png[:1024])

    def _huge(self, _query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Connection", "close")  # no length: the body ends when we close
        self.end_headers()
        block = self.server.png + b"\0" * (65536 - len(self.server.png) % 65536)
        try:
            while self.server.sent < HUGE_STREAM:
                self.wfile.write(block)
                self.server.sent += len(block)
        finally:
            self.close_connection = True

    def _drip(self, _query: dict[str, list[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.server.png)))
        self.end_headers()
        for byte in self.server.png:  # one byte at a time, each read well within its timeout
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(DRIP_SECONDS)

    def _stall(self, _query: dict[str, list[str]]) -> None:
        time.sleep(3 * READ_TIMEOUT)  # no status line at all
        self._reply(200, "image/png", self.server.png)


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
def servers(folders: dict[str, Path]) -> Iterator[dict[str, _Server]]:
    png = (folders["root"] / "ok.png").read_bytes()
    running = {
        name: _Server(host, png)
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


# -- the cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile source: what must come out (``refused``, ``load`` for ImageLoadError,
    ``ok`` for the controls that show the setup can succeed)."""

    name: str
    source: str
    policy: str
    expect: str


def _resolver() -> Callable[[str, int], Sequence[str]]:
    """Test names: one server name, and names that resolve where they must not lead."""
    names = {
        "cdn.test": ["127.0.0.1"],
        "other.test": ["127.0.0.2"],
        "internal.test": ["10.1.2.3"],
        "metadata.test": ["169.254.169.254"],
        "mapped.test": ["::ffff:127.0.0.2"],
        "rebind.test": ["93.184.216.34", "127.0.0.1"],
        "localhost": ["127.0.0.1", "::1"],
    }

    def resolve(host: str, port: int) -> Sequence[str]:
        if host in names:
            return names[host]
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)  # numeric forms only
        return [str(info[4][0]) for info in infos]

    return resolve


def _policies(root: Path) -> dict[str, ImageSourcePolicy]:
    timing = {"timeout": TIMEOUT, "read_timeout": READ_TIMEOUT, "connect_timeout": READ_TIMEOUT}
    web = {"allow_urls": True, "url_schemes": ["http", "https"], "resolver": _resolver()}
    return {
        # local files under the root; no URLs
        "files": ImageSourcePolicy([root], max_bytes=LIMIT, **timing),
        # any host name, but no loopback, private or link-local address
        "any host": ImageSourcePolicy(allowed_hosts=["*"], max_bytes=LIMIT, **web, **timing),
        # the loopback IP allowed as a host name: the address check still refuses it
        "127.0.0.1 as host": ImageSourcePolicy(
            allowed_hosts=["127.0.0.1"], max_bytes=LIMIT, **web, **timing
        ),
        # https only
        "https only": ImageSourcePolicy(
            allow_urls=True, allowed_hosts=["*"], max_bytes=LIMIT, **timing
        ),
        # the test server, explicitly: host cdn.test, address 127.0.0.1 allowed
        "server": ImageSourcePolicy(
            allowed_hosts=["cdn.test"],
            allowed_networks=["127.0.0.1/32"],
            max_bytes=LIMIT,
            **web,
            **timing,
        ),
        # any host, only 127.0.0.1 among the non-global addresses: redirects pass the host
        # allow-list and must be stopped by the address check
        "server, any host": ImageSourcePolicy(
            allowed_hosts=["*"],
            allowed_networks=["127.0.0.1/32"],
            max_bytes=LIMIT,
            **web,
            **timing,
        ),
    }


def _cases(root: Path, outside: Path, servers: dict[str, _Server]) -> list[Case]:
    p1, p2, p6 = servers["main"].port, servers["second"].port, servers["v6"].port
    cdn = f"http://cdn.test:{p1}"

    def via(target: str) -> str:
        return f"{cdn}/redirect?to={urllib.parse.quote(target, safe='')}"

    huge_uri = "data:image/png;base64," + base64.b64encode(b"\0" * (3 * LIMIT)).decode()
    files = [
        ("relative traversal", "../../../../../../etc/passwd"),
        ("absolute path outside", "/etc/passwd"),
        ("image outside the root", str(outside / "secret.png")),
        ("root/../outside", f"{root}/../outside/secret.png"),
        ("symlink escape", f"{root}/link.png"),
        ("symlinked folder escape", f"{root}/linkdir/secret.png"),
        ("symlink to /dev/zero", f"{root}/zero.png"),
        ("FIFO in the root", f"{root}/fifo.png"),
        ("folder named .png", f"{root}/dir.png"),
        ("NUL byte", f"{root}/ok.png\x00/../../etc/passwd"),
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("file://localhost/etc/passwd", "file://localhost/etc/passwd"),
        ("file: percent-encoded name", "file:///etc/%70%61sswd"),
        ("file: percent-encoded ..", f"file://{root}/%2e%2e/outside/secret.png"),
        ("file: percent-encoded slash", f"file://{root}/..%2foutside%2fsecret.png"),
        ("file: symlink", f"file://{root}/link.png"),
        ("file: one slash", "file:/etc/passwd"),
        ("FILE: upper case", "FILE:///etc/passwd"),
        ("file: remote host", "file://evil.example/share/x.png"),
        ("file: credentials", "file://user:pw@localhost/etc/passwd"),
        ("tilde", "~/../../etc/passwd"),
        ("ftp scheme", f"ftp://127.0.0.1:{p1}/ok.png"),
        ("data: not an image", "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="),
        ("URL while URLs are off", f"http://127.0.0.1:{p1}/ok.png"),
    ]
    out = [Case(name, source, "files", "refused") for name, source in files]
    out += [
        Case("huge sparse file in the root", f"{root}/huge.png", "files", "load"),
        Case("huge data: URI", huge_uri, "files", "load"),
    ]
    addresses = [
        ("loopback IPv4", f"http://127.0.0.1:{p1}/ok.png"),
        ("loopback 127.0.0.2", f"http://127.0.0.2:{p2}/ok.png"),
        ("localhost", f"http://localhost:{p1}/ok.png"),
        ("loopback IPv6", f"http://[::1]:{p6}/ok.png"),
        ("IPv4-mapped IPv6", f"http://[::ffff:127.0.0.1]:{p1}/ok.png"),
        ("IPv4-mapped IPv6, hex", f"http://[::ffff:7f00:1]:{p1}/ok.png"),
        ("NAT64 of loopback", f"http://[64:ff9b::7f00:1]:{p1}/ok.png"),
        ("6to4 of loopback", f"http://[2002:7f00:1::1]:{p1}/ok.png"),
        ("decimal IPv4", f"http://2130706433:{p1}/ok.png"),
        ("hex IPv4", f"http://0x7f000001:{p1}/ok.png"),
        ("short IPv4", f"http://127.1:{p1}/ok.png"),
        ("unspecified 0.0.0.0", f"http://0.0.0.0:{p1}/ok.png"),
        ("cloud metadata", "http://169.254.169.254/latest/meta-data/"),
        ("private 10/8", "http://10.0.0.1/x.png"),
        ("private 172.16/12", "http://172.16.0.1/x.png"),
        ("private 192.168/16", "http://192.168.0.1/x.png"),
        ("carrier-grade NAT", "http://100.64.0.1/x.png"),
        ("IPv6 link-local", "http://[fe80::1]/x.png"),
        ("IPv6 unique local", "http://[fd00::1]/x.png"),
        ("name resolving to private", "http://internal.test/x.png"),
        ("name resolving to global and loopback", f"http://rebind.test:{p1}/ok.png"),
        ("credentials in the URL", f"http://user:pw@127.0.0.1:{p1}/ok.png"),
    ]
    out += [Case(name, source, "any host", "refused") for name, source in addresses]
    out += [
        Case(
            "loopback allowed as host name",
            f"http://127.0.0.1:{p1}/ok.png",
            "127.0.0.1 as host",
            "refused",
        ),
        Case(
            "http under an https-only policy",
            f"http://example.org:{p1}/ok.png",
            "https only",
            "refused",
        ),
        Case("redirect to loopback IP", via(f"http://127.0.0.1:{p1}/ok.png"), "server", "refused"),
        Case("redirect to localhost", via(f"http://localhost:{p1}/ok.png"), "server", "refused"),
        Case("redirect to file:", via("file:///etc/passwd"), "server", "refused"),
        Case("redirect to metadata", via("http://169.254.169.254/"), "server", "refused"),
        Case(
            "redirect to 127.0.0.2 (any host)",
            via(f"http://127.0.0.2:{p2}/ok.png"),
            "server, any host",
            "refused",
        ),
        Case(
            "redirect to ::1 (any host)",
            via(f"http://[::1]:{p6}/ok.png"),
            "server, any host",
            "refused",
        ),
        Case(
            "redirect to a name on 127.0.0.2",
            via(f"http://other.test:{p2}/ok.png"),
            "server, any host",
            "refused",
        ),
        Case(
            "redirect to IPv4-mapped 127.0.0.2",
            via(f"http://mapped.test:{p2}/ok.png"),
            "server, any host",
            "refused",
        ),
        Case(
            "redirect to metadata (any host)",
            via("http://metadata.test/"),
            "server, any host",
            "refused",
        ),
        Case("redirect loop", f"{cdn}/loop", "server", "load"),
        Case("huge response, no length", f"{cdn}/huge", "server", "load"),
        Case("huge Content-Length", f"{cdn}/huge-declared", "server", "load"),
        Case("drip-feed response", f"{cdn}/drip", "server", "load"),
        Case("no answer", f"{cdn}/stall", "server", "load"),
        Case("text/html", f"{cdn}/html", "server", "load"),
        Case("application/json", f"{cdn}/json", "server", "load"),
        Case("image/png that is HTML", f"{cdn}/fake.png", "server", "load"),
        Case("gzip-encoded body", f"{cdn}/gzip", "server", "load"),
    ]
    return out


def _controls(root: Path, servers: dict[str, _Server]) -> list[Case]:
    cdn = f"http://cdn.test:{servers['main'].port}"
    return [
        Case("control: file in the root", str(root / "ok.png"), "files", "ok"),
        Case("control: file:// in the root", f"file://{root}/ok.png", "files", "ok"),
        Case("control: the allowed server", f"{cdn}/ok.png", "server", "ok"),
        Case("control: allowed redirect", f"{cdn}/redirect?to=%2Fok.png", "server", "ok"),
    ]


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
    return explainer.explain(TEXT, hits, hit_kind="image")


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
    read_at_most = sources_module._read_at_most

    def counting_iter_raw(self: httpx.Response, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in iter_raw(self, *args, **kwargs):
            reads[0] += len(chunk)
            yield chunk

    def counting_read(*args: Any, **kwargs: Any) -> bytes:
        data = read_at_most(*args, **kwargs)
        reads[0] += len(data)
        return data

    monkeypatch.setattr(httpx.Response, "iter_raw", counting_iter_raw)
    monkeypatch.setattr(sources_module, "_read_at_most", counting_read)
    return reads


def _inside(path: str, roots: Sequence[Path]) -> bool:
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(r.resolve()) for r in roots)


def test_hostile_payload_sources_are_refused_or_cut_off(
    tiny_encoder: ClipEncoder,
    stored: QdrantClient,
    folders: dict[str, Path],
    servers: dict[str, _Server],
    counted_reads: list[int],
    figures: Any,
) -> None:
    root, outside = folders["root"], folders["outside"]
    policies = _policies(root)
    cases = _controls(root, servers) + _cases(root, outside, servers)
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
    from langchain_qdrant_xai._images import load_query_image
    from qdrant_xai_mcp.server import _decode_image

    from qdrant_xai import ImageLimits

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
        "mcp": lambda text: _decode_image(text, limits, what="image_base64"),
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
    # without a policy (own collections, the CLI's default) the local file is still drawn
    trusting = Explainer(tiny_encoder, client, collection_name=COLLECTION).explain(TEXT, hits)
    assert all(e.overlay().size for e in trusting)
    figures.add("sources", "planted report images refused (overlay and HTML report)", 1)
