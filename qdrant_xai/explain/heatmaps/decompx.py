"""The decompx heatmap: each patch's full share of the embedding, through every layer.

Modarressi, Fayyaz, Aghazadeh, Yaghoobzadeh, Pilehvar, *DecompX: Explaining Transformers
Decisions by Propagating Token Decomposition*, ACL 2023, https://arxiv.org/abs/2306.02873.

:func:`qdrant_xai.encoding.towers.image_source_contributions` splits the image embedding
exactly into per-patch parts ``C_i`` (what flows from patch ``i`` to the class token through
every layer's attention and MLP, also via other tokens), a class-token part and a bias part,
all divided by ``|e|`` so that ``Σ_i C_i + C_cls + C_bias = ê``; for SigLIP,
:func:`qdrant_xai.encoding.siglip_towers.siglip_source_contributions` does the same up to
its attention-pooling head (no class token, ``C_cls = 0``). The default ``decomposition``
heatmap keeps only the direct path and scores ``C_i · t``; its peak tends to land on an
object that shares the query's colour, although the score depends more on the target.

This method scores the **first-order effect of patch i's part on the cosine**::

    h_i = C_i · (t − λ · cos(ê, t) · ê)

With ``λ = 1`` (the default) ``h_i`` is the derivative of ``cos(e, t)`` with respect to a
gate ``g_i`` that scales patch ``i``'s part (``e = Σ_j g_j C_j``, at ``g = 1``): it counts how
patch ``i`` pulls the embedding towards the query *beyond* what its share of the norm would
give. Because the cosine does not change when every part is scaled alike, the gates'
derivatives over all sources sum to zero: ``Σ_i h_i = −(C_cls + C_bias) · (t − cos · ê)``, the
negative of the class token's and the biases' terms. ``λ = 0`` gives ``C_i · t``, each
patch's share of ``cos(ê, t)`` (with the class token's and biases' shares, the map sums to
the cosine); ``0 < λ < 1`` is in between.

Query cost is that of ``decomposition``: one product of stored ``[gh, gw, P]`` parts with a
query-dependent vector. The parts cost about ``2 + gh·gw`` forward passes at indexing time
(ViT-B/32: see the heatmap docs); run from the image, the method computes them per hit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from qdrant_xai.explain.base import (
    HeatmapMethod,
    ImageEvidence,
    register_heatmap_method,
)

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["DecompXHeatmap", "decompx_heatmaps", "source_parts"]

#: floats one propagated forward may hold at the MLP ([B, 2 + N, N, 4·D]); images are
#: batched under it (ViT-B/32: 8 images, ~250 MB in float32)
SOURCE_BUDGET = 64 * 1024 * 1024


def decompx_heatmaps(
    parts: np.ndarray,
    embeddings: np.ndarray,
    queries: np.ndarray,
    *,
    norm_weight: float = 1.0,
) -> np.ndarray:
    """Heatmaps ``h_i = C_i · (t − λ·cos(ê, t)·ê)`` of several images at once.

    Args:
        parts: [N, gh, gw, P] per-patch parts of each image's embedding, divided by its
            norm (:attr:`ImageSourceContributions.patches`).
        embeddings: [N, P] L2-normalised image embeddings ``ê``.
        queries: [N, P] one normalised query embedding per image, or [P] shared by all.
        norm_weight: ``λ``; 1 is the gate derivative of the cosine, 0 the share of it.

    Returns:
        [N, gh, gw] float32 heatmaps (signed).
    """
    parts = np.asarray(parts, dtype=np.float32)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    queries = np.broadcast_to(np.asarray(queries, dtype=np.float32), embeddings.shape)
    if parts.ndim != 4 or parts.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"parts must be [N, gh, gw, P] with N = {embeddings.shape[0]} embeddings, "
            f"got shape {parts.shape}"
        )
    cosines = np.einsum("np,np->n", embeddings, queries)
    direction = queries - norm_weight * cosines[:, None] * embeddings
    return np.einsum("nhwp,np->nhw", parts, direction).astype(np.float32)


def source_parts(encoder: ClipEncoder, images: list[object]) -> tuple[np.ndarray, np.ndarray]:
    """``(parts [N, gh, gw, P], embeddings [N, P])`` of images, computed from their pixels."""
    vision = encoder.model.config.vision_config
    tokens = encoder.vision_tokens
    per_image = (tokens + 1) * tokens * int(vision.intermediate_size)
    step = max(1, SOURCE_BUDGET // per_image)
    parts, embeds = [], []
    for start in range(0, len(images), step):
        pixels = encoder.pixel_values(images[start : start + step])
        with encoder.forward_lock, torch.inference_mode():
            out = encoder.family.source_contributions(encoder.model, pixels)
        parts.append(out.patches.float().cpu().numpy())
        norms = out.embeds.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        embeds.append((out.embeds / norms).float().cpu().numpy())
    return np.concatenate(parts), np.concatenate(embeds)


@register_heatmap_method
class DecompXHeatmap(HeatmapMethod):
    """``h_i = C_i · (t − λ·cos·ê)`` over full (all-layer) patch parts (see module doc).

    Args:
        norm_weight: ``λ`` (1: the cosine's gate derivative, summing to zero over all
            sources; 0: each patch's share of the cosine).
    """

    name = "decompx"

    families = frozenset({"clip", "siglip"})  # each family's every-layer split
    requires = (frozenset({"images"}),)
    cost = "2 + gh*gw passes (once per image if stored)"

    def __init__(self, norm_weight: float = 1.0) -> None:
        if not 0.0 <= norm_weight <= 1.0:
            raise ValueError(f"norm_weight must be in [0, 1], got {norm_weight!r}")
        self.norm_weight = float(norm_weight)

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        if evidence.images is None:
            raise ValueError("decompx needs the images (its parts are not stored yet)")
        parts, embeddings = source_parts(encoder, list(evidence.images))
        return decompx_heatmaps(parts, embeddings, queries, norm_weight=self.norm_weight)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(norm_weight={self.norm_weight})"
