"""Every explanation method through the explainer, the CLI and the report, on real Qdrant."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, FeaturesMissingError, Indexer, PayloadKeys, Searcher
from qdrant_xai.cli import main
from qdrant_xai.demo.world import COLORS, SHAPES, write_scene_folder
from qdrant_xai.encoding.words import split_words, text_without
from qdrant_xai.explain import (
    HEATMAP_METHODS,
    WORD_METHODS,
    Explainer,
    RationaleScorer,
    UnknownMethodError,
    ground,
    heatmap_method,
    word_method,
)
from qdrant_xai.render import render_report, render_section

HEATMAP_NAMES = {
    "decomposition",
    "decompx",
    "patch",
    "debiased",
    "clip-surgery",
    "multiscale",
    "grad-eclip",
    "gae",
    "gae-last",
    "occlusion",
}
WORD_NAMES = {"occlusion", "context", "ig", "tokens", "prefix"}


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    write_scene_folder(folder, 8, seed=21, size=64)
    return folder


def _index(
    client: QdrantClient, encoder: ClipEncoder, name: str, folder: Path, profile: str = "full"
) -> None:
    summary = Indexer(client, encoder, collection_name=name, profile=profile).index_folder(  # type: ignore[arg-type]
        folder, captions=folder / "captions.csv", progress=False
    )
    assert summary.failed == []


def test_every_method_is_registered_by_name() -> None:
    assert set(HEATMAP_METHODS) == HEATMAP_NAMES
    assert set(WORD_METHODS) == WORD_NAMES
    for name in HEATMAP_NAMES:
        assert heatmap_method(name).name == name
    for name in WORD_NAMES:
        assert word_method(name).name == name
    with pytest.raises(UnknownMethodError, match=r"choose one of .*grad-eclip"):
        heatmap_method("gradcam")
    with pytest.raises(UnknownMethodError, match=r"choose one of .*context"):
        word_method("shap")


@pytest.mark.parametrize("method", sorted(HEATMAP_NAMES))
def test_each_image_method_explains_both_directions_without_touching_hits(
    method: str, tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    client = QdrantClient(":memory:")
    _index(client, tiny_encoder, "m", scene_dir)
    searcher = Searcher(client, tiny_encoder, collection_name="m")
    explainer = Explainer(
        tiny_encoder, client, collection_name="m", image_roots=[scene_dir], heatmap_method=method
    )
    image_query = scene_dir / "scene_0001.png"
    for query, hits, side in [
        ("a red circle", searcher.search_images("a red circle", limit=4), "hit"),
        (image_query, searcher.search_texts(image_query, limit=3), "query"),
        (image_query, searcher.search_images(image_query, limit=3), "hit"),
    ]:
        before = copy.deepcopy(hits)
        explanations = explainer.explain(query, hits)
        assert hits == before
        assert [(e.id, e.score, e.rank) for e in explanations] == [
            (h.id, h.score, r) for r, h in enumerate(before)
        ]
        for e in explanations:
            assert e.heatmap_method == method and e.heatmap_side == side
            assert e.heatmap is not None and e.heatmap.shape == tiny_encoder.grid
            assert e.heatmap.dtype == np.float32 and np.isfinite(e.heatmap).all()


@pytest.mark.parametrize("method", sorted(WORD_NAMES))
def test_each_word_method_explains_both_directions(
    method: str, tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    client = QdrantClient(":memory:")
    _index(client, tiny_encoder, "w", scene_dir, profile="standard")
    searcher = Searcher(client, tiny_encoder, collection_name="w")
    explainer = Explainer(tiny_encoder, client, collection_name="w", word_method=method)
    query = "a red circle and a blue square"
    for e in explainer.explain(query, searcher.search_images(query, limit=3)):
        assert e.word_method == method and e.words_side == "query"
        assert [w.word for w in e.words] == query.split()
    image_query = scene_dir / "scene_0002.png"
    for e in explainer.explain(image_query, searcher.search_texts(image_query, limit=3)):
        assert e.word_method == method and e.words_side == "hit"
        assert e.text is not None
        assert [w.word for w in e.words] == [w.text for w in split_words(e.text)]
        assert all(np.isfinite(w.score) for w in e.words)


def test_stored_tokens_scores_equal_recomputed_ones(
    tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    client = QdrantClient(":memory:")
    _index(client, tiny_encoder, "t", scene_dir, profile="standard")
    image_query = scene_dir / "scene_0003.png"
    hits = Searcher(client, tiny_encoder, collection_name="t").search_texts(image_query, limit=3)
    stored = Explainer(tiny_encoder, client, collection_name="t", word_method="tokens")
    fresh = Explainer(tiny_encoder, word_method="tokens")  # no client: recomputes
    for a, b in zip(
        stored.explain(image_query, hits),
        fresh.explain(image_query, copy.deepcopy(hits)),
        strict=True,
    ):
        assert [w.word for w in a.words] == [w.word for w in b.words]
        np.testing.assert_allclose(
            [w.score for w in a.words], [w.score for w in b.words], atol=2e-3
        )


def test_full_profile_runs_gradient_methods_without_reading_images(
    tiny_encoder: ClipEncoder, scene_dir: Path, tmp_path: Path
) -> None:
    full, standard = QdrantClient(":memory:"), QdrantClient(":memory:")
    _index(full, tiny_encoder, "f", scene_dir, profile="full")
    _index(standard, tiny_encoder, "s", scene_dir, profile="standard")
    point = full.scroll("f", limit=20, with_payload=True)[0]
    image_points = [p for p in point if (p.payload or {}).get(PayloadKeys.KIND) == "image"]
    assert all(PayloadKeys.LAST_LAYER in (p.payload or {}) for p in image_points)
    hits = Searcher(full, tiny_encoder, collection_name="f").search_images("a blue cross", limit=4)
    for method in ("grad-eclip", "gae-last", "patch"):
        # no image_roots: nothing may be read, the stored last-layer input must suffice
        from_store = Explainer(tiny_encoder, full, collection_name="f", heatmap_method=method)
        from_pixels = Explainer(
            tiny_encoder, standard, collection_name="s", heatmap_method=method,
            image_roots=[scene_dir],
        )  # fmt: skip
        stored_maps = [e.heatmap for e in from_store.explain("a blue cross", hits)]
        pixel_maps = [e.heatmap for e in from_pixels.explain("a blue cross", hits)]
        for a, b in zip(stored_maps, pixel_maps, strict=True):
            assert a is not None and b is not None
            np.testing.assert_allclose(a, b, atol=5e-3 * max(1.0, float(np.abs(b).max())))
        # the standard profile without image roots says what to do
        with pytest.raises(FeaturesMissingError, match="profile full"):
            Explainer(tiny_encoder, standard, collection_name="s", heatmap_method=method).explain(
                "a blue cross", hits, errors="raise"
            )


def test_grounding_maps_follow_their_definitions(
    shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    client = QdrantClient(":memory:")
    _index(client, shapes_encoder, "g", scene_dir, profile="standard")
    query = "a red circle and a blue square"
    hits = Searcher(client, shapes_encoder, collection_name="g").search_images(query, limit=3)
    explanations = Explainer(shapes_encoder, client, collection_name="g", grounding=True).explain(
        query, hits
    )
    sources = [e.image_source for e in explanations if e.image_source]
    contributions = np.stack([f.contributions for f in shapes_encoder.encode_images(sources)])
    words = split_words(query)
    t = shapes_encoder.embed_texts([query, *(text_without(query, [w]) for w in words)])
    removal_dirs = t[0] - t[1:]
    token_dirs = shapes_encoder.encode_texts([query])[0].word_contributions
    content = [1, 2, 5, 6]  # red circle blue square
    removal = ground(shapes_encoder, [query] * 3, contributions, method="removal")
    tokens = ground(shapes_encoder, [query] * 3, contributions, method="tokens")
    for e, c, r, k in zip(explanations, contributions, removal, tokens, strict=True):
        assert e.grounding is not None
        assert [w.text for w in e.grounding.words] == ["red", "circle", "blue", "square"]
        assert e.grounding.maps.shape == (4, *shapes_encoder.grid)
        for got, dirs in ((r, removal_dirs), (k, token_dirs)):
            expected = np.einsum("hwp,kp->khw", c, dirs - dirs.mean(axis=0))[content]
            expected /= np.abs(expected).max()
            np.testing.assert_allclose(got.maps, expected, atol=1e-3)
        np.testing.assert_allclose(e.grounding.maps, r.maps + k.maps, atol=1e-3)
    with pytest.raises(ValueError, match="grounding method"):
        ground(shapes_encoder, [query], contributions[:1], method="attention")  # type: ignore[arg-type]
    # image -> text: the hit's words are grounded over the query image
    image_query = scene_dir / "scene_0004.png"
    searcher = Searcher(client, shapes_encoder, collection_name="g")
    text_hits = searcher.search_texts(image_query, limit=2)
    for e in Explainer(shapes_encoder, client, collection_name="g").explain(
        image_query, text_hits, grounding=True
    ):
        assert e.grounding is not None and e.heatmap_side == "query"
        assert all(w.text.lower() not in {"a", "and"} for w in e.grounding.words)


def test_grounding_points_each_word_at_its_object(shapes_encoder: ClipEncoder) -> None:
    from qdrant_xai.demo.world import generate_scenes
    from qdrant_xai.eval.faithfulness import pointing_game

    scenes = [s for s in generate_scenes(80, seed=101) if len(s.objects) >= 2][:40]
    features = shapes_encoder.encode_images([s.image for s in scenes])
    contributions = np.stack([f.contributions for f in features])
    groundings = ground(shapes_encoder, [s.caption for s in scenes], contributions)
    rates = {}
    for kind in ("color", "shape"):
        hits = total = 0
        for scene, grounding in zip(scenes, groundings, strict=True):
            for obj in scene.objects:
                word = getattr(obj, kind)
                if sum(getattr(o, kind) == word for o in scene.objects) > 1:
                    continue  # the word names two objects
                total += 1
                hits += pointing_game(grounding.map_of(word), obj.mask)
        rates[kind] = hits / total
    # a random map points at an object in about 13 % of cases here
    assert rates["color"] >= 0.85 and rates["shape"] >= 0.6, rates


def test_rationales_rank_concepts_with_the_ecor_prompt(
    shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    concepts = [f"a {c} {s}" for c in COLORS for s in SHAPES]
    scorer = RationaleScorer(
        shapes_encoder,
        concepts,
        template="{query} and {concept}",
        query_template="{query}",
        concept_template="{concept}",
        top_k=4,
    )
    client = QdrantClient(":memory:")
    _index(client, shapes_encoder, "r", scene_dir, profile="standard")
    scorer.calibrate(shapes_encoder.embed_images(sorted(scene_dir.glob("*.png"))))
    # every scene, so that low-ranked hits lacking a red circle have something to explain
    hits = Searcher(client, shapes_encoder, collection_name="r").search_images(
        "a red circle", limit=8
    )
    explanations = Explainer(shapes_encoder, client, collection_name="r").explain(
        "a red circle", hits, rationales=scorer
    )
    assert any(e.rationales for e in explanations)
    # asked for and none found is (), not None; "no rationale found" reaches JSON and HTML
    assert all(e.rationales is not None for e in explanations)
    none_found = [e for e in explanations if e.rationales == ()]
    assert none_found, "some low-ranked hit should have no supported concept"
    assert none_found[0].to_dict()["rationales"] == []
    assert "no rationale found" in render_section("a red circle", none_found[:1])
    not_asked = Explainer(shapes_encoder, client, collection_name="r").explain(
        "a red circle", hits[:2]
    )
    assert [e.rationales for e in not_asked] == [None, None]
    assert not_asked[0].to_dict()["rationales"] is None
    assert "rationale" not in render_section("a red circle", not_asked)
    for e in explanations:
        assert e.rationales is not None
        assert len(e.rationales) <= 4
        scores = [r.score for r in e.rationales]
        assert scores == sorted(scores, reverse=True)
        if not e.rationales:
            continue
        top = e.rationales[0]
        assert top.gain > 0 and top.support > scorer.support_z
        image = shapes_encoder.embed_images([e.image_source])[0]
        prompt = shapes_encoder.embed_texts([f"a red circle and {top.concept}"])[0]
        assert top.score == pytest.approx(float(image @ prompt), abs=1e-4)
        alone = shapes_encoder.embed_texts([top.concept])[0]
        assert top.concept_score == pytest.approx(float(image @ alone), abs=1e-4)
    with pytest.raises(ValueError, match="lacks"):
        RationaleScorer(shapes_encoder, concepts, template="a photo of {query}")


def test_default_rationales_use_the_general_vocabulary(tiny_encoder: ClipEncoder) -> None:
    scorer = RationaleScorer(tiny_encoder, extra_concepts=["rust"])
    assert "a wheel" in scorer.concepts and scorer.concepts[-1] == "rust"
    reference = np.random.default_rng(0).normal(size=(64, tiny_encoder.dim))
    found = scorer.rationales(["a car"] * 64, reference, top_k=5, reference=reference)
    assert all(len(f) <= 5 and len({r.concept for r in f}) == len(f) for f in found)
    assert all(r.concept in scorer.concepts and r.gain > 0 for f in found for r in f)


def test_cli_selects_methods_and_prints_grounding_and_rationales(
    tiny_model_dir: Path, scene_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--path", str(tmp_path / "q"), "--collection", "c", "--model", str(tiny_model_dir)]
    assert main(["index", str(scene_dir), "--profile", "full", "--no-progress", *common]) == 0
    capsys.readouterr()
    html = tmp_path / "report.html"
    args = ["search", "a red circle", "--explain", "--limit", "2", *common]
    extra = ["--method", "grad-eclip", "--word-method", "context", "--grounding"]
    assert main([*args, *extra, "--concept", "rust", "--json", "--html", str(html)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["heatmap_method"] == "grad-eclip" and record["word_method"] == "context"
        assert [w[0] for w in record["grounding"]["words"]] == ["red", "circle"]
        assert all(r["gain"] > 0 for r in record["rationales"])
    page = html.read_text(encoding="utf-8")
    assert "where each word is found" in page
    listed = sum(bool(record["rationales"]) for record in records)
    assert page.count("matched because there is") == listed
    with pytest.raises(SystemExit):
        main([*args, "--method", "nope"])


def test_report_renders_grounding_strip_and_rationales(
    shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    client = QdrantClient(":memory:")
    _index(client, shapes_encoder, "h", scene_dir, profile="standard")
    hits = Searcher(client, shapes_encoder, collection_name="h").search_images(
        "a blue square", limit=2
    )
    explanations = Explainer(
        shapes_encoder, client, collection_name="h", grounding=True, rationales=True
    ).explain("a blue square", hits)
    page = render_report([("a blue square", explanations)])
    assert page.count("<figcaption>") == 2 * 2  # "blue", "square" for each hit
    # two hits and no reference to calibrate on: "no rationale found", nothing drawn
    listed = sum(bool(e.rationales) for e in explanations)
    assert page.count("matched because there is") == listed


def test_every_method_accepts_read_only_arrays_and_one_shared_query(
    tiny_encoder: ClipEncoder, scene_dir: Path
) -> None:
    """Payload arrays arrive as read-only buffers; no method may warn or copy wrongly."""
    from qdrant_xai import load_image
    from qdrant_xai.explain import ImageEvidence

    images = [load_image(scene_dir / f"scene_{i:04d}.png") for i in range(3)]
    features = tiny_encoder.encode_images(images, patch_tokens=True, last_layer=True)

    def frozen(name: str) -> np.ndarray:
        array = np.stack([getattr(f, name) for f in features])
        array.setflags(write=False)
        return array

    evidence = ImageEvidence(
        embeddings=frozen("embedding"),
        contributions=frozen("contributions"),
        patch_tokens=frozen("patch_tokens"),
        last_layer_inputs=frozen("last_layer_inputs"),
        images=images,
    )
    query = tiny_encoder.embed_texts(["a red circle"])[0]
    query.setflags(write=False)
    tiled = np.repeat(query[None], 3, 0)
    for name in sorted(HEATMAP_NAMES):
        method = heatmap_method(name)
        shared = method.heatmaps(tiny_encoder, evidence, query)
        np.testing.assert_allclose(
            shared, method.heatmaps(tiny_encoder, evidence, tiled), atol=1e-5
        )
