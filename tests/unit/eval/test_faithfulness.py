"""Faithfulness and localisation metrics: known answers, and the shapes model's ordering.

Known answers on hand-made maps (pointing game, energy pointing game, crop boxes); on the
trained shapes model, a heatmap must beat its own reverse on deletion and insertion, and
the true occlusion ranking of caption words must beat its reverse on ERASER's scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qdrant_xai import ClipEncoder
from qdrant_xai.demo.world import generate_scenes
from qdrant_xai.encoding.words import split_words, text_without
from qdrant_xai.eval.curves import FaithfulnessCurve, deletion_curves, insertion_curves
from qdrant_xai.eval.faithfulness import (
    centre_prior,
    comprehensiveness,
    deletion_auc,
    energy_pointing_game,
    insertion_auc,
    pointing_game,
    random_heatmaps,
    sufficiency,
    word_faithfulness,
)
from qdrant_xai.explain.heatmaps.decomposition import decomposition_heatmaps
from qdrant_xai.explain.words.occlusion import WordOcclusion

N_SCENES = 10
STEPS = 8  # removal steps per curve (every 8th cell of the 8x8 grid): keeps the file fast


# -- pointing game ------------------------------------------------------------------------------


def _mask(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_pointing_game_hits_when_the_peak_is_on_the_mask() -> None:
    mask = _mask(40, 40, (20, 10, 30, 20))  # cell (row 1, col 2) of a 4x4 grid of 10 px
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[1, 2] = 1.0
    assert pointing_game(heat, mask) is True
    heat[3, 0] = 2.0  # a hotter cell elsewhere
    assert pointing_game(heat, mask) is False
    # the same object as a box needs the image size (or a crop box)
    assert pointing_game(heat, (20, 10, 30, 20), image_size=(40, 40)) is False
    heat[3, 0] = 1.0  # now tied with the cell on the object: any tied cell counts
    assert pointing_game(heat, (20, 10, 30, 20), image_size=(40, 40)) is True


def test_pointing_game_tolerance_grows_the_peak_cell() -> None:
    mask = _mask(40, 40, (22, 0, 24, 2))  # 2 px inside cell (0, 2)
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[0, 1] = 1.0  # cell spans x 10..20: 2 px short of the object
    assert not pointing_game(heat, mask)
    assert not pointing_game(heat, mask, tolerance=2)
    assert pointing_game(heat, mask, tolerance=3)


def test_energy_is_one_for_a_map_that_is_the_mask_and_zero_without_positive_energy() -> None:
    mask = _mask(40, 40, (0, 10, 20, 30))  # cells rows 1-2, cols 0-1
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[1:3, 0:2] = 1.0
    assert energy_pointing_game(heat, mask) == pytest.approx(1.0)
    assert energy_pointing_game(heat, (0, 10, 20, 30), image_size=(40, 40)) == pytest.approx(1.0)
    # negative cells carry no energy; half of the positive energy off the mask
    heat[0, 0] = -5.0
    heat[3, 3] = 4.0
    assert energy_pointing_game(heat, mask) == pytest.approx(0.5)
    # a uniform map scores the object's area share
    assert energy_pointing_game(np.ones((4, 4)), mask) == pytest.approx(0.25)
    assert energy_pointing_game(-np.ones((4, 4)), mask) == 0.0
    bilinear = energy_pointing_game(np.ones((4, 4)), mask, upsample="bilinear")
    assert bilinear == pytest.approx(0.25)


def test_crop_box_maps_the_grid_onto_a_sub_box_of_the_image() -> None:
    # a 100x80 image; the grid covers the 40x40 box at (20, 10): cells of 10 px
    mask = _mask(80, 100, (50, 30, 60, 40))  # exactly cell (row 2, col 3) of the crop
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[2, 3] = 1.0
    crop = (20, 10, 60, 50)
    assert pointing_game(heat, mask, crop_box=crop)
    assert energy_pointing_game(heat, mask, crop_box=crop) == pytest.approx(1.0)
    small = _mask(80, 100, (52, 32, 58, 38))  # 6x6 px inside that cell: 36% of its energy
    assert pointing_game(heat, small, crop_box=crop)
    assert energy_pointing_game(heat, small, crop_box=crop) == pytest.approx(0.36)
    # read over the whole image instead, cell (2, 3) is x 75..100, y 40..60: off the object
    assert not pointing_game(heat, mask)
    assert energy_pointing_game(heat, mask) == 0.0
    # a box mask gives the same answers, and needs no image size once the crop is known
    assert pointing_game(heat, (50, 30, 60, 40), crop_box=crop)
    assert energy_pointing_game(heat, (50, 30, 60, 40), crop_box=crop) == pytest.approx(1.0)
    assert energy_pointing_game(heat, (52, 32, 58, 38), crop_box=crop) == pytest.approx(0.36)
    # an object outside the crop can never be hit
    outside = _mask(80, 100, (0, 60, 10, 70))
    assert not pointing_game(np.ones((4, 4)), outside, crop_box=crop)
    assert energy_pointing_game(np.ones((4, 4)), outside, crop_box=crop) == 0.0


def test_localisation_rejects_bad_inputs() -> None:
    heat = np.zeros((4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="2-D"):
        pointing_game(heat, np.zeros((4, 4, 3), dtype=bool))
    with pytest.raises(ValueError, match="2-D"):
        energy_pointing_game(np.zeros(16), np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="image_size"):
        pointing_game(heat, (0, 0, 2, 2))
    with pytest.raises(ValueError, match="empty"):
        pointing_game(heat, (5, 0, 2, 2), image_size=(10, 10))
    with pytest.raises(ValueError, match="does not match"):
        pointing_game(heat, np.zeros((8, 10), dtype=bool), image_size=(8, 10))
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(np.full((4, 4), np.nan), np.zeros((8, 8), dtype=bool))


# -- deletion / insertion on the shapes model ---------------------------------------------------


@pytest.fixture(scope="module")
def shapes_case(shapes_encoder: ClipEncoder) -> dict[str, Any]:
    """Ten scenes, the phrase of each scene's first object, and its decomposition heatmap."""
    scenes = list(generate_scenes(N_SCENES, seed=123))
    images = [scene.image for scene in scenes]
    objects = [scene.objects[0] for scene in scenes]
    queries = shapes_encoder.embed_texts([f"a {o.color} {o.shape}" for o in objects])
    features = shapes_encoder.encode_images(images)
    contributions = np.stack([f.contributions for f in features])
    return {
        "scenes": scenes,
        "images": images,
        "objects": objects,
        "queries": queries,
        "embeddings": np.stack([f.embedding for f in features]),
        "heatmaps": decomposition_heatmaps(contributions, queries),
    }


