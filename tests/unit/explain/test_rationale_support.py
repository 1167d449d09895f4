"""Rationales are listed only when they raise the match and the image supports them."""

from __future__ import annotations

import numpy as np
import pytest

from qdrant_xai.demo.run import shapes_rationales
from qdrant_xai.demo.world import generate_scenes
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import DimensionMismatchError
from qdrant_xai.explain import RationaleScorer
from qdrant_xai.explain.rationales import ConceptCalibration


@pytest.fixture(scope="module")
def world(shapes_encoder: ClipEncoder) -> tuple[list, np.ndarray]:
    scenes = list(generate_scenes(48, seed=77))
    return scenes, shapes_encoder.embed_images([s.image for s in scenes])


def _absent_queries(scorer: RationaleScorer, scenes: list) -> list[str]:
    """For each scene, a phrase of an object it lacks (its match needs explaining)."""
    rng = np.random.default_rng(0)
    out = []
    for scene in scenes:
        lacking = [c for c in scorer.concepts if c not in {o.phrase for o in scene.objects}]
        out.append(lacking[rng.integers(len(lacking))])
    return out


def test_listed_rationales_obey_both_rules_and_their_stated_formulas(
    shapes_encoder: ClipEncoder, world: tuple[list, np.ndarray]
) -> None:
    scenes, images = world
    scorer = shapes_rationales(shapes_encoder)
    calibration = scorer.calibrate(images)
    queries = _absent_queries(scorer, scenes)
    reasons = scorer.rationales(queries, images, top_k=4)
    assert sum(map(len, reasons)) >= 10  # enough listed for the checks below to mean much
    plain = images @ scorer.concept_embeddings.T
    pairs = [(q, r) for q, found in zip(queries, reasons, strict=True) for r in found]
    texts = [t for q, r in pairs for t in (q, f"{q} and {r.concept}")]
    embedded = iter(shapes_encoder.embed_texts(texts))  # one batch: query, prompt, ...
    for image, row, found in zip(images, plain, reasons, strict=True):
        assert len(found) <= 4
        assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
        for r in found:
            base, prompt = float(image @ next(embedded)), float(image @ next(embedded))
            j = scorer.concepts.index(r.concept)
            assert r.score == pytest.approx(prompt, abs=1e-4)
            assert r.gain == pytest.approx(r.score - base, abs=1e-4) and r.gain > 0
            assert r.concept_score == pytest.approx(float(row[j]), abs=1e-4)
            z = (row[j] - calibration.center[j]) / calibration.spread[j]
            assert r.support == pytest.approx(float(z), abs=1e-4) and r.support > 3.5
            assert r.to_dict()["support"] == pytest.approx(r.support, abs=1e-3)


def test_a_lone_red_circle_is_not_explained_by_other_red_shapes(
    shapes_encoder: ClipEncoder, world: tuple[list, np.ndarray]
) -> None:
    """Issue 15: "matched because there is: a red circle, a red square, a red triangle"."""
    scenes, images = world
    scorer = shapes_rationales(shapes_encoder)
    scorer.calibrate(images)
    lone = [i for i, s in enumerate(scenes) if len(s.objects) == 1]
    assert lone
    held = [scenes[i].objects[0].phrase for i in lone]
    other = ["a green cross" if h != "a green cross" else "a blue cross" for h in held]
    found = scorer.rationales([*held, *other], images[lone + lone])
    for phrase, reasons in zip(held + held, found, strict=True):
        assert {r.concept for r in reasons} <= {phrase}, (phrase, reasons)


