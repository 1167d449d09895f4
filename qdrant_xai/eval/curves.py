"""Deletion and insertion curves (RISE): how a match's score moves as its evidence goes.

Petsiuk, Das, Saenko, *RISE: Randomized Input Sampling for Explanation of Black-box Models*,
BMVC 2018, https://arxiv.org/abs/1806.07421. Patches are removed from the image (deletion:
set to 0, the dataset mean colour in model-input space) or inserted into a blurred copy of it
(insertion), hottest first, and ``s = cos(embed(perturbed image), query)`` is recorded after
each step; every variant of every image goes through the encoder in shared batches. The
area under the curve summarises it (:func:`qdrant_xai.eval.faithfulness.deletion_auc`,
:func:`~qdrant_xai.eval.faithfulness.insertion_auc`): **deletion: lower is better**,
**insertion: higher is better**.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["FaithfulnessCurve", "deletion_curves", "insertion_curves", "unit_rows"]


@dataclass(frozen=True, eq=False)
class FaithfulnessCurve:
    """One image's deletion or insertion curve.

    Attributes:
        kind: ``"deletion"`` or ``"insertion"``.
        fractions: [K] fraction of the grid cells removed (deletion) or inserted
            (insertion), increasing from 0 to 1.
        scores: [K] ``cos(embed(perturbed image), query)`` at each fraction.
        auc: trapezoidal area under ``scores`` over ``fractions`` (in cosine units).
        full_score: the score of the unperturbed image (deletion's first point,
            insertion's last).
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: float
    full_score: float

    @property
    def normalised_auc(self) -> float:
        """``auc / full_score``: the area of the curve of scores relative to the unperturbed
        image's, so images with different match strengths compare on one scale (1.0 = the
        score never moved). Meaningful only when ``full_score`` is clearly positive (the
        image matches the query); NaN when it is not positive."""
        if self.full_score <= 0.0:
            return float("nan")
        return self.auc / self.full_score


def deletion_curves(
    encoder: ClipEncoder,
    images: Sequence[Any] | torch.Tensor,
    heatmaps: np.ndarray,
    queries: np.ndarray,
    *,
    steps: int | None = None,
    max_batch: int = 64,
) -> list[FaithfulnessCurve]:
    """RISE deletion: remove the hottest patches first and watch the score fall.

    A removed patch is set to 0 in :meth:`ClipEncoder.pixel_values` space, the dataset mean
    colour. Lower AUC is better.

    Args:
        encoder: the model the heatmaps explain.
        images: N images (anything :meth:`ClipEncoder.pixel_values` takes), or their
            [N, 3, H, W] pixel values.
        heatmaps: [N, gh, gw] with the encoder's grid; ties are broken in raster order.
        queries: [N, P] or [P] query embeddings (normalised here).
        steps: number of removal steps, evenly spaced in cells (K = steps + 1 points,
            fewer if cells repeat); default one step per cell.
        max_batch: perturbed images per forward pass (all variants of all images share
            the passes).

    Returns:
        N curves.
    """
    return _curves("deletion", encoder, images, heatmaps, queries, steps, max_batch, None)


def insertion_curves(
    encoder: ClipEncoder,
    images: Sequence[Any] | torch.Tensor,
    heatmaps: np.ndarray,
    queries: np.ndarray,
    *,
    steps: int | None = None,
    max_batch: int = 64,
    blur_sigma: float | None = None,
) -> list[FaithfulnessCurve]:
    """RISE insertion: paste the hottest patches first into a blurred canvas.

    The canvas is a Gaussian blur of the image (as in RISE, which starts from a blurred
    image rather than a blank one: a blank canvas makes the first inserted patches
    out-of-distribution islands, a blurred one keeps the image's layout and colours while
    removing detail). Pass ``blur_sigma=0`` to start from all zeros (the mean colour)
    instead. Higher AUC is better.

    Args:
        encoder, images, heatmaps, queries, steps, max_batch: as :func:`deletion_curves`.
        blur_sigma: the canvas' Gaussian σ in model-input pixels; default one patch side
            (32 px for ViT-B/32 at 224, 8 px for the 64 px shapes model); ``0`` = zeros.

    Returns:
        N curves (the first point scores the canvas, the last the unperturbed image).
    """
    return _curves("insertion", encoder, images, heatmaps, queries, steps, max_batch, blur_sigma)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _curves(
    kind: str,
    encoder: ClipEncoder,
    images: Sequence[Any] | torch.Tensor,
    heatmaps: np.ndarray,
    queries: np.ndarray,
    steps: int | None,
    max_batch: int,
    blur_sigma: float | None,
) -> list[FaithfulnessCurve]:
    heat = np.asarray(heatmaps, dtype=np.float64)
    gh, gw = encoder.grid
    if heat.ndim != 3 or heat.shape[1:] != (gh, gw):
        raise ValueError(
            f"heatmaps must be [N, gh, gw] with the encoder's grid {(gh, gw)}, "
            f"got shape {heat.shape}"
        )
    if not np.isfinite(heat).all():
        raise ValueError("heatmaps contain NaN or infinite values")
    n = heat.shape[0]
    if len(images) != n:
        raise ValueError(f"got {len(images)} images but {n} heatmaps")
    query = unit_rows(queries, n, encoder.dim)
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    cells = gh * gw
    if steps is None:
        steps = cells
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    counts = np.unique(np.round(np.linspace(0, cells, steps + 1)).astype(np.int64))
    fractions = counts / cells
    if n == 0:
        return []

    pixels = images if isinstance(images, torch.Tensor) else encoder.pixel_values(list(images))
    pixels = pixels.to(device=encoder.device, dtype=encoder.dtype)
    height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
    # rank[i, cell] = position of the cell in image i's order (0 = hottest)
    order = np.argsort(-heat.reshape(n, cells), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(cells)[None, :].repeat(n, axis=0), axis=1)
    rank_t = torch.from_numpy(rank).to(encoder.device)
    # each pixel's cell (pixels past the last full patch belong to the last cell)
    cell_h, cell_w = height // gh, width // gw
    pixel_row = torch.clamp(torch.arange(height) // max(cell_h, 1), max=gh - 1)
    pixel_col = torch.clamp(torch.arange(width) // max(cell_w, 1), max=gw - 1)
    pixel_cell = (pixel_row[:, None] * gw + pixel_col[None, :]).to(encoder.device)  # [H, W]

    if kind == "insertion":
        sigma = float(cell_h if blur_sigma is None else blur_sigma)
        canvas = _gaussian_blur(pixels, sigma) if sigma > 0 else torch.zeros_like(pixels)

    jobs_image = np.repeat(np.arange(n), len(counts))
    jobs_count = np.tile(counts, n)
    embeds = []
    with torch.inference_mode():
        for start in range(0, len(jobs_image), max_batch):
            idx = torch.from_numpy(jobs_image[start : start + max_batch]).to(encoder.device)
            cnt = torch.from_numpy(jobs_count[start : start + max_batch]).to(encoder.device)
            # [B, H, W]: True where the pixel's cell is among the first `cnt` of its image
            taken = rank_t[idx][:, pixel_cell] < cnt[:, None, None]
            taken = taken[:, None].to(pixels.dtype)
            if kind == "deletion":
                batch = pixels[idx] * (1.0 - taken)
            else:
                base = canvas[idx]
                batch = base + (pixels[idx] - base) * taken
            embeds.append(encoder.embed_pixels(batch, batch_size=max_batch))
    sims = (np.concatenate(embeds) @ query.T) if embeds else np.zeros((0, n))
    scores = sims[np.arange(len(jobs_image)), jobs_image].reshape(n, len(counts))
    curves = []
    for i in range(n):
        s = scores[i].astype(np.float64)
        full = float(s[0] if kind == "deletion" else s[-1])
        curves.append(
            FaithfulnessCurve(
                kind=kind,
                fractions=fractions.copy(),
                scores=s,
                auc=_trapezoid(s, fractions),
                full_score=full,
            )
        )
    return curves


def unit_rows(queries: np.ndarray, n: int, dim: int, name: str = "queries") -> np.ndarray:
    """[N, P] normalised ``name`` (query or target embeddings) from [N, P] or [P] (shared)."""
    q = np.asarray(queries, dtype=np.float64)
    if q.ndim == 1:
        q = np.broadcast_to(q, (n, q.shape[0]))
    if q.ndim != 2 or q.shape != (n, dim):
        raise ValueError(
            f"{name} must be [N, P] = {(n, dim)} or [P] = ({dim},), got shape {np.shape(queries)}"
        )
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"one of the {name} is all zeros")
    return q / norms


def _gaussian_blur(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] with edge replication."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(device=pixels.device, dtype=pixels.dtype)
    channels = int(pixels.shape[1])
    out = pixels
    for shape, pad in (
        ((1, 1, 1, -1), (radius, radius, 0, 0)),
        ((1, 1, -1, 1), (0, 0, radius, radius)),
    ):
        weight = kernel.reshape(shape).repeat(channels, 1, 1, 1)
        out = torch.nn.functional.conv2d(
            torch.nn.functional.pad(out, pad, mode="replicate"), weight, groups=channels
        )
    return out
