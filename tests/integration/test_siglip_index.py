"""A SigLIP checkpoint folder the project has never seen: index, search and explain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Explainer, Indexer, Searcher
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.errors import UnsupportedMethodError
from qdrant_xai.testing import build_tiny_siglip

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def siglip_encoder(tmp_path_factory: pytest.TempPathFactory) -> ClipEncoder:
    return ClipEncoder.from_pretrained(build_tiny_siglip(tmp_path_factory.mktemp("siglip")))


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    write_scene_folder(folder, 8, seed=5, size=64)
    return folder


def test_siglip_indexes_searches_and_explains(
    client: QdrantClient, collection_name: str, siglip_encoder: ClipEncoder, scene_dir: Path
) -> None:
    summary = Indexer(client, siglip_encoder, collection_name=collection_name).index_folder(
        scene_dir, captions=scene_dir / "captions.csv", progress=False
    )
    assert summary.failed == []
    searcher = Searcher(client, siglip_encoder, collection_name=collection_name)
    explainer = Explainer(
        siglip_encoder, client, collection_name=collection_name, image_roots=[scene_dir]
    )
    assert explainer.word_method.name == "tokens"  # SigLIP's default: its text tower is not causal

    query = "a red circle and a blue square"
    hits = searcher.search_images(query, limit=4)
    assert len(hits) == 4
    text = siglip_encoder.embed_texts([query])[0]
    for hit, e in zip(hits, explainer.explain(query, hits, errors="raise"), strict=True):
        assert e.ok and e.heatmap_method == "decomposition" and e.score == hit.score
        assert e.heatmap is not None and e.heatmap.shape == siglip_encoder.grid
        image = siglip_encoder.encode_images([Path(e.payload["source"])])[0]
        assert hit.score == pytest.approx(float(image.embedding @ text), abs=2e-3)
        np.testing.assert_allclose(e.heatmap, image.contributions @ text, atol=2e-3)
        assert [w.word for w in e.words] == query.split()

    image_query = scene_dir / "scene_0003.png"
    text_hits = searcher.search_texts(image_query, limit=3)
    for e in explainer.explain(image_query, text_hits, errors="raise"):
        assert e.hit_kind == "text" and e.word_method == "tokens"
        assert e.heatmap is not None and e.heatmap.shape == siglip_encoder.grid
        assert all(e.text[w.span[0] : w.span[1]] == w.word for w in e.words)

    with pytest.raises(UnsupportedMethodError, match="causal"):
        explainer.explain(query, hits[:1], word_method="prefix", errors="raise")
    # a method the family cannot run is refused when the explainer is made, not per hit
    with pytest.raises(UnsupportedMethodError, match="causal"):
        Explainer(siglip_encoder, client, collection_name=collection_name, word_method="prefix")
    with pytest.raises(UnsupportedMethodError, match="'decomposition'"):
        Explainer(siglip_encoder, client, collection_name=collection_name, heatmap_method="gae")
    occluded = explainer.explain(query, hits[:1], heatmap_method="occlusion", errors="raise")
    assert occluded[0].heatmap is not None and occluded[0].heatmap.shape == siglip_encoder.grid
