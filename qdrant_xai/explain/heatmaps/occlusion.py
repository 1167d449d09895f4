"""Image heatmaps by perturbation: sliding occlusion and RISE (black-box, slow, faithful).

Sliding occlusion — Zeiler & Fergus, *Visualizing and Understanding Convolutional
Networks*, ECCV 2014, https://arxiv.org/abs/1311.2901. A window of ``k x k`` patches slides
over the patch grid with a stride of one patch; the window's pixels are set to 0 in the
model's input space (the dataset mean colour) and ``s = cos(image, t)`` is measured again::

    h_cell = mean over windows W ∋ cell of  s(x) − s(x with W removed)

RISE — Petsiuk, Das, Saenko, *RISE: Randomized Input Sampling for Explanation of Black-box
Models*, BMVC 2018, https://arxiv.org/abs/1806.07421. ``M`` random binary masks at grid
resolution (each cell kept with probability ``p``, optionally upsampled bilinearly and
randomly shifted as in the paper, so edges are soft) multiply the input; with
``s_m = cos(x ⊙ mask_m, t)`` the paper's estimate is ``h = Σ_m s_m · mask_m / (M · p)``
(``E[s | cell kept]``, always positive). The default, centred variant subtracts
``E[s | cell removed]``, a signed estimate of the cell's effect with no constant offset::

    h_c = Σ_m s_m m_mc / Σ_m m_mc − Σ_m s_m (1 − m_mc) / Σ_m (1 − m_mc)

with ``m_mc`` the mean of mask ``m`` over cell ``c``. Both score the model itself, not a
linearisation of it, which makes them the reference other methods are checked against; the
price is many forward passes per hit. All variants of all hits go through
:meth:`~qdrant_xai.ClipEncoder.embed_pixels` in chunks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F

from qdrant_xai.errors import FeaturesMissingError
from qdrant_xai.explain.base import HeatmapMethod, ImageEvidence, register_heatmap_method

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["ImageOcclusion", "rise_masks", "sliding_windows"]


def sliding_windows(grid: tuple[int, int], window: int) -> np.ndarray:
    """Every ``window x window`` block of a patch grid, stride one patch.

    Returns:
        [W, gh, gw] bool, ``W = (gh − window + 1) · (gw − window + 1)``; True = removed.
    """
    gh, gw = grid
    if not 1 <= window <= min(gh, gw):
        raise ValueError(f"window must be between 1 and {min(gh, gw)} patches, got {window}")
    masks = []
    for row in range(gh - window + 1):
        for col in range(gw - window + 1):
            mask = np.zeros((gh, gw), dtype=bool)
            mask[row : row + window, col : col + window] = True
            masks.append(mask)
    return np.stack(masks)


def rise_masks(
    grid: tuple[int, int],
    image_size: tuple[int, int],
    count: int,
    *,
    keep: float = 0.5,
    smooth: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """RISE's random masks at pixel resolution (1 = kept, 0 = removed).

    Args:
        grid: (gh, gw) cells of the random binary grid (the patch grid).
        image_size: (H, W) model input size.
        count: number of masks ``M``.
        keep: probability ``p`` that a cell is kept.
        smooth: as in the paper, draw a ``(gh+1) x (gw+1)`` grid, upsample it bilinearly
            and crop at a random sub-cell shift (soft, unaligned edges); otherwise each
            patch is kept or removed whole.
        seed: random seed (same seed, same masks).

    Returns:
        [M, H, W] float32 masks.
    """
    gh, gw = grid
    height, width = image_size
    rng = np.random.default_rng(seed)
    if not smooth:
        return _upsample((rng.random((count, gh, gw)) < keep).astype(np.float32), image_size)
    cell_h, cell_w = -(-height // gh), -(-width // gw)
    cells = (rng.random((count, 1, gh + 1, gw + 1)) < keep).astype(np.float32)
    up = F.interpolate(
        torch.from_numpy(cells),
        size=((gh + 1) * cell_h, (gw + 1) * cell_w),
        mode="bilinear",
        align_corners=False,
    ).numpy()[:, 0]
    dy = rng.integers(0, cell_h, size=count)
    dx = rng.integers(0, cell_w, size=count)
    return np.stack(
        [up[m, dy[m] : dy[m] + height, dx[m] : dx[m] + width] for m in range(count)]
    ).astype(np.float32)


@register_heatmap_method
class ImageOcclusion(HeatmapMethod):
    """Sliding-window occlusion (Zeiler & Fergus 2014) or RISE (Petsiuk et al. 2018).

    Reads the image and runs the model on perturbed copies of it: slow, but it measures
    the model itself, so it is the faithful reference for the stored-feature methods.
    Cost per hit: ``(gh − k + 1)(gw − k + 1) + 1`` forward passes for sliding occlusion
    (50 for ViT-B/32 with ``k = 1``), ``M`` for RISE. Unreliable where removing a region
    is itself a signal (a grey square can look like an object) and, for sliding occlusion,
    for objects larger than the window, whose patches can stand in for each other (each
    removal alone changes little). RISE's map is a Monte-Carlo estimate: noisy for small
    ``M``.

    Args:
        mode: ``"sliding"`` or ``"rise"``.
        window: side of the sliding window in patches.
        masks: RISE's number of random masks ``M``.
        keep: RISE's probability ``p`` of keeping a cell.
        smooth: RISE's soft, randomly shifted masks (see :func:`rise_masks`).
        centred: RISE's signed estimate ``E[s | kept] − E[s | removed]`` (default), or the
            paper's ``Σ_m s_m · mask_m / (M · p)`` when False.
        seed: RISE's random seed.
        max_batch: perturbed images per forward pass.
    """

    name = "occlusion"
    requires = (frozenset({"images"}),)
    cost = "(gh-k+1)(gw-k+1)+1 forwards per hit (sliding), M forwards per hit (RISE)"

    def __init__(
        self,
        *,
        mode: Literal["sliding", "rise"] = "sliding",
        window: int = 1,
        masks: int = 256,
        keep: float = 0.5,
        smooth: bool = False,
        centred: bool = True,
        seed: int = 0,
        max_batch: int = 64,
    ) -> None:
        if mode not in ("sliding", "rise"):
            raise ValueError(f"mode must be 'sliding' or 'rise', got {mode!r}")
        if window < 1:
            raise ValueError(f"window must be at least 1 patch, got {window}")
        if masks < 1:
            raise ValueError(f"masks must be at least 1, got {masks}")
        if not 0.0 < keep < 1.0:
            raise ValueError(f"keep must be strictly between 0 and 1, got {keep}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.mode = mode
        self.window = window
        self.masks = masks
        self.keep = keep
        self.smooth = smooth
        self.centred = centred
        self.seed = seed
        self.max_batch = max_batch

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        if evidence.images is None:
            raise FeaturesMissingError("occlusion needs the images (it perturbs their pixels)")
        gh, gw = encoder.grid
        n = len(evidence.images)
        if n == 0:
            return np.zeros((0, gh, gw), dtype=np.float32)
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = np.broadcast_to(queries, (n, queries.shape[0]))
        pixels = encoder.pixel_values(evidence.images)  # [N, 3, H, W]
        height, width = int(pixels.shape[2]), int(pixels.shape[3])
        if self.mode == "sliding":
            removed = sliding_windows((gh, gw), self.window)  # [W, gh, gw]
            cells = removed.astype(np.float32)
            # keep-masks at pixel resolution, the original image first
            keep = 1.0 - _upsample(cells, (height, width))
            keep = np.concatenate([np.ones((1, height, width), dtype=np.float32), keep])
        else:
            keep = rise_masks(
                (gh, gw),
                (height, width),
                self.masks,
                keep=self.keep,
                smooth=self.smooth,
                seed=self.seed,
            )
        scores = self._scores(encoder, pixels, keep, queries)  # [N, V]
        if self.mode == "sliding":
            drops = scores[:, :1] - scores[:, 1:]  # [N, W]
            covered = cells.reshape(len(cells), -1)  # [W, gh*gw]
            heat = drops @ covered / covered.sum(axis=0)
            return heat.reshape(n, gh, gw).astype(np.float32)
        kept = _cell_means(keep, (gh, gw)).reshape(len(keep), -1)  # [M, gh*gw]
        if not self.centred:
            heat = scores @ kept / (len(keep) * self.keep)
        else:
            on = scores @ kept / np.maximum(kept.sum(axis=0), 1e-6)
            off = scores @ (1.0 - kept) / np.maximum((1.0 - kept).sum(axis=0), 1e-6)
            heat = on - off
        return heat.reshape(n, gh, gw).astype(np.float32)

    def _scores(
        self, encoder: ClipEncoder, pixels: torch.Tensor, keep: np.ndarray, queries: np.ndarray
    ) -> np.ndarray:
        """[N, V] ``cos(image_n ⊙ keep_v, query_n)`` for every hit and variant, chunked."""
        n, variants = int(pixels.shape[0]), len(keep)
        masks = torch.from_numpy(keep).to(device=pixels.device, dtype=pixels.dtype)
        pairs = np.arange(n * variants)
        scores = np.empty(n * variants, dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(pairs), self.max_batch):
                chunk = pairs[start : start + self.max_batch]
                hit = torch.from_numpy(chunk // variants)
                variant = torch.from_numpy(chunk % variants)
                batch = pixels[hit] * masks[variant].unsqueeze(1)
                embeds = encoder.embed_pixels(batch, batch_size=self.max_batch)
                scores[chunk] = np.einsum("bp,bp->b", embeds, queries[chunk // variants])
        return scores.reshape(n, variants)

    def __repr__(self) -> str:
        if self.mode == "sliding":
            return f"ImageOcclusion(mode='sliding', window={self.window})"
        return (
            f"ImageOcclusion(mode='rise', masks={self.masks}, keep={self.keep}, "
            f"smooth={self.smooth}, centred={self.centred}, seed={self.seed})"
        )


def _upsample(cells: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[K, gh, gw] cell values -> [K, H, W], each pixel taking its patch's value."""
    gh, gw = cells.shape[1:]
    height, width = size
    rows = np.arange(height) * gh // height
    cols = np.arange(width) * gw // width
    return cells[:, rows][:, :, cols]


def _cell_means(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """[M, H, W] pixel masks -> [M, gh, gw] mean over each patch cell."""
    gh, gw = grid
    height, width = masks.shape[1:]
    rows = np.arange(height) * gh // height
    cols = np.arange(width) * gw // width
    row_starts = np.searchsorted(rows, np.arange(gh))
    col_starts = np.searchsorted(cols, np.arange(gw))
    sums = np.add.reduceat(np.add.reduceat(masks, row_starts, axis=1), col_starts, axis=2)
    area = np.outer(np.bincount(rows, minlength=gh), np.bincount(cols, minlength=gw))
    return (sums / area).astype(np.float32)