def test_decomposition_points_at_the_named_shape_more_often_than_baselines(
    shapes_case: dict[str, Any], shapes_encoder: ClipEncoder
) -> None:
    objects, heatmaps = shapes_case["objects"], shapes_case["heatmaps"]
    random = random_heatmaps(len(objects), shapes_encoder.grid, seed=0)
    prior = centre_prior(shapes_encoder.grid)

    def accuracy(maps: Any) -> float:
        return float(
            np.mean([pointing_game(h, o.mask) for h, o in zip(maps, objects, strict=True)])
        )

    def energy(maps: Any) -> float:
        return float(
            np.mean([energy_pointing_game(h, o.mask) for h, o in zip(maps, objects, strict=True)])
        )

    assert accuracy(heatmaps) >= 0.8
    assert accuracy(heatmaps) > accuracy(random)
    assert accuracy(heatmaps) > accuracy([prior] * len(objects))
    assert energy(heatmaps) > 2 * energy(random)


def test_curves_start_and_end_where_they_should(
    shapes_case: dict[str, Any], shapes_encoder: ClipEncoder
) -> None:
    images, heatmaps = shapes_case["images"][:3], shapes_case["heatmaps"][:3]
    queries = shapes_case["queries"][:3]
    full = np.sum(shapes_case["embeddings"][:3] * queries, axis=1)
    deletion = deletion_curves(shapes_encoder, images, heatmaps, queries, steps=STEPS)
    insertion = insertion_curves(shapes_encoder, images, heatmaps, queries, steps=STEPS)
    for curve, expected in zip(deletion, full, strict=True):
        assert isinstance(curve, FaithfulnessCurve) and curve.kind == "deletion"
        assert curve.fractions.shape == curve.scores.shape == (STEPS + 1,)
        assert curve.fractions[0] == 0.0 and curve.fractions[-1] == 1.0
        assert np.all(np.diff(curve.fractions) > 0)
        assert curve.scores[0] == pytest.approx(expected, abs=1e-4)  # nothing removed yet
        assert curve.full_score == curve.scores[0]
        assert curve.normalised_auc == pytest.approx(curve.auc / curve.full_score)
    for curve, expected in zip(insertion, full, strict=True):
        assert curve.kind == "insertion"
        assert curve.scores[-1] == pytest.approx(expected, abs=1e-4)  # everything inserted
        assert curve.scores[0] < curve.scores[-1]  # the blurred canvas matches less
    # with every cell a step, the curve has one point per cell plus the start
    dense = deletion_curves(shapes_encoder, images[:1], heatmaps[:1], queries[0])[0]
    assert dense.scores.shape == (shapes_encoder.grid[0] * shapes_encoder.grid[1] + 1,)
    # a zero canvas: inserting everything is the unperturbed image, inserting nothing
    # is deleting everything
    zeros = insertion_curves(
        shapes_encoder, images[:1], heatmaps[:1], queries[:1], steps=STEPS, blur_sigma=0
    )[0]
    assert zeros.scores[0] == pytest.approx(deletion[0].scores[-1], abs=1e-4)


