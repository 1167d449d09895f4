"""True-vs-foil AUC and bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from qdrant_xai.eval import Estimate, bootstrap_ratio, foil_auc, foil_wins


def test_wins_count_true_words_above_the_foil_and_ties_as_half() -> None:
    # words: 0 "a", 1 foil, 2 true, 3 true, 4 true
    scores = [0.9, 0.2, 0.5, 0.2, -0.1]
    assert foil_wins(scores, 1, [2, 3, 4]) == (1.5, 3)
    assert foil_wins(scores, 1, []) == (0.0, 0)


@pytest.mark.parametrize(
    ("foil", "true", "message"),
    [(5, [1], "outside"), (0, [7], "outside"), (1, [1, 2], "both"), (-1, [2], "outside")],
)
def test_wins_reject_indices_that_do_not_fit(foil: int, true: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        foil_wins([0.1, 0.2, 0.3], foil, true)


def test_wins_reject_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="NaN"):
        foil_wins([0.1, np.nan, 0.3], 0, [1, 2])


def test_auc_pools_pairs_over_captions() -> None:
    scores = [[0.0, 1.0, 2.0], [0.0, -1.0, -2.0, 3.0]]
    # caption 0: foil 0 below both true words: 2 of 2; caption 1: foil 0 above 2 of 3
    auc = foil_auc(scores, [0, 0], [[1, 2], [1, 2, 3]], resamples=200)
    assert auc.value == pytest.approx(3 / 5)
    assert auc.n == 2 and auc.low <= auc.value <= auc.high
    perfect = foil_auc([[0.0, 1.0]] * 10, [0] * 10, [[1]] * 10)
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="one of each per caption"):
        foil_auc(scores, [0], [[1, 2], [1]])


def test_bootstrap_interval_of_a_rate_has_the_binomial_width() -> None:
    rng = np.random.default_rng(3)
    outcomes = (rng.random(400) < 0.8).astype(float)
    estimate = bootstrap_ratio(outcomes, seed=1)
    assert isinstance(estimate, Estimate) and estimate.level == 0.95
    half_width = 1.96 * np.sqrt(estimate.value * (1 - estimate.value) / 400)
    assert estimate.high - estimate.low == pytest.approx(2 * half_width, rel=0.2)
    assert estimate.low < estimate.value < estimate.high
    assert bootstrap_ratio(outcomes, seed=1) == estimate  # seeded: reproducible
    assert str(estimate).startswith(f"{estimate.value:.3f} [")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"numerators": [], "denominators": []}, "sum to 0"),
        ({"numerators": [1.0], "denominators": [1.0, 2.0]}, "denominators"),
        ({"numerators": [1.0], "denominators": [-1.0]}, ">= 0"),
        ({"numerators": [1.0], "resamples": 0}, "resamples"),
        ({"numerators": [1.0], "level": 1.0}, "level"),
    ],
)
def test_bootstrap_rejects_what_it_cannot_estimate(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ratio(**kwargs)
