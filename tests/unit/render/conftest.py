"""Photos of every shape (12 MP, 1600x90 strips...) indexed into embedded Qdrant on disk by
the bundled shapes model, and their explanations with grounding."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer, Searcher
from qdrant_xai.explain import Explainer, Explanation
from tests.benchmarks.rendering import LARGE_SIZES
from tests.unit.render._photos import (
    HOSTILE_ATTRIBUTE,
    HOSTILE_SCRIPT,
    write_captions,
    write_photos,
)


def explain(
    client: QdrantClient, encoder: ClipEncoder, name: str, query: str, limit: int
) -> list[Explanation]:
    hits = Searcher(client, encoder, collection_name=name).search_images(query, limit=limit)
    explainer = Explainer(encoder, client, collection_name=name, grounding=True)
    return explainer.explain(query, hits)


@pytest.fixture(scope="module")
def strips(
    tmp_path_factory: pytest.TempPathFactory, shapes_encoder: ClipEncoder
) -> Iterator[tuple[QdrantClient, list[Explanation]]]:
    """A 1600x90 and a 90x1600 photo and a 640x480 one, explained for "a red circle"."""
    root = tmp_path_factory.mktemp("strips")
    paths = write_photos(root / "photos", [(1600, 90), (90, 1600), (640, 480)], seed=1)
    captions = write_captions(
        root / "captions.csv",
        [
            (paths[0].name, f"a red circle {HOSTILE_SCRIPT}"),
            (paths[1].name, f"a red circle {HOSTILE_ATTRIBUTE}"),
            (paths[2].name, "a red circle on noise"),
        ],
    )
    client = QdrantClient(path=str(root / "qdrant"))
    summary = Indexer(client, shapes_encoder, collection_name="strips").index_folder(
        root / "photos", captions=captions, progress=False
    )
    assert summary.failed == []
    yield client, explain(client, shapes_encoder, "strips", "a red circle", 3)
    client.close()


@pytest.fixture(scope="module")
def large(
    tmp_path_factory: pytest.TempPathFactory, shapes_encoder: ClipEncoder
) -> Iterator[list[Explanation]]:
    """The ten :data:`LARGE_SIZES` photos explained for "a red circle", top 10."""
    root = tmp_path_factory.mktemp("large")
    write_photos(root / "photos", LARGE_SIZES, seed=2)
    client = QdrantClient(path=str(root / "qdrant"))
    summary = Indexer(client, shapes_encoder, collection_name="large").index_folder(
        root / "photos", progress=False
    )
    assert summary.failed == [] and summary.indexed_images == len(LARGE_SIZES)
    yield explain(client, shapes_encoder, "large", "a red circle", 10)
    client.close()