def test_a_heatmap_beats_its_reverse_on_deletion_and_insertion(
    shapes_case: dict[str, Any], shapes_encoder: ClipEncoder
) -> None:
    images, heatmaps, queries = (
        shapes_case["images"],
        shapes_case["heatmaps"],
        shapes_case["queries"],
    )
    options = {"steps": STEPS, "max_batch": 256}
    deletion = deletion_auc(shapes_encoder, images, heatmaps, queries, **options)
    deletion_reversed = deletion_auc(shapes_encoder, images, -heatmaps, queries, **options)
    insertion = insertion_auc(shapes_encoder, images, heatmaps, queries, **options)
    insertion_reversed = insertion_auc(shapes_encoder, images, -heatmaps, queries, **options)
    assert deletion.shape == insertion.shape == (N_SCENES,)
    assert deletion.mean() < deletion_reversed.mean()  # lower is better
    assert insertion.mean() > insertion_reversed.mean()  # higher is better
    assert np.mean(deletion < deletion_reversed) >= 0.8
    assert np.mean(insertion > insertion_reversed) >= 0.8


def test_curves_batched_equal_one_at_a_time(
    shapes_case: dict[str, Any], shapes_encoder: ClipEncoder
) -> None:
    images, heatmaps, queries = (
        shapes_case["images"][:2],
        shapes_case["heatmaps"][:2],
        shapes_case["queries"][:2],
    )
    for run in (deletion_curves, insertion_curves):
        # a chunk size that does not divide the variants of one image
        together = run(shapes_encoder, images, heatmaps, queries, steps=4, max_batch=3)
        for i in range(2):
            alone = run(
                shapes_encoder, images[i : i + 1], heatmaps[i : i + 1], queries[i], steps=4
            )[0]
            np.testing.assert_allclose(together[i].scores, alone.scores, atol=1e-5)
            assert together[i].auc == pytest.approx(alone.auc, abs=1e-5)


def test_curves_reject_bad_inputs(shapes_case: dict[str, Any], shapes_encoder: ClipEncoder) -> None:
    images, heatmaps, queries = (
        shapes_case["images"][:2],
        shapes_case["heatmaps"][:2],
        shapes_case["queries"][:2],
    )
    with pytest.raises(ValueError, match=r"grid \(8, 8\)"):
        deletion_curves(shapes_encoder, images, heatmaps[:, :4, :4], queries)
    with pytest.raises(ValueError, match="grid"):
        insertion_curves(shapes_encoder, images, heatmaps[0], queries)
    with pytest.raises(ValueError, match="2 images but 1 heatmaps"):
        deletion_curves(shapes_encoder, images, heatmaps[:1], queries)
    with pytest.raises(ValueError, match="queries"):
        deletion_curves(shapes_encoder, images, heatmaps, queries[:, :10])
    with pytest.raises(ValueError, match="steps"):
        deletion_curves(shapes_encoder, images, heatmaps, queries, steps=0)


# -- words ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def word_case(shapes_encoder: ClipEncoder, shapes_case: dict[str, Any]) -> dict[str, Any]:
    """Each scene's caption against its image, with leave-one-word-out scores."""
    texts = [scene.caption for scene in shapes_case["scenes"]]
    targets = shapes_case["embeddings"]
    scores = [s for _, s in WordOcclusion().attribute(shapes_encoder, texts, targets)]
    return {"texts": texts, "targets": targets, "scores": scores}


