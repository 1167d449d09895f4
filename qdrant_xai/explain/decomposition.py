"""The decomposition family: heatmaps and word scores from stored direct contributions.

Gandelsman, Efros, Steinhardt, *Interpreting CLIP's Image Representation via Text-Based
Decomposition*, ICLR 2024, https://arxiv.org/abs/2310.05916.

The image embedding's direct path is a sum of per-patch terms ``C_i`` in the joint space
(computed once, at indexing time, by :mod:`qdrant_xai._decomposition`). For a normalised
query embedding ``t`` the heatmap is ``h_i = C_i · t``: the share of ``cos(image, t)`` that
flows directly from patch ``i``. No image read and no forward pass at query time.

The text tower decomposes the same way at its end-of-text token: ``tokens`` scores word
``w`` as ``a_w = Σ_{j∈w} c_j · v`` against an image embedding ``v``. It is an
approximation: it sees only the direct path of the attention layers (not the MLPs'
mixing), so it can disagree with occlusion on words whose effect is indirect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from qdrant_xai.explain.base import (
    ImageEvidence,
    ImageMethod,
    WordMethod,
    WordScores,
    register_image_method,
    register_word_method,
    unique_texts,
)
from qdrant_xai.words import split_words

if TYPE_CHECKING:
    from qdrant_xai.encoder import ClipEncoder

__all__ = ["DecompositionHeatmap", "TokenContributions", "decomposition_heatmaps"]


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


@register_image_method
class DecompositionHeatmap(ImageMethod):
    """``h_i = C_i · t`` from stored patch contributions (the default; see module doc)."""

    name = "decomposition"
    requires = (frozenset({"contributions"}),)
    cost = "0 passes (stored features)"

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        assert evidence.contributions is not None
        return decomposition_heatmaps(evidence.contributions, queries)


@register_word_method
class TokenContributions(WordMethod):
    """``a_w = Σ_{j∈w} c_j · v`` from the text tower's direct token contributions.

    Uses the stored word contributions of text hits (no forward pass); otherwise one
    batched forward pass over the distinct texts. An approximation (see module doc).
    """

    name = "tokens"
    cost = "0 passes (stored text features) or 1 forward per distinct text"

    def attribute(
        self,
        encoder: ClipEncoder,
        texts: Sequence[str],
        targets: np.ndarray,
        *,
        stored: Sequence[np.ndarray | None] | None = None,
    ) -> list[WordScores]:
        targets = np.asarray(targets, dtype=np.float32)
        stored = list(stored) if stored is not None else [None] * len(texts)
        todo = [t for t, s in zip(texts, stored, strict=True) if s is None]
        distinct, _ = unique_texts(todo)
        fresh = {f.text: f for f in encoder.encode_texts(distinct)}
        results: list[WordScores] = []
        for text, target, features in zip(texts, targets, stored, strict=True):
            if features is not None:
                words = split_words(text)[: len(features)]
                per_word = np.asarray(features, dtype=np.float32)
            else:
                words, per_word = fresh[text].words, fresh[text].word_contributions
            results.append((tuple(words), (per_word @ target).astype(np.float32)))
        return results
