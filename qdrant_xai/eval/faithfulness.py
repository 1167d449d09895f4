"""Faithfulness and localisation metrics for heatmaps and word attributions.

Two questions, two families of metrics.

**Does the heatmap point at the right thing?** (needs a ground-truth mask or box)

* :func:`pointing_game` — Zhang, Lin, Brandt, Shen, Sclaroff, *Top-down Neural Attention by
  Excitation Backprop*, ECCV 2016, https://arxiv.org/abs/1608.00507. A hit when the hottest
  grid cell overlaps the object. Accuracy over many queries: **higher is better** (compare
  with :func:`random_heatmaps` and :func:`centre_prior`).
* :func:`energy_pointing_game` — Wang et al., *Score-CAM: Score-Weighted Visual Explanations
  for Convolutional Neural Networks*, CVPR Workshops 2020, https://arxiv.org/abs/1910.01279.
  ``Σ_{p∈mask} h⁺(p) / Σ_p h⁺(p)`` with ``h⁺ = max(h, 0)`` upsampled to the pixels the grid
  covers: the share of the positive evidence that lies on the object, in [0, 1]. **Higher is
  better**; a uniform map scores the object's area fraction.

**Does the explanation reflect what the model uses?** (no ground truth; perturbs the input)

* :func:`deletion_auc` / :func:`insertion_auc` — Petsiuk, Das, Saenko, *RISE: Randomized
  Input Sampling for Explanation of Black-box Models*, BMVC 2018,
  https://arxiv.org/abs/1806.07421. Patches are removed from the image (deletion: set to 0,
  the dataset mean colour in model-input space) or inserted into a blurred copy of it
  (insertion), hottest first, and ``s = cos(embed(perturbed image), query)`` is recorded
  after each step. The area under the curve over the removed/inserted fraction summarises
  it. **Deletion: lower is better** (the score should collapse once the evidence is gone);
  **insertion: higher is better** (the score should recover from the first few patches).
  The curves themselves: :mod:`qdrant_xai.eval.curves`.
* :func:`comprehensiveness` / :func:`sufficiency` — DeYoung et al., *ERASER: A Benchmark to
  Evaluate Rationalized NLP Models*, ACL 2020, https://arxiv.org/abs/1911.03429. For each bin
  fraction ``k`` the top ``⌈k·n⌉`` words ``r_k`` by attribution;
  ``comp = mean_k [s(x) − s(x ∖ r_k)]`` and ``suff = mean_k [s(x) − s(r_k)]`` with
  ``s = cos(embed(text), target)``. **Comprehensiveness: higher is better** (removing the
  top words hurts); **sufficiency: lower is better** (the top words alone keep the score).

All scores are cosine similarities, not class probabilities: differences are in cosine
points and depend on the model's similarity scale, so compare methods on the same model and
data, against the baselines here, never across models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from qdrant_xai.encoding.words import split_words, text_without
from qdrant_xai.eval.curves import FaithfulnessCurve, deletion_curves, insertion_curves, unit_rows

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = [
    "DEFAULT_BINS",
    "WordFaithfulness",
    "centre_prior",
    "comprehensiveness",
    "deletion_auc",
    "energy_pointing_game",
    "insertion_auc",
    "pointing_game",
    "random_heatmaps",
    "sufficiency",
    "word_faithfulness",
]

Box = tuple[int, int, int, int]

#: ERASER's rationale-length bins (fractions of the words)
DEFAULT_BINS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)


# -- localisation ----------------------------------------------------------------------------


def pointing_game(
    heatmap: np.ndarray,
    mask: np.ndarray | Box,
    *,
    crop_box: Box | None = None,
    image_size: tuple[int, int] | None = None,
    tolerance: int = 0,
) -> bool:
    """Does the heatmap's hottest cell overlap the object? (Zhang et al., ECCV 2016.)

    Args:
        heatmap: [gh, gw] scores over the patch grid.
        mask: the object, either an [H, W] bool pixel mask of the whole image or a box
            ``(x0, y0, x1, y1)`` in image pixels (``x1``, ``y1`` exclusive).
        crop_box: ``(x0, y0, x1, y1)``, the image region the grid covers (CLIP's centre
            crop, see :meth:`ClipEncoder.crop_box`); default: the whole image.
        image_size: ``(W, H)`` of the image; needed only when ``mask`` is a box and no
            ``crop_box`` is given (a pixel mask carries its own size).
        tolerance: pixels by which the hottest cell is grown before testing overlap (the
            original protocol allows 15 pixels around a point).

    Returns:
        True when any of the cells tied for the maximum overlaps the object. A constant map
        ties everywhere and so hits any object inside the crop: compare accuracies with
        :func:`random_heatmaps`, not with zero.
    """
    heat = _check_heatmap(heatmap)
    inside = _mask_in_crop(mask, crop_box, image_size)  # [ch, cw]
    rows, cols = np.nonzero(heat == heat.max())
    gh, gw = heat.shape
    ch, cw = inside.shape
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        top = max(0, math.floor(row * ch / gh) - tolerance)
        bottom = min(ch, math.ceil((row + 1) * ch / gh) + tolerance)
        left = max(0, math.floor(col * cw / gw) - tolerance)
        right = min(cw, math.ceil((col + 1) * cw / gw) + tolerance)
        if inside[top:bottom, left:right].any():
            return True
    return False


def energy_pointing_game(
    heatmap: np.ndarray,
    mask: np.ndarray | Box,
    *,
    crop_box: Box | None = None,
    image_size: tuple[int, int] | None = None,
    upsample: Literal["nearest", "bilinear"] = "nearest",
) -> float:
    """Share of the positive heatmap energy on the object (Wang et al., CVPR-W 2020).

    Args:
        heatmap: [gh, gw] scores over the patch grid.
        mask: [H, W] bool pixel mask of the image, or a box ``(x0, y0, x1, y1)``.
        crop_box: the image region the grid covers; default: the whole image.
        image_size: ``(W, H)``; needed only for a box mask without ``crop_box``.
        upsample: how the clipped map is spread over the crop's pixels: ``"nearest"``
            (each cell's energy spread evenly over its pixels, exact to the grid: a map that
            is the indicator of the cells a mask fills scores 1.0) or ``"bilinear"`` (as in
            Score-CAM's saliency maps; leaks a little energy across cell borders).

    Returns:
        ``Σ_{p∈mask} h⁺(p) / Σ_p h⁺(p)`` in [0, 1]; 0.0 when no cell is positive.
    """
    heat = _check_heatmap(heatmap)
    inside = _mask_in_crop(mask, crop_box, image_size)
    positive = np.clip(heat, 0.0, None)
    if not positive.any():
        return 0.0
    if upsample == "nearest":
        gh, gw = heat.shape
        ch, cw = inside.shape
        rows = np.minimum(np.arange(ch) * gh // ch, gh - 1)
        cols = np.minimum(np.arange(cw) * gw // cw, gw - 1)
        dense = positive[rows[:, None], cols[None, :]]
    elif upsample == "bilinear":
        dense = (
            torch.nn.functional.interpolate(
                torch.from_numpy(positive.astype(np.float32))[None, None],
                size=inside.shape,
                mode="bilinear",
                align_corners=False,
            )[0, 0]
            .clamp_min(0.0)
            .numpy()
        )
    else:
        raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
    total = float(dense.sum(dtype=np.float64))
    if total <= 0.0:
        return 0.0
    return float(dense[inside].sum(dtype=np.float64)) / total


def _check_heatmap(heatmap: np.ndarray) -> np.ndarray:
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D [gh, gw] array, got shape {heat.shape}")
    if not np.isfinite(heat).all():
        raise ValueError("heatmap contains NaN or infinite values")
    return heat


def _check_box(box: Sequence[Any] | np.ndarray, what: str) -> Box:
    if len(box) != 4:
        raise ValueError(f"{what} must be (x0, y0, x1, y1), got {tuple(box)!r}")
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"{what} {tuple(box)!r} is empty: need x0 < x1 and y0 < y1")
    return (x0, y0, x1, y1)


def _mask_in_crop(
    mask: np.ndarray | Box, crop_box: Box | None, image_size: tuple[int, int] | None
) -> np.ndarray:
    """The object as a bool [crop_h, crop_w] array over the crop's pixels (outside = False)."""
    if isinstance(mask, np.ndarray) and mask.ndim != 1:
        if mask.ndim != 2:
            raise ValueError(
                f"mask must be a 2-D [H, W] pixel mask or a box (x0, y0, x1, y1), "
                f"got an array of shape {mask.shape}"
            )
        height, width = mask.shape
        if image_size is not None and tuple(image_size) != (width, height):
            raise ValueError(
                f"image_size {tuple(image_size)} (W, H) does not match the mask's {(width, height)}"
            )
        x0, y0, x1, y1 = (
            _check_box(crop_box, "crop_box") if crop_box is not None else (0, 0, width, height)
        )
        inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        top, left = max(y0, 0), max(x0, 0)
        bottom, right = min(y1, height), min(x1, width)
        if bottom > top and right > left:
            inside[top - y0 : bottom - y0, left - x0 : right - x0] = mask[
                top:bottom, left:right
            ].astype(bool)
        return inside
    box = _check_box(mask, "mask box")
    if crop_box is None:
        if image_size is None:
            raise ValueError(
                "a box mask needs crop_box or image_size=(W, H) to know what the grid covers"
            )
        width, height = (int(v) for v in image_size)
        crop_box = (0, 0, width, height)
    x0, y0, x1, y1 = _check_box(crop_box, "crop_box")
    inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    bx0, by0, bx1, by1 = box
    top, left = max(by0, y0) - y0, max(bx0, x0) - x0
    bottom, right = min(by1, y1) - y0, min(bx1, x1) - x0
    if bottom > top and right > left:
        inside[top:bottom, left:right] = True
    return inside


def deletion_auc(
    encoder: ClipEncoder,
    images: Sequence[Any] | torch.Tensor,
    heatmaps: np.ndarray,
    queries: np.ndarray,
    *,
    normalised: bool = False,
    **options: Any,
) -> np.ndarray:
    """[N] deletion AUCs (``normalised_auc`` when ``normalised``); lower is better."""
    curves = deletion_curves(encoder, images, heatmaps, queries, **options)
    return _aucs(curves, normalised)


def insertion_auc(
    encoder: ClipEncoder,
    images: Sequence[Any] | torch.Tensor,
    heatmaps: np.ndarray,
    queries: np.ndarray,
    *,
    normalised: bool = False,
    **options: Any,
) -> np.ndarray:
    """[N] insertion AUCs (``normalised_auc`` when ``normalised``); higher is better."""
    curves = insertion_curves(encoder, images, heatmaps, queries, **options)
    return _aucs(curves, normalised)


def _aucs(curves: list[FaithfulnessCurve], normalised: bool) -> np.ndarray:
    values = [c.normalised_auc if normalised else c.auc for c in curves]
    return np.asarray(values, dtype=np.float64)


# -- word metrics ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class WordFaithfulness:
    """ERASER's two scores per text and bin.

    Attributes:
        bins: the bin fractions ``k``.
        comprehensiveness: [N, n_bins] ``s(x) − s(x without the top ⌈k·n⌉ words)``.
        sufficiency: [N, n_bins] ``s(x) − s(only the top ⌈k·n⌉ words)``.
        full_scores: [N] ``s(x)``.
    """

    bins: tuple[float, ...]
    comprehensiveness: np.ndarray
    sufficiency: np.ndarray
    full_scores: np.ndarray


def word_faithfulness(
    encoder: ClipEncoder,
    texts: Sequence[str],
    scores: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    bins: Sequence[float] = DEFAULT_BINS,
    max_batch: int = 256,
) -> WordFaithfulness:
    """Comprehensiveness and sufficiency per bin, from one batched pass over every variant.

    Args:
        encoder: the CLIP encoder.
        texts: N texts.
        scores: N arrays [n_words], aligned with :func:`qdrant_xai.encoding.words.split_words`; the
            top words are the highest scores (ties: the earlier word first).
        targets: [N, P] (or [P] shared) embeddings of the other side of each pair.
        bins: fractions of the words in a rationale (each rationale has at least 1 word).
        max_batch: texts per forward pass; distinct variants are embedded once.
    """
    if not bins or any(not 0.0 < float(k) <= 1.0 for k in bins):
        raise ValueError(f"bins must be fractions in (0, 1], got {tuple(bins)!r}")
    if len(scores) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(scores)} score arrays")
    n = len(texts)
    target = unit_rows(targets, n, encoder.dim, "targets")
    variants: list[str] = []
    index: dict[str, int] = {}

    def slot(text: str) -> int:
        """Index of ``text`` among the distinct variants (added on first sight)."""
        if text not in index:
            index[text] = len(variants)
            variants.append(text)
        return index[text]

    full, without, only = [], [], []
    for i, (text, score) in enumerate(zip(texts, scores, strict=True)):
        words = split_words(text)
        if not words:
            raise ValueError(f"text {i} ({text!r}) has no words to attribute")
        s = np.asarray(score, dtype=np.float64)
        if s.shape != (len(words),):
            raise ValueError(
                f"scores[{i}] has shape {s.shape} but text {i} has {len(words)} words "
                f"(split_words): {[w.text for w in words]}"
            )
        ranked = np.argsort(-s, kind="stable")
        full.append(slot(text))
        row_without, row_only = [], []
        for k in bins:
            m = min(len(words), max(1, math.ceil(float(k) * len(words) - 1e-9)))
            top = sorted(ranked[:m].tolist())
            row_without.append(slot(text_without(text, [words[j] for j in top])))
            row_only.append(slot(" ".join(words[j].text for j in top)))
        without.append(row_without)
        only.append(row_only)

    embeds = (
        np.concatenate(
            [
                encoder.embed_texts(variants[i : i + max_batch])
                for i in range(0, len(variants), max_batch)
            ]
        )
        if variants
        else np.zeros((0, encoder.dim), dtype=np.float32)
    )
    sims = embeds.astype(np.float64) @ target.T  # [V, N]
    rows = np.arange(n)
    s_full = sims[np.asarray(full, dtype=np.int64), rows] if n else np.zeros(0)
    s_without = sims[np.asarray(without, dtype=np.int64).reshape(n, len(bins)), rows[:, None]]
    s_only = sims[np.asarray(only, dtype=np.int64).reshape(n, len(bins)), rows[:, None]]
    return WordFaithfulness(
        bins=tuple(float(k) for k in bins),
        comprehensiveness=s_full[:, None] - s_without,
        sufficiency=s_full[:, None] - s_only,
        full_scores=s_full,
    )