def test_true_word_ranking_beats_its_reverse(
    word_case: dict[str, Any], shapes_encoder: ClipEncoder
) -> None:
    texts, targets, scores = word_case["texts"], word_case["targets"], word_case["scores"]
    reverse = [-s for s in scores]
    comp = comprehensiveness(shapes_encoder, texts, scores, targets)
    comp_reverse = comprehensiveness(shapes_encoder, texts, reverse, targets)
    suff = sufficiency(shapes_encoder, texts, scores, targets)
    suff_reverse = sufficiency(shapes_encoder, texts, reverse, targets)
    assert comp.shape == suff.shape == (N_SCENES,)
    assert comp.mean() > comp_reverse.mean()  # higher is better
    assert suff.mean() < suff_reverse.mean()  # lower is better


def test_word_metrics_known_answer_for_one_bin(shapes_encoder: ClipEncoder) -> None:
    text = "a red circle and a blue square"
    scores = np.array([0.0, 3.0, 1.0, 0.0, 0.0, 2.0, 0.5], dtype=np.float32)
    target = shapes_encoder.embed_texts(["a red circle"])[0]
    words = split_words(text)
    # bin 0.3 of 7 words -> ceil(2.1) = 3 words: red (3.0), blue (2.0), circle (1.0)
    top = [words[1], words[2], words[5]]
    variants = [text, text_without(text, top), "red circle blue"]
    assert variants[1] == "a and a square"
    s = shapes_encoder.embed_texts(variants) @ target
    result = word_faithfulness(shapes_encoder, [text], [scores], target, bins=(0.3,))
    assert result.comprehensiveness[0, 0] == pytest.approx(s[0] - s[1], abs=1e-5)
    assert result.sufficiency[0, 0] == pytest.approx(s[0] - s[2], abs=1e-5)
    assert result.full_scores[0] == pytest.approx(s[0], abs=1e-5)
    # the smallest bins still keep one word
    tiny = word_faithfulness(shapes_encoder, [text], [scores], target[None], bins=(0.01,))
    s_one = shapes_encoder.embed_texts([text_without(text, [words[1]]), "red"]) @ target
    assert tiny.comprehensiveness[0, 0] == pytest.approx(s[0] - s_one[0], abs=1e-5)
    assert tiny.sufficiency[0, 0] == pytest.approx(s[0] - s_one[1], abs=1e-5)


def test_word_metrics_batched_equal_one_at_a_time(
    word_case: dict[str, Any], shapes_encoder: ClipEncoder
) -> None:
    texts, targets, scores = word_case["texts"][:4], word_case["targets"][:4], word_case["scores"]
    together = word_faithfulness(shapes_encoder, texts, scores[:4], targets, max_batch=5)
    for i in range(4):
        alone = word_faithfulness(shapes_encoder, [texts[i]], [scores[i]], targets[i : i + 1])
        np.testing.assert_allclose(
            together.comprehensiveness[i], alone.comprehensiveness[0], atol=1e-5
        )
        np.testing.assert_allclose(together.sufficiency[i], alone.sufficiency[0], atol=1e-5)


def test_word_metrics_reject_bad_inputs(shapes_encoder: ClipEncoder) -> None:
    target = np.ones(shapes_encoder.dim, dtype=np.float32)
    with pytest.raises(ValueError, match="no words"):
        comprehensiveness(shapes_encoder, [" ,. "], [np.zeros(0)], target)
    with pytest.raises(ValueError, match="3 words"):
        sufficiency(shapes_encoder, ["a red circle"], [np.zeros(2)], target)
    with pytest.raises(ValueError, match="bins"):
        comprehensiveness(shapes_encoder, ["a red circle"], [np.zeros(3)], target, bins=(0.0,))
    with pytest.raises(ValueError, match="targets"):
        comprehensiveness(shapes_encoder, ["a red circle"], [np.zeros(3)], target[:5])


# -- baselines --------------------------------------------------------------------------------


def test_baselines() -> None:
    maps = random_heatmaps(5, (3, 4), seed=7)
    assert maps.shape == (5, 3, 4) and maps.dtype == np.float32
    np.testing.assert_array_equal(maps, random_heatmaps(5, (3, 4), seed=7))
    assert not np.array_equal(maps, random_heatmaps(5, (3, 4), seed=8))
    prior = centre_prior((7, 7))
    assert prior.shape == (7, 7) and prior.dtype == np.float32
    assert np.unravel_index(int(np.argmax(prior)), prior.shape) == (3, 3)
    assert prior[3, 3] == pytest.approx(1.0)
    np.testing.assert_allclose(prior, prior.T)
    np.testing.assert_allclose(prior, prior[::-1, ::-1])
    even = centre_prior((8, 8))
    assert even[3, 3] == even[4, 4] == even.max()
