"""Word scores from the text tower's direct token contributions (``tokens``).

Gandelsman, Efros, Steinhardt, *Interpreting CLIP's Image Representation via Text-Based
Decomposition*, ICLR 2024, https://arxiv.org/abs/2310.05916.

The text tower decomposes like the image tower, at its end-of-text token: ``tokens`` scores word
``w`` as ``a_w = Σ_{j∈w} c_j · v`` against an image embedding ``v``. It is an
approximation: it sees only the direct path of the attention layers (not the MLPs'
mixing), so it can disagree with occlusion on words whose effect is indirect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from qdrant_xai.encoding.words import split_words
from qdrant_xai.explain.base import WordMethod, WordScores, register_word_method, unique_texts

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["TokenContributions"]


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