def test_the_old_choice_lists_concepts_that_lower_the_match(
    shapes_encoder: ClipEncoder, world: tuple[list, np.ndarray]
) -> None:
    """The rules change something: with both switched off, concepts of negative gain and
    absent objects come back (the behaviour issue 15 reported)."""
    scenes, images = world[0][:12], world[1][:12]
    scorer = shapes_rationales(shapes_encoder)
    queries = [s.objects[0].phrase for s in scenes]
    strict = scorer.rationales(queries, images, reference=world[1])
    for scene, found in zip(scenes, strict, strict=True):
        held = {o.phrase for o in scene.objects}
        assert all(r.gain > 0 and r.support > 3.5 and r.concept in held for r in found)
    distinct = sorted(set(queries))
    prompts = shapes_encoder.embed_texts(
        [f"{q} and {c}" for q in distinct for c in scorer.concepts]
    )
    prompts = prompts.reshape(len(distinct), -1, prompts.shape[1])
    sims = np.einsum("ncp,np->nc", prompts[[distinct.index(q) for q in queries]], images)
    old_top = np.argsort(-sims, axis=1)[:, :3]  # the old rule: top 3 by score, no test
    wrong = sum(
        scorer.concepts[j] not in {o.phrase for o in s.objects}
        for s, top in zip(scenes, old_top, strict=True)
        for j in top
    )
    assert wrong > len(scenes) // 2


def test_without_a_large_enough_reference_nothing_is_listed(
    shapes_encoder: ClipEncoder, world: tuple[list, np.ndarray]
) -> None:
    scenes, images = world
    scorer = shapes_rationales(shapes_encoder)
    queries = _absent_queries(scorer, scenes)
    # a few hits, or one image repeated (an image query's text hits): no rationale found
    assert scorer.rationales(queries[:3], images[:3]) == [(), (), ()]
    repeated = np.repeat(images[:1], 12, axis=0)
    assert scorer.rationales(queries[:12], repeated) == [()] * 12
    # the call's own images serve when there are enough of them
    assert any(scorer.rationales(queries, images))
    assert scorer.calibration is None  # a call's fallback is not kept


def test_a_reference_given_once_is_kept_and_a_call_may_override_it(
    shapes_encoder: ClipEncoder, world: tuple[list, np.ndarray]
) -> None:
    scenes, images = world
    scorer = shapes_rationales(shapes_encoder)
    kept = RationaleScorer(
        shapes_encoder,
        scorer.concepts,
        template="{query} and {concept}",
        query_template="{query}",
        concept_template="{concept}",
        reference=images * 3.0,  # any norm
    )
    queries = _absent_queries(scorer, scenes)
    few = kept.rationales(queries[:3], images[:3])
    assert isinstance(kept.calibration, ConceptCalibration)
    assert kept.calibration.n_reference == len(images)
    assert few == scorer.rationales(queries[:3], images[:3], reference=images)
    # a call's reference holding only images of a red circle moves that concept's yardstick
    reds = [i for i, s in enumerate(scenes) if "a red circle" in {o.phrase for o in s.objects}]
    other = kept.rationales(queries, images, reference=images[reds * 4][: max(8, len(reds))])
    assert kept.calibration.n_reference == len(images)  # the kept one is unchanged
    assert other != kept.rationales(queries, images)


def test_bad_references_and_arguments_are_refused(tiny_encoder: ClipEncoder) -> None:
    scorer = RationaleScorer(tiny_encoder, ["a cat", "a dog"])
    dim = tiny_encoder.dim
    with pytest.raises(DimensionMismatchError, match="dimension"):
        scorer.calibrate(np.ones((20, dim + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="fewer than min_reference"):
        scorer.calibrate(np.eye(dim, dtype=np.float32)[:3])
    with pytest.raises(ValueError, match=r"\[N, "):
        scorer.calibrate(np.ones(dim, dtype=np.float32))
    with pytest.raises(ValueError, match="one each"):
        scorer.rationales(["a"], np.ones((2, dim), dtype=np.float32))
    with pytest.raises(ValueError, match="support_z"):
        RationaleScorer(tiny_encoder, ["a cat"], support_z=float("nan"))
    with pytest.raises(ValueError, match="min_reference"):
        RationaleScorer(tiny_encoder, ["a cat"], min_reference=1)
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, dim)).astype(np.float32)
    found = scorer.rationales(["a pet"] * 40, reference, reference=reference)
    assert all(r.gain > 0 and r.support > 3.5 for f in found for r in f)
