"""True-vs-foil AUC of word attributions, and bootstrap confidence intervals.

A *foil caption* names an image with one content word swapped so that its phrase is
false for the image ("a blue circle" where the circle is red); its other content words
stay true. A faithful word method scores a true content word above the foil word. Pooled
over every (true word, foil word) pair of every caption,

    AUC = P(a_true > a_foil)   (ties count 1/2)

0.5 is chance, 1 a method that always ranks the foil below every true word (the
Mann-Whitney statistic per caption, pooled as a ratio of sums, so a caption with more
true words weighs more).

The confidence intervals resample *captions* (the pairs of one caption are not
independent): a percentile bootstrap of the ratio of sums.

Use::

    from qdrant_xai.eval import foil_auc
    auc = foil_auc(scores, foil_indices, true_indices)   # an Estimate
    print(f"{auc.value:.3f} [{auc.low:.3f}, {auc.high:.3f}]")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Estimate", "bootstrap_ratio", "foil_auc", "foil_wins"]

#: bootstrap resamples of :func:`bootstrap_ratio` unless told
DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A rate with its bootstrap confidence interval.

    Attributes:
        value: the rate on the whole sample.
        low, high: the bounds of the percentile interval at ``level``.
        n: the number of units resampled (captions).
        level: the interval's coverage, e.g. 0.95.
    """

    value: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def foil_wins(
    scores: Sequence[float] | np.ndarray, foil_index: int, true_indices: Sequence[int]
) -> tuple[float, int]:
    """How often the true content words of one caption outscore its foil word.

    Args:
        scores: [n_words] attributions of the foil caption's words.
        foil_index: the foil word's index.
        true_indices: the indices of the caption's other content words (true for the image).

    Returns:
        ``(wins, pairs)``: wins counts each true word scored above the foil as 1 and a tie
        as 1/2; ``pairs`` is ``len(true_indices)``.
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(values)
    if not 0 <= foil_index < n:
        raise ValueError(f"foil_index {foil_index} is outside the caption's {n} words")
    true = np.asarray(list(true_indices), dtype=np.int64)
    if true.size and (true.min() < 0 or true.max() >= n):
        raise ValueError(f"true_indices {tuple(true.tolist())} reach outside the {n} words")
    if foil_index in set(true.tolist()):
        raise ValueError(f"word {foil_index} cannot be both the foil and a true word")
    if not np.isfinite(values).all():
        raise ValueError("scores contain NaN or infinite values")
    foil = values[foil_index]
    others = values[true]
    return float((others > foil).sum() + 0.5 * (others == foil).sum()), int(true.size)


def foil_auc(
    scores: Sequence[Sequence[float] | np.ndarray],
    foil_indices: Sequence[int],
    true_indices: Sequence[Sequence[int]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Pooled true-vs-foil AUC over captions, with a bootstrap interval over captions.

    Args:
        scores: per foil caption, [n_words] word attributions.
        foil_indices: per caption, the foil word's index.
        true_indices: per caption, the indices of its true content words.
        resamples, level, seed: see :func:`bootstrap_ratio`.
    """
    if not len(scores) == len(foil_indices) == len(true_indices):
        raise ValueError(
            f"got {len(scores)} score arrays, {len(foil_indices)} foil indices and "
            f"{len(true_indices)} lists of true indices; need one of each per caption"
        )
    counted = [
        foil_wins(s, f, t) for s, f, t in zip(scores, foil_indices, true_indices, strict=True)
    ]
    wins = np.array([w for w, _ in counted], dtype=np.float64)
    pairs = np.array([p for _, p in counted], dtype=np.float64)
    return bootstrap_ratio(wins, pairs, resamples=resamples, level=level, seed=seed)


def bootstrap_ratio(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray | None = None,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """``Σ numerators / Σ denominators`` and its percentile bootstrap interval.

    Units (one numerator and one denominator each, e.g. a caption's wins and pairs) are
    resampled with replacement. Without ``denominators`` every unit counts 1: the
    interval of a mean, e.g. of 0/1 outcomes (a rate such as "content word first").

    Args:
        numerators: [n] per unit.
        denominators: [n] per unit, non-negative, with a positive sum; default all 1.
        resamples: bootstrap resamples (at least 1).
        level: coverage of the interval, in (0, 1).
        seed: seed of the resampling.
    """
    top = np.asarray(numerators, dtype=np.float64).reshape(-1)
    bottom = (
        np.ones_like(top)
        if denominators is None
        else np.asarray(denominators, dtype=np.float64).reshape(-1)
    )
    if top.shape != bottom.shape:
        raise ValueError(f"got {top.size} numerators but {bottom.size} denominators")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not (np.isfinite(top).all() and np.isfinite(bottom).all()) or (bottom < 0).any():
        raise ValueError("numerators and denominators must be finite, denominators >= 0")
    if bottom.sum() <= 0:
        raise ValueError("nothing to estimate: the denominators sum to 0 (no units or pairs)")
    value = float(top.sum() / bottom.sum())
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, top.size, size=(resamples, top.size))
    sums = bottom[draws].sum(axis=1)
    ratios = top[draws].sum(axis=1) / np.where(sums > 0, sums, np.nan)
    ratios = ratios[np.isfinite(ratios)]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail]) if ratios.size else (value, value)
    return Estimate(value=value, low=float(low), high=float(high), n=int(top.size), level=level)
