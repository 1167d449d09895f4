"""Model mismatch through the command line, the LangChain retriever and the MCP backend.

The same mismatches as ``test_model_mismatch_python_api.py`` (:mod:`tests.hardening._mismatch`
holds the models and collections), through the ways users reach the library: ``qdrant-xai
explain`` and ``search --explain`` with another model must exit with status 1 and a one-line
error; the retriever and the MCP tools must raise :class:`ModelMismatchError` (or
:class:`SchemaMismatchError` for a dimension). In every case no heatmap may have been drawn;
with the right model the same calls draw.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_qdrant_xai import QdrantXaiRetriever
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer, PayloadKeys
from qdrant_xai.cli import main
from qdrant_xai.explain.heatmaps.decomposition import DecompositionHeatmap
from tests.hardening._mismatch import (
    COUNTING,
    TEXT,
    CountingDecomposition,
    attempt,
    search_hits,
)

pytestmark = [pytest.mark.hardening, pytest.mark.usefixtures("counting_method")]


@pytest.fixture(scope="module")
def stored(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder: ClipEncoder, mismatch_scenes: Path
) -> tuple[Path, str, str]:
    """An embedded on-disk collection by A (closed again, for the CLI): path, one image
    point id, one text point id."""
    path = tmp_path_factory.mktemp("mismatch-cli") / "qdrant"
    client = QdrantClient(path=str(path))
    Indexer(client, tiny_encoder, collection_name="cli").index_folder(
        mismatch_scenes, captions=mismatch_scenes / "captions.csv", progress=False
    )
    points, _ = client.scroll("cli", limit=100, with_payload=[PayloadKeys.KIND])
    client.close()
    kinds = {str(p.id): (p.payload or {}).get(PayloadKeys.KIND) for p in points}
    image_id = next(i for i, k in kinds.items() if k == "image")
    text_id = next(i for i, k in kinds.items() if k == "text")
    return path, image_id, text_id


def test_cli_refuses_another_model_with_a_message_and_exit_status(
    stored: tuple[Path, str, str],
    mismatch_models: dict[str, Path],
    mismatch_scenes: Path,
    figures: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, image_id, text_id = stored
    image = str(mismatch_scenes / "scene_0002.png")
    b, w = str(mismatch_models["B"]), str(mismatch_models["W"])
    explain_image = ["explain", image_id, "--text", TEXT]
    explain_text = ["explain", text_id, "--image", image]
    search_image = ["search", "--image", image, "--explain"]
    cases = {
        "explain an image point with another model": [*explain_image, "--model", b],
        "explain a text point with another model": [*explain_text, "--model", b],
        "explain an image point with another dimension": [*explain_image, "--model", w],
        "explain a text point with another dimension": [*explain_text, "--model", w],
        "search --explain with another model": ["search", TEXT, "--explain", "--model", b],
        "search --explain with another dimension": [*search_image, "--model", w],
    }
    common = ["--path", str(path), "--collection", "cli", "--method", COUNTING]
    failures = []
    for kind, args in cases.items():
        CountingDecomposition.drawn = 0
        status = main([*args, *common])
        err = capsys.readouterr().err  # (each hit's reason is also on stdout)
        ok = (
            status == 1
            and err.startswith("error: ")
            and "Traceback" not in err
            and ("another model" in err or "dimension" in err)
            and CountingDecomposition.drawn == 0
        )
        if ok:
            figures.add("mismatch", "CLI: refused with exit status 1 before drawing", 1)
        else:
            failures.append(f"{kind}: exit {status}, drawn {CountingDecomposition.drawn}: {err}")
    figures.add("mismatch", "CLI kinds tried", len(cases))
    # the right model explains the same point (exit 0, one heatmap drawn)
    CountingDecomposition.drawn = 0
    assert main(["explain", image_id, "--text", TEXT, *common]) == 0
    capsys.readouterr()
    assert CountingDecomposition.drawn == 1
    assert not failures, "\n".join(failures)


def test_langchain_retriever_refuses_another_model_before_drawing(
    mismatch_world: QdrantClient,
    tiny_encoder: ClipEncoder,
    other_encoder: ClipEncoder,
    wide_encoder: ClipEncoder,
    mismatch_scenes: Path,
    figures: Any,
) -> None:
    other, wide = other_encoder, wide_encoder

    def retriever(encoder: ClipEncoder, collection: str, **kw: Any) -> QdrantXaiRetriever:
        return QdrantXaiRetriever(
            client=mismatch_world,
            encoder=encoder,
            collection_name=collection,
            heatmap_method=COUNTING,
            image_roots=[mismatch_scenes],
            errors="raise",  # all-or-nothing; per-hit reports: tests/integration/test_langchain_*
            **kw,
        )

    image = str(mismatch_scenes / "scene_0002.png")
    ids = [hit.id for hit in search_hits(mismatch_world, tiny_encoder, "by_a", TEXT, "image")]
    cases: dict[str, Callable[[], object]] = {
        "retriever: points by another model": lambda: retriever(other, "by_a").invoke(TEXT),
        "retriever: points by another dimension": lambda: retriever(wide, "by_a").invoke(TEXT),
        "retriever, image query: text points by another model": lambda: retriever(
            other, "by_a", hit_kind="text"
        ).invoke(image),
        "retriever: unsigned text points by another model": lambda: retriever(
            other, "unsigned", hit_kind="text"
        ).invoke(image),
        "explain_points: points by another model": lambda: retriever(other, "by_a").explain_points(
            ids, TEXT
        ),
    }
    failures = [f for kind, run in cases.items() if (f := attempt(figures, kind, run))]
    figures.add("mismatch", "LangChain kinds tried", len(cases))
    assert not failures, "\n".join(failures)


def test_mcp_backend_refuses_another_model_before_drawing(
    mismatch_world: QdrantClient,
    tiny_encoder: ClipEncoder,
    other_encoder: ClipEncoder,
    wide_encoder: ClipEncoder,
    mismatch_scenes: Path,
    figures: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("mcp.server.mcpserver", reason="needs the mcp extra (SDK 2.x)")
    from qdrant_xai_mcp import ServerSettings
    from qdrant_xai_mcp.server import XaiBackend

    # the tools use the default method: count the decomposition itself
    drawing = DecompositionHeatmap.heatmaps

    def counted(self: Any, *args: Any) -> np.ndarray:
        CountingDecomposition.drawn += 1
        return drawing(self, *args)

    monkeypatch.setattr(DecompositionHeatmap, "heatmaps", counted)

    other, wide = other_encoder, wide_encoder

    def backend(encoder: ClipEncoder, collection: str = "by_a") -> XaiBackend:
        settings = ServerSettings(collection_name=collection, image_roots=(mismatch_scenes,))
        return XaiBackend(settings, client=mismatch_world, encoder=encoder)

    image = str(mismatch_scenes / "scene_0002.png")
    point = search_hits(mismatch_world, tiny_encoder, "by_a", TEXT, "image")[0].id
    cases: dict[str, Callable[[], object]] = {
        "MCP search_images: points by another model": lambda: backend(other).search_images(TEXT),
        "MCP search_texts: points by another model": lambda: backend(other).search_texts(
            image_path=image
        ),
        "MCP search_images: another dimension": lambda: backend(wide).search_images(TEXT),
        "MCP explain_hit: a point by another model": lambda: backend(other).explain_hit(
            point, query_text=TEXT, heatmap_method=COUNTING
        ),
        "MCP search_texts: unsigned text points by another model": lambda: backend(
            other, "unsigned"
        ).search_texts(image_path=image),
    }
    failures = [f for kind, run in cases.items() if (f := attempt(figures, kind, run))]
    figures.add("mismatch", "MCP kinds tried", len(cases))
    CountingDecomposition.drawn = 0
    backend(tiny_encoder).search_images(TEXT)  # the right model draws
    assert CountingDecomposition.drawn == 1
    assert not failures, "\n".join(failures)