def comprehensiveness(
    encoder: ClipEncoder,
    texts: Sequence[str],
    scores: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    bins: Sequence[float] = DEFAULT_BINS,
    max_batch: int = 256,
) -> np.ndarray:
    """[N] ERASER comprehensiveness: mean over bins of ``s(x) − s(x ∖ top words)``.

    Higher is better: deleting the words the attribution ranks highest should cost score.
    """
    result = word_faithfulness(encoder, texts, scores, targets, bins=bins, max_batch=max_batch)
    return result.comprehensiveness.mean(axis=1)


def sufficiency(
    encoder: ClipEncoder,
    texts: Sequence[str],
    scores: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    bins: Sequence[float] = DEFAULT_BINS,
    max_batch: int = 256,
) -> np.ndarray:
    """[N] ERASER sufficiency: mean over bins of ``s(x) − s(top words only)``.

    Lower is better: the top-ranked words alone, in reading order, should keep the score.
    """
    result = word_faithfulness(encoder, texts, scores, targets, bins=bins, max_batch=max_batch)
    return result.sufficiency.mean(axis=1)


# -- baselines -----------------------------------------------------------------------------------


def random_heatmaps(n: int, grid: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """[n, gh, gw] float32 i.i.d. standard-normal maps: the chance baseline."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gh, gw = grid
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, gh, gw)).astype(np.float32)


def centre_prior(grid: tuple[int, int], *, sigma: float = 0.25) -> np.ndarray:
    """[gh, gw] float32 Gaussian centred on the grid, peak 1.

    Objects sit near the centre more often than not in most photo collections (and the
    crop favours the centre), so a heatmap method should beat this map, not just chance.

    Args:
        grid: ``(gh, gw)``.
        sigma: standard deviation as a fraction of each side.
    """
    gh, gw = grid
    if gh < 1 or gw < 1 or sigma <= 0:
        raise ValueError(f"need a non-empty grid and sigma > 0, got grid={grid}, sigma={sigma}")
    y = (np.arange(gh) + 0.5) / gh - 0.5
    x = (np.arange(gw) + 0.5) / gw - 0.5
    heat = np.exp(-0.5 * ((y[:, None] / sigma) ** 2 + (x[None, :] / sigma) ** 2))
    return heat.astype(np.float32)
