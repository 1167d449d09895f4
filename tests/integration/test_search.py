"""Searching and scoring given points, sync and async, and explaining from records a
caller fetched itself (what the adapters build on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient

from qdrant_xai import ClipEncoder, Explainer, Indexer, Searcher
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.errors import (
    CollectionError,
    DimensionMismatchError,
    FeaturesMissingError,
    ModelMismatchError,
    PointIdError,
    PointNotFoundError,
    SchemaMismatchError,
)
from qdrant_xai.search import AsyncSearcher

QUERY = "a red circle"


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    write_scene_folder(folder, 8, seed=11)
    return folder


def _index(client: QdrantClient, encoder: ClipEncoder, name: str, folder: Path) -> None:
    Indexer(client, encoder, collection_name=name).index_folder(
        folder, captions=folder / "captions.csv", progress=False
    )


def test_score_points_gives_the_scores_a_search_gives_in_the_asked_order(
    client: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    _index(client, shapes_encoder, collection_name, scene_dir)
    searcher = Searcher(client, shapes_encoder, collection_name=collection_name)
    images = searcher.search_images(QUERY, limit=4)
    texts = searcher.search_texts(QUERY, limit=2)
    asked = [texts[0].id, images[2].id, images[0].id, texts[1].id]
    scored = searcher.score_points(QUERY, [str(i) for i in asked])
    assert [p.id for p in scored] == asked
    by_search = {p.id: p.score for p in [*images, *texts]}
    for point in scored:
        assert point.score == pytest.approx(by_search[point.id], abs=1e-6)
    # every point scored as an image: the text points have no image vector
    with pytest.raises(CollectionError, match="no 'image' vector"):
        searcher.score_points(QUERY, [texts[0].id], hit_kind="image")


def test_score_points_refuses_unknown_and_malformed_ids(
    client: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    _index(client, shapes_encoder, collection_name, scene_dir)
    searcher = Searcher(client, shapes_encoder, collection_name=collection_name)
    with pytest.raises(PointNotFoundError, match="no point 12345 in collection") as info:
        searcher.score_points(QUERY, [12345])
    assert info.value.ids == [12345]
    with pytest.raises(PointIdError):
        searcher.score_points(QUERY, ["not an id"])


def test_explaining_records_fetched_by_the_caller_equals_the_explainers_own_fetch(
    client: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    _index(client, shapes_encoder, collection_name, scene_dir)
    hits = Searcher(client, shapes_encoder, collection_name=collection_name).search_images(
        QUERY, limit=3
    )
    explainer = Explainer(shapes_encoder, client, collection_name=collection_name)
    request = explainer.fetch_request(hits)
    assert request.collection_name == collection_name
    assert list(request.ids) == [h.id for h in hits]
    assert "xai_features" in request.with_payload
    records = client.retrieve(request.collection_name, **request.kwargs())
    offline = Explainer(shapes_encoder, None, collection_name=collection_name)
    given = offline.explain(QUERY, hits, records=records)
    fetched = explainer.explain(QUERY, hits)
    assert [e.id for e in given] == [h.id for h in hits]
    for a, b in zip(given, fetched, strict=True):
        assert a.score == b.score
        np.testing.assert_allclose(a.heatmap, b.heatmap)
    # without the records an offline explainer has no stored features to draw from
    with pytest.raises(FeaturesMissingError, match="image_roots"):
        offline.explain(QUERY, hits, errors="raise")


async def test_async_searcher_matches_the_sync_one(
    tmp_path: Path, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    path = str(tmp_path / "qdrant")
    sync = QdrantClient(path=path)
    try:
        _index(sync, shapes_encoder, "scenes", scene_dir)
        searcher = Searcher(sync, shapes_encoder, collection_name="scenes")
        expected = searcher.search_images(QUERY, limit=3)
        expected_scored = searcher.score_points(QUERY, [expected[1].id])
    finally:
        sync.close()
    client = AsyncQdrantClient(path=path)
    try:
        searcher_async = AsyncSearcher(client, shapes_encoder, collection_name="scenes")
        hits = await searcher_async.search_images(QUERY, limit=3)
        scored = await searcher_async.score_points(QUERY, [expected[1].id])
        with pytest.raises(PointNotFoundError):
            await searcher_async.score_points(QUERY, [999])
    finally:
        await client.close()
    assert [h.id for h in hits] == [h.id for h in expected]
    assert [h.score for h in hits] == pytest.approx([h.score for h in expected], abs=1e-6)
    assert scored[0].score == pytest.approx(expected_scored[0].score, abs=1e-6)


def test_a_model_of_another_dimension_is_refused_as_both_kinds_of_mismatch(
    client: QdrantClient,
    collection_name: str,
    shapes_encoder: ClipEncoder,
    tiny_encoder: ClipEncoder,
    scene_dir: Path,
) -> None:
    assert shapes_encoder.dim != tiny_encoder.dim
    _index(client, shapes_encoder, collection_name, scene_dir)
    searcher = Searcher(client, tiny_encoder, collection_name=collection_name)
    with pytest.raises(DimensionMismatchError, match="dimension") as info:
        searcher.search_images(QUERY)
    assert isinstance(info.value, SchemaMismatchError)
    assert isinstance(info.value, ModelMismatchError)
