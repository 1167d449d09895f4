"""Shared parts of the model-mismatch tests (``test_model_mismatch_*.py``).

Three tiny CLIPs: ``A`` (the session's ``tiny_encoder``), ``B`` (same architecture and
dimension, other weights; fixture ``other_encoder``) and ``W`` (a 24-d joint space; fixture
``wide_encoder``), and collections written by them (fixture ``mismatch_world``).
:class:`CountingDecomposition`, the decomposition heatmap counting how often it is drawn, is
selectable by name (the CLI's ``--method``) while a test uses the fixture
``counting_method``; :func:`attempt` runs one mismatch and says what went wrong. The
hardening ``conftest.py`` serves the fixtures defined here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import (
    ClipEncoder,
    Indexer,
    ModelMismatchError,
    PayloadKeys,
    SchemaMismatchError,
    Searcher,
)
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.explain import HEATMAP_METHODS
from qdrant_xai.explain.base import ImageEvidence, register_heatmap_method
from qdrant_xai.explain.heatmaps.decomposition import DecompositionHeatmap
from qdrant_xai.storage.layouts import layout_named
from qdrant_xai.testing import build_tiny_clip, write_tutorial_collection

CAUGHT = (ModelMismatchError, SchemaMismatchError)
COUNTING = "hardening-counting"
TEXT = "a red circle"


class CountingDecomposition(DecompositionHeatmap):
    """The decomposition heatmap, counting how often it is drawn."""

    name = COUNTING
    drawn = 0

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        type(self).drawn += 1
        return super().heatmaps(encoder, evidence, queries)


@pytest.fixture(scope="module")
def counting_method() -> Iterator[None]:
    """Selectable by name (the CLI's --method) for the module that uses it only."""
    register_heatmap_method(CountingDecomposition)
    yield
    HEATMAP_METHODS.pop(COUNTING, None)


@pytest.fixture(scope="module")
def mismatch_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mismatch-scenes")
    write_scene_folder(folder, 6, seed=21, size=64)
    return folder


@pytest.fixture(scope="module")
def mismatch_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model folders of ``B`` and ``W``."""
    root = tmp_path_factory.mktemp("mismatch-models")
    return {
        "B": build_tiny_clip(root / "B", seed=5),
        "W": build_tiny_clip(root / "W", projection_dim=24, seed=6),
    }


@pytest.fixture(scope="module")
def other_encoder(mismatch_models: dict[str, Path]) -> ClipEncoder:
    """Same dimension as ``tiny_encoder``, other weights."""
    return ClipEncoder.from_pretrained(mismatch_models["B"])


@pytest.fixture(scope="module")
def wide_encoder(mismatch_models: dict[str, Path]) -> ClipEncoder:
    """Another dimension (24)."""
    return ClipEncoder.from_pretrained(mismatch_models["W"])


def _captions(folder: Path) -> dict[str, str]:
    lines = (folder / "captions.csv").read_text(encoding="utf-8").splitlines()[1:]
    out = {}
    for line in lines:
        name, caption = line.split(",", 1)
        out[str(folder / name)] = caption.strip('"')
    return out


def _tutorial(client: QdrantClient, name: str, encoder: ClipEncoder, folder: Path) -> None:
    """Qdrant's multimodal tutorial layout written with ``encoder``: no fingerprints."""
    write_tutorial_collection(client, name, encoder, _captions(folder))


def _langchain(client: QdrantClient, name: str, encoder: ClipEncoder, folder: Path) -> None:
    """langchain-qdrant's layout written with ``encoder``: one unnamed vector."""
    captions = _captions(folder)
    client.create_collection(
        name, vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
    )
    paths = list(captions)
    images = encoder.embed_images([Path(p) for p in paths])
    texts = encoder.embed_texts(list(captions.values()))
    client.upsert(
        name,
        points=[
            models.PointStruct(
                id=i,
                vector=images[i].tolist(),
                payload={"page_content": Path(p).name, "metadata": {"source": p}},
            )
            for i, p in enumerate(paths)
        ]
        + [
            models.PointStruct(
                id=100 + i,
                vector=texts[i].tolist(),
                payload={"page_content": caption, "metadata": {}},
            )
            for i, caption in enumerate(captions.values())
        ],
    )


@pytest.fixture(scope="module")
def mismatch_world(
    tiny_encoder: ClipEncoder,
    other_encoder: ClipEncoder,
    wide_encoder: ClipEncoder,
    mismatch_scenes: Path,
) -> Iterator[QdrantClient]:
    """An in-memory client with collections: qdrant-xai ones by A (``by_a`` intact,
    ``forged``, ``unsigned``), foreign ones by B and W (``tutorial_by_b``, ``tutorial_by_w``,
    ``langchain_by_b``)."""
    client = QdrantClient(":memory:")
    for name in ("by_a", "forged", "unsigned"):
        Indexer(client, tiny_encoder, collection_name=name).index_folder(
            mismatch_scenes, captions=mismatch_scenes / "captions.csv", progress=False
        )
    # a payload fingerprint claiming model B over features A computed
    client.set_payload(
        "forged",
        payload={PayloadKeys.FINGERPRINT: other_encoder.fingerprint.key},
        points=models.Filter(),
    )
    # fingerprints removed: only the features (image points) or the vectors (text points)
    # still say which model wrote them
    client.delete_payload("unsigned", keys=[PayloadKeys.FINGERPRINT], points=models.Filter())
    _tutorial(client, "tutorial_by_b", other_encoder, mismatch_scenes)
    _tutorial(client, "tutorial_by_w", wide_encoder, mismatch_scenes)
    _langchain(client, "langchain_by_b", other_encoder, mismatch_scenes)
    yield client
    client.close()


def search_hits(
    client: QdrantClient,
    encoder: ClipEncoder,
    collection: str,
    query: Any,
    target: str,
    layout: str = "qdrant-xai",
) -> list[models.ScoredPoint]:
    """The top 3 ``target`` hits (``"image"``, ``"text"``) of ``query``, searched with
    ``encoder``; at least one."""
    searcher = Searcher(client, encoder, collection_name=collection, layout=layout)
    hits = searcher.search(query, hit_kind=target, limit=12)  # type: ignore[arg-type]
    if target == "text" and layout == "langchain":  # an image point's page_content is its
        # file name, not a text it was embedded from
        hits = [h for h in hits if layout_named(layout).image_source(h.payload or {}) is None]
    hits = hits[:3]
    assert hits
    return hits


def attempt(figures: Any, kind: str, run: Callable[[], object]) -> str:
    """Runs one mismatch; returns what went wrong ('' when caught before drawing)."""
    CountingDecomposition.drawn = 0
    figures.add("mismatch", "mismatch attempts", 1)
    try:
        run()
    except CAUGHT:
        if CountingDecomposition.drawn:
            return f"{kind}: caught only after {CountingDecomposition.drawn} heatmap calls"
        figures.add("mismatch", "caught before any heatmap", 1)
        return ""
    except Exception as exc:  # an untyped error is a failure too
        return f"{kind}: {type(exc).__name__}: {exc}"
    return f"{kind}: not caught ({CountingDecomposition.drawn} heatmap calls)"
