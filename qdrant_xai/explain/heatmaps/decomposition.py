"""The decomposition heatmap: ``C_i · t`` from stored direct patch contributions.

Gandelsman, Efros, Steinhardt, *Interpreting CLIP's Image Representation via Text-Based
Decomposition*, ICLR 2024, https://arxiv.org/abs/2310.05916.

The image embedding's direct path is a sum of per-patch terms ``C_i`` in the joint space
(computed once, at indexing time, by :mod:`qdrant_xai.encoding.towers`). For a normalised
query embedding ``t`` the heatmap is ``h_i = C_i · t``: the share of ``cos(image, t)`` that
flows directly from patch ``i``. No image read and no forward pass at query time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from qdrant_xai.explain.base import (
    HeatmapMethod,
    ImageEvidence,
    register_heatmap_method,
)

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["DecompositionHeatmap", "decomposition_heatmaps"]


def decomposition_heatmaps(contributions: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Heatmaps of several images at once.

    Args:
        contributions: [N, gh, gw, P] direct patch contributions of N images.
        queries: [N, P] one normalised query embedding per image, or [P] shared by all.

    Returns:
        [N, gh, gw] float32 heatmaps (signed: negative patches pull the score down).
    """
    contributions = np.asarray(contributions, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        return np.einsum("nhwp,p->nhw", contributions, queries)
    return np.einsum("nhwp,np->nhw", contributions, queries)


@register_heatmap_method
class DecompositionHeatmap(HeatmapMethod):
    """``h_i = C_i · t`` from stored patch contributions (the default; see module doc)."""

    name = "decomposition"
    requires = (frozenset({"contributions"}),)
    cost = "0 passes (stored features)"

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        assert evidence.contributions is not None
        return decomposition_heatmaps(evidence.contributions, queries)
