"""Word attributions by leave-one-word-out occlusion.

Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*, ECCV 2014 (the
occlusion principle); applied to caption words as in the explainable cross-modal retrieval
framework this library follows: ``a_i = s(x) − s(x without word i)`` with ``s`` the cosine
similarity between the text and the other side of the pair (an image embedding).

All variants (the original text and one per word) of every text are encoded in one batched
forward pass; scoring against many images is one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qdrant_xai.encoder import ClipEncoder
from qdrant_xai.words import Word, split_words, text_without

__all__ = ["WordOcclusion"]


class WordOcclusion:
    """Leave-one-word-out attributions of texts with respect to target embeddings.

    Args:
        encoder: the CLIP encoder that embeds the text variants.
        max_batch: variants per forward pass (bounds memory for long texts).
    """

    def __init__(self, encoder: ClipEncoder, *, max_batch: int = 256) -> None:
        self.encoder = encoder
        self.max_batch = max_batch

    def _variant_embeddings(
        self, texts: Sequence[str]
    ) -> list[tuple[tuple[Word, ...], np.ndarray]]:
        words_of = [split_words(t) for t in texts]
        variants: list[str] = []
        for text, words in zip(texts, words_of, strict=True):
            variants.append(text)
            variants.extend(text_without(text, [w]) for w in words)
        embeds = (
            np.concatenate(
                [
                    self.encoder.embed_texts(variants[i : i + self.max_batch])
                    for i in range(0, len(variants), self.max_batch)
                ]
            )
            if variants
            else np.zeros((0, self.encoder.dim), dtype=np.float32)
        )
        out, cursor = [], 0
        for words in words_of:
            out.append((words, embeds[cursor : cursor + len(words) + 1]))
            cursor += len(words) + 1
        return out

    def attribute(self, text: str, targets: np.ndarray) -> tuple[tuple[Word, ...], np.ndarray]:
        """Attributions of one text against several targets.

        Args:
            text: the text whose words are scored.
            targets: [N, P] normalised embeddings (e.g. the images of N hits).

        Returns:
            ``(words, scores)`` with scores [N, n_words]: ``s(text) − s(text without word)``.
        """
        ((words, embeds),) = self._variant_embeddings([text])
        sims = np.asarray(targets, dtype=np.float32) @ embeds.T  # [N, 1 + n_words]
        return words, sims[:, :1] - sims[:, 1:]

    def attribute_pairs(
        self, texts: Sequence[str], targets: np.ndarray
    ) -> list[tuple[tuple[Word, ...], np.ndarray]]:
        """Attributions of each text against its own target, all in one batched pass.

        Args:
            texts: N texts.
            targets: [N, P] the normalised embedding each text is scored against.

        Returns:
            N pairs ``(words, scores [n_words])``.
        """
        results = []
        for (words, embeds), target in zip(self._variant_embeddings(texts), targets, strict=True):
            sims = embeds @ np.asarray(target, dtype=np.float32)
            results.append((words, sims[0] - sims[1:]))
        return results
