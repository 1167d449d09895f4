"""Word attributions by occlusion: leave-one-word-out, and the context-aware variant.

Zeiler & Fergus, *Visualizing and Understanding Convolutional Networks*, ECCV 2014 (the
occlusion principle); applied to caption words as in the explainable cross-modal retrieval
framework this library follows: ``a_i = s(x) − s(x without word i)`` with ``s`` the cosine
similarity between the text and the other side of the pair (an image embedding).

The context-aware variant (:class:`ContextOcclusion`) follows Moujdi, *An
Explainability-Driven Framework for Interpretable Cross-Modal Image-Text Retrieval Using
CLIP*, IJLTEMAS 2026, https://doi.org/10.51583/IJLTEMAS.2026.150300065 (section "Textual
Attribution: Context Aware Occlusion"): it removes n-grams instead of single words and
averages the clipped drops over the n-grams covering each word.

All variants (the original text and one per word or window) of every distinct text are
encoded in one batched forward pass; scoring against many images is one matrix product.

Only the words that reach the model are occluded: those past its context length are cut
off by the tokenizer and change no embedding (their leave-one-out score is exactly 0), so
they are left out of the attributions, as the ``tokens`` method leaves them out. The
variants are built from the text up to the last word that removing others could pull into
the context, so one input's cost is bounded by the context length, not by its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from qdrant_xai.encoding.words import Word, split_words, text_without
from qdrant_xai.explain.base import WordMethod, WordScores, register_word_method, unique_texts

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["ContextOcclusion", "WordOcclusion", "embed_variants", "occludable"]


def occludable(encoder: ClipEncoder, text: str) -> tuple[tuple[Word, ...], str]:
    """The words of ``text`` that reach the model, and the prefix of ``text`` to build
    variants from: removing words frees at most ``max_text_tokens`` tokens, so at most that
    many later words can move into the context; what follows them never reaches the model.
    """
    words = split_words(text)
    kept = encoder.words_in_context(text, words)
    reach = min(len(words), kept + encoder.max_text_tokens)
    prefix = text[: words[reach - 1].end] if reach else text
    return words[:kept], prefix


def embed_variants(
    encoder: ClipEncoder, variants: Sequence[Sequence[str]], *, max_batch: int = 256
) -> list[np.ndarray]:
    """Embeddings of several groups of texts in as few forward passes as possible.

    Returns:
        one [len(group), P] array per group.
    """
    flat = [text for group in variants for text in group]
    if flat:
        embeds = np.concatenate(
            [encoder.embed_texts(flat[i : i + max_batch]) for i in range(0, len(flat), max_batch)]
        )
    else:
        embeds = np.zeros((0, encoder.dim), dtype=np.float32)
    out, cursor = [], 0
    for group in variants:
        out.append(embeds[cursor : cursor + len(group)])
        cursor += len(group)
    return out


@register_word_method
class WordOcclusion(WordMethod):
    """Leave-one-word-out: ``a_i = s(x) − s(x without word i)``.

    Args:
        max_batch: text variants per forward pass (bounds memory for long texts).
    """

    name = "occlusion"
    cost = "1 batched forward of n_words + 1 variants per distinct text"

    def __init__(self, *, max_batch: int = 256) -> None:
        self.max_batch = max_batch

    def variant_embeddings(
        self, encoder: ClipEncoder, texts: Sequence[str]
    ) -> list[tuple[tuple[Word, ...], np.ndarray]]:
        """For each text: its words that reach the model (:func:`occludable`) and
        [1 + n_words, P] embeddings (original first)."""
        cut = [occludable(encoder, t) for t in texts]
        groups = [[prefix, *(text_without(prefix, [w]) for w in words)] for words, prefix in cut]
        embeds = embed_variants(encoder, groups, max_batch=self.max_batch)
        return [(words, e) for (words, _), e in zip(cut, embeds, strict=True)]

    def attribute(
        self,
        encoder: ClipEncoder,
        texts: Sequence[str],
        targets: np.ndarray,
        *,
        stored: Sequence[np.ndarray | None] | None = None,
    ) -> list[WordScores]:
        distinct, index = unique_texts(texts)
        variants = self.variant_embeddings(encoder, distinct)
        results: list[WordScores] = []
        for k, target in zip(index, np.asarray(targets, dtype=np.float32), strict=True):
            words, embeds = variants[k]
            sims = embeds @ target
            results.append((words, (sims[0] - sims[1:]).astype(np.float32)))
        return results


@register_word_method
class ContextOcclusion(WordMethod):
    """Context-aware occlusion: clipped similarity drops of the n-grams covering each word.

    For a text of words ``1..n``, every contiguous window ``[a, b]`` of ``1..w`` words is
    removed (``s_{a,b}`` is the similarity with all its words deleted, see
    :func:`~qdrant_xai.encoding.words.text_without`), and

        h_i = mean over windows [a, b] ∋ i of max(0, s_orig − s_{a,b})

    (Moujdi 2026, "Textual Attribution: Context Aware Occlusion"; the paper prints the
    normalisation ``1 / (2w + 1)`` with only the ``s_{i,i}`` term, we average over the
    windows that actually cover the word, so words at the edges are not penalised).
    With ``window=1`` it is ``max(0, a_i)`` of :class:`WordOcclusion`.

    Non-negative by construction: a word whose removal *raises* the similarity scores 0,
    not a negative value, so it cannot tell "irrelevant" from "contradicts the target".
    A word also inherits credit from the neighbours it shares windows with, which makes
    scores smoother (and less specific) than leave-one-word-out. Costs grow with ``w``:
    about ``w · n`` variants per text.

    Args:
        window: the longest n-gram removed (``w``), at least 1.
        max_batch: text variants per forward pass (bounds memory for long texts).
    """

    name = "context"
    cost = "1 batched forward of about window * n_words + 1 variants per distinct text"

    def __init__(self, *, window: int = 2, max_batch: int = 256) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self.max_batch = max_batch

    def windows(self, n_words: int) -> list[tuple[int, int]]:
        """The removed windows ``(start, stop)`` (``stop`` exclusive), shortest first."""
        return [
            (start, start + size)
            for size in range(1, min(self.window, n_words) + 1)
            for start in range(n_words - size + 1)
        ]

    def attribute(
        self,
        encoder: ClipEncoder,
        texts: Sequence[str],
        targets: np.ndarray,
        *,
        stored: Sequence[np.ndarray | None] | None = None,
    ) -> list[WordScores]:
        distinct, index = unique_texts(texts)
        cut = [occludable(encoder, t) for t in distinct]
        words_of = [words for words, _ in cut]
        groups, rows_of, cover_of = [], [], []
        for words, prefix in cut:
            spans = self.windows(len(words))
            # two windows can leave the same text ("a a"): each variant is encoded once
            variants, rows = unique_texts(
                [prefix, *(text_without(prefix, words[a:b]) for a, b in spans)]
            )
            cover = np.zeros((len(spans), len(words)), dtype=np.float32)  # [n_windows, n_words]
            for k, (a, b) in enumerate(spans):
                cover[k, a:b] = 1.0
            groups.append(variants)
            rows_of.append(np.asarray(rows, dtype=np.int64))
            cover_of.append(cover / np.maximum(cover.sum(axis=0, keepdims=True), 1.0))
        embeds = embed_variants(encoder, groups, max_batch=self.max_batch)
        results: list[WordScores] = []
        for k, target in zip(index, np.asarray(targets, dtype=np.float32), strict=True):
            sims = (embeds[k] @ target)[rows_of[k]]  # [1 + n_windows], original first
            drops = np.maximum(sims[0] - sims[1:], 0.0)
            results.append((words_of[k], (drops @ cover_of[k]).astype(np.float32)))
        return results
