"""The post-retrieval explainer on real Qdrant backends and real (tiny) CLIP models."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import (
    ClipEncoder,
    Explainer,
    FeatureCodecError,
    FeaturesMissingError,
    Indexer,
    ModelMismatchError,
    PayloadKeys,
    Searcher,
)
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.encoding.words import text_without
from qdrant_xai.explain import WordOcclusion
from qdrant_xai.testing import build_tiny_clip


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    write_scene_folder(folder, 12, seed=3, size=64)
    return folder


def _index(client: QdrantClient, encoder: ClipEncoder, name: str, folder: Path) -> None:
    summary = Indexer(client, encoder, collection_name=name).index_folder(
        folder, captions=folder / "captions.csv", progress=False
    )
    assert summary.failed == []


def test_explaining_never_changes_ids_scores_or_order(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    _index(client, tiny_encoder, collection_name, scene_dir)
    searcher = Searcher(client, tiny_encoder, collection_name=collection_name)
    explainer = Explainer(tiny_encoder, client, collection_name=collection_name)
    for query, hits in [
        (
            "a red circle and a blue square",
            searcher.search_images("a red circle and a blue square", limit=6),
        ),
        (
            scene_dir / "scene_0001.png",
            searcher.search_texts(scene_dir / "scene_0001.png", limit=6),
        ),
        (
            scene_dir / "scene_0002.png",
            searcher.search_images(scene_dir / "scene_0002.png", limit=6),
        ),
    ]:
        before = copy.deepcopy(hits)
        explanations = explainer.explain(query, hits)
        assert hits == before
        assert [e.id for e in explanations] == [h.id for h in before]
        assert [e.score for e in explanations] == [h.score for h in before]
        assert [e.rank for e in explanations] == list(range(len(before)))
        assert all(
            e.heatmap is not None and e.heatmap.shape == tiny_encoder.grid for e in explanations
        )
        # the features never travel with search results, only with the explained hits
        assert all(PayloadKeys.FEATURES not in (h.payload or {}) for h in hits)


def test_text_query_explanations_match_the_definitions(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    _index(client, tiny_encoder, collection_name, scene_dir)
    query = "a green cross and a yellow circle"
    hits = Searcher(client, tiny_encoder, collection_name=collection_name).search_images(
        query, limit=3
    )
    explainer = Explainer(tiny_encoder, client, collection_name=collection_name)
    explanations = explainer.explain(query, hits, word_method="occlusion")
    by_default = explainer.explain(query, hits)  # the `prefix` word method
    text = tiny_encoder.embed_texts([query])[0]
    for e, default in zip(explanations, by_default, strict=True):
        feats = tiny_encoder.encode_images([Path(e.payload["source"])])[0]
        # heatmap = stored contributions · query (fp16 storage tolerance)
        np.testing.assert_allclose(e.heatmap, feats.contributions @ text, atol=2e-3)
        # the default's last word: both its terms are that word's exact leave-one-out
        assert default.word_method == "prefix"
        assert default.words[-1].score == pytest.approx(e.words[-1].score, abs=1e-4)
        # leave-one-word-out, checked one variant at a time against the hit's embedding
        for word in e.words:
            start, end = word.span
            without = " ".join((query[:start] + query[end:]).split())
            expected = float(
                text @ feats.embedding - tiny_encoder.embed_texts([without])[0] @ feats.embedding
            )
            assert word.score == pytest.approx(expected, abs=1e-4)
        assert [w.word for w in e.words] == query.replace(",", "").split()
        assert e.words_side == "query" and e.heatmap_side == "hit"


def test_image_query_on_text_hits_explains_the_caption_words(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    _index(client, tiny_encoder, collection_name, scene_dir)
    query = scene_dir / "scene_0004.png"
    hits = Searcher(client, tiny_encoder, collection_name=collection_name).search_texts(
        query, limit=4
    )
    explanations = Explainer(tiny_encoder, client, collection_name=collection_name).explain(
        query, hits
    )
    image = tiny_encoder.encode_images([query])[0]
    for hit, e in zip(hits, explanations, strict=True):
        assert e.hit_kind == "text" and e.words_side == "hit" and e.heatmap_side == "query"
        assert e.text == hit.payload["text"]
        caption = tiny_encoder.embed_texts([e.text])[0]
        np.testing.assert_allclose(e.heatmap, image.contributions @ caption, atol=1e-4)
        assert {w.word for w in e.words} <= set(e.text.replace(",", "").split())
        for w in e.words:
            assert e.text[w.span[0] : w.span[1]] == w.word


def test_batched_occlusion_equals_one_text_at_a_time(tiny_encoder: ClipEncoder) -> None:
    occlusion = WordOcclusion(max_batch=3)
    texts = ["a red circle", "a blue square and a green cross", "purple", "a red circle"]
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(4, tiny_encoder.dim)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    batched = occlusion.attribute(tiny_encoder, texts, targets)
    for text, target, (words, scores) in zip(texts, targets, batched, strict=True):
        ((single_words, single),) = WordOcclusion().attribute(tiny_encoder, [text], target[None])
        assert words == single_words
        np.testing.assert_allclose(scores, single, atol=1e-5)
        sims = tiny_encoder.embed_texts([text, *(text_without(text, [w]) for w in words)])
        np.testing.assert_allclose(scores, sims[0] @ target - sims[1:] @ target, atol=1e-5)


def test_tampered_features_raise_the_typed_error(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    _index(client, tiny_encoder, collection_name, scene_dir)
    hits = Searcher(client, tiny_encoder, collection_name=collection_name).search_images(
        "a red circle", limit=2
    )
    stored = client.retrieve(collection_name, ids=[hits[0].id], with_payload=True)[0].payload
    features = dict(stored[PayloadKeys.FEATURES])
    features["data"] = features["data"][:-8]  # truncated in transit
    client.set_payload(
        collection_name, payload={PayloadKeys.FEATURES: features}, points=[hits[0].id]
    )
    explainer = Explainer(tiny_encoder, client, collection_name=collection_name)
    # the tampered hit says why; the other hit is still explained
    tampered, intact = explainer.explain("a red circle", hits)
    assert not tampered.ok and tampered.status == "failed" and tampered.heatmap is None
    assert (tampered.id, tampered.score, tampered.rank) == (hits[0].id, hits[0].score, 0)
    assert intact.ok and intact.heatmap is not None and intact.rank == 1
    assert tampered.to_dict()["error"]["type"] == "FeatureCodecError"
    with pytest.raises(FeatureCodecError, match="base64"):
        tampered.raise_for_status()
    with pytest.raises(FeatureCodecError, match="base64"):
        explainer.explain("a red circle", hits, errors="raise")
    features = dict(stored[PayloadKeys.FEATURES], shape=[2, 2, 16])
    client.set_payload(
        collection_name, payload={PayloadKeys.FEATURES: features}, points=[hits[0].id]
    )
    with pytest.raises(FeatureCodecError, match="shape"):
        explainer.explain("a red circle", hits, errors="raise")


def test_features_of_another_model_are_refused(
    client: QdrantClient,
    collection_name: str,
    tiny_encoder: ClipEncoder,
    scene_dir: Path,
    tmp_path: Path,
) -> None:
    _index(client, tiny_encoder, collection_name, scene_dir)
    other = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "other", seed=1))
    assert other.fingerprint.key != tiny_encoder.fingerprint.key
    hits = Searcher(client, tiny_encoder, collection_name=collection_name).search_images(
        "a red circle", limit=2
    )
    with pytest.raises(ModelMismatchError, match="another model"):
        Explainer(other, client, collection_name=collection_name).explain(
            "a red circle", hits, errors="raise"
        )


def test_missing_features_are_recomputed_only_from_allowed_folders(
    client: QdrantClient,
    collection_name: str,
    tiny_encoder: ClipEncoder,
    scene_dir: Path,
    tmp_path: Path,
) -> None:
    _index(client, tiny_encoder, collection_name, scene_dir)
    hits = Searcher(client, tiny_encoder, collection_name=collection_name).search_images(
        "a blue square", limit=3
    )
    full = Explainer(tiny_encoder, client, collection_name=collection_name).explain(
        "a blue square", hits
    )
    client.delete_payload(
        collection_name,
        keys=[PayloadKeys.FEATURES, PayloadKeys.FINGERPRINT],
        points=[h.id for h in hits],
    )
    with pytest.raises(FeaturesMissingError, match="image_roots"):
        Explainer(tiny_encoder, client, collection_name=collection_name).explain(
            "a blue square", hits, errors="raise"
        )
    with pytest.raises(FeaturesMissingError, match="outside the allowed image roots"):
        Explainer(
            tiny_encoder, client, collection_name=collection_name, image_roots=[tmp_path]
        ).explain("a blue square", hits, errors="raise")
    recomputed = Explainer(
        tiny_encoder, client, collection_name=collection_name, image_roots=[scene_dir]
    ).explain("a blue square", hits)
    for a, b in zip(full, recomputed, strict=True):
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=2e-3)
        assert [w.word for w in a.words] == [w.word for w in b.words]


def test_hits_of_a_plain_search_call_can_be_explained(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    """Hits from the user's own query_points call (full payload, with vectors) work too."""
    _index(client, tiny_encoder, collection_name, scene_dir)
    query = tiny_encoder.embed_texts(["a yellow triangle"])[0]
    hits = client.query_points(
        collection_name,
        query=query.tolist(),
        using="image",
        limit=3,
        with_payload=True,
        with_vectors=True,
        query_filter=models.Filter(
            must=[
                models.FieldCondition(key=PayloadKeys.KIND, match=models.MatchValue(value="image"))
            ]
        ),
    ).points
    offline = Explainer(tiny_encoder).explain("a yellow triangle", hits)  # no client at all
    online = Explainer(tiny_encoder, client, collection_name=collection_name).explain(
        "a yellow triangle", hits
    )
    for a, b in zip(offline, online, strict=True):
        np.testing.assert_allclose(a.heatmap, b.heatmap)
        assert a.words == b.words


def test_empty_hit_list_gives_no_explanations(tiny_encoder: ClipEncoder) -> None:
    assert Explainer(tiny_encoder).explain("anything", []) == []


def test_hits_without_vectors_and_no_client_say_how_to_fix_it(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    _index(client, tiny_encoder, collection_name, scene_dir)
    query = tiny_encoder.embed_texts(["a red circle"])[0]
    hits = client.query_points(
        collection_name, query=query.tolist(), using="image", limit=2, with_payload=True
    ).points
    with pytest.raises(FeaturesMissingError, match="with_vectors=True"):
        Explainer(tiny_encoder).explain("a red circle", hits, errors="raise")
