"""Texts go through the text tower in chunks of ``text_batch_size``: memory stays bounded
however many captions one batch of images has, and the results are the same."""

from __future__ import annotations

import numpy as np

from qdrant_xai import ClipEncoder


def test_chunked_text_passes_equal_one_pass(tiny_encoder: ClipEncoder) -> None:
    texts = [f"a red circle number {i}" for i in range(7)] + ["a blue square"] * 3
    whole_embeds = tiny_encoder._embed_texts(texts)
    whole = tiny_encoder.encode_texts(texts)
    sizes: list[int] = []
    tokenize = tiny_encoder._tokenize

    def counting(batch: list[str], *, offsets: bool) -> object:
        sizes.append(len(batch))
        return tokenize(batch, offsets=offsets)

    tiny_encoder.text_batch_size = 3
    tiny_encoder._tokenize = counting  # type: ignore[method-assign]
    try:
        chunked_embeds = tiny_encoder._embed_texts(texts)
        chunked = tiny_encoder.encode_texts(texts)
    finally:
        del tiny_encoder._tokenize
        tiny_encoder.text_batch_size = 256
    assert max(sizes) == 3 and sum(sizes) == 2 * len(texts)
    np.testing.assert_allclose(chunked_embeds, whole_embeds, atol=1e-5)
    for a, b in zip(chunked, whole, strict=True):
        assert a.words == b.words and a.truncated == b.truncated
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
        np.testing.assert_allclose(a.word_contributions, b.word_contributions, atol=1e-5)
