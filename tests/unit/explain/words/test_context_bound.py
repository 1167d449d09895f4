"""Word occlusion costs what the model's context holds, not what the text holds: words past
the context are cut off by the tokenizer and change no embedding."""

from __future__ import annotations

import numpy as np
import pytest

from qdrant_xai import ClipEncoder
from qdrant_xai.encoding.words import split_words, text_without
from qdrant_xai.explain.words.occlusion import ContextOcclusion, WordOcclusion, occludable


def _long_text(n: int) -> str:
    colours = ["red", "blue", "green", "yellow", "purple", "a", "circle", "square"]
    return " ".join(colours[i % len(colours)] for i in range(n))


def test_leave_one_out_on_the_context_equals_it_on_the_whole_text(
    tiny_encoder: ClipEncoder,
) -> None:
    text = _long_text(3 * tiny_encoder.max_text_tokens)
    target = tiny_encoder.embed_texts(["a red circle"])[0]
    ((words, scores),) = WordOcclusion().attribute(tiny_encoder, [text], target[None])
    everything = split_words(text)
    assert 0 < len(words) < len(everything)  # the tail is cut off
    assert words == everything[: len(words)]
    # brute force over the whole text: the same scores for the words that reach the model,
    # exactly 0 for the others
    variants = [text, *(text_without(text, [w]) for w in everything)]
    sims = tiny_encoder.embed_texts(variants) @ target
    brute = sims[0] - sims[1:]
    np.testing.assert_allclose(scores, brute[: len(words)], atol=1e-5)
    np.testing.assert_allclose(brute[len(words) :], 0.0, atol=1e-5)


@pytest.mark.parametrize("method", [WordOcclusion(), ContextOcclusion(window=2)])
def test_a_huge_text_costs_no_more_variants_than_a_context_full(
    method: WordOcclusion | ContextOcclusion, tiny_encoder: ClipEncoder
) -> None:
    huge = _long_text(200_000)  # about 1 MB
    words, prefix = occludable(tiny_encoder, huge)
    assert len(words) <= tiny_encoder.max_text_tokens
    assert len(split_words(prefix)) <= len(words) + tiny_encoder.max_text_tokens
    seen: list[int] = []
    embed = tiny_encoder.embed_texts

    def counting(texts: list[str]) -> np.ndarray:
        seen.append(len(texts))
        assert max(len(t) for t in texts) <= len(prefix)
        return embed(texts)

    tiny_encoder.embed_texts = counting  # type: ignore[method-assign]
    try:
        ((scored, _),) = method.attribute(tiny_encoder, [huge], embed(["a red circle"]))
    finally:
        del tiny_encoder.embed_texts
    assert scored == words
    assert sum(seen) <= 1 + 2 * len(words)
