"""The prefix pass (every word prefix and word knockout in one forward) and ``prefix``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qdrant_xai import ClipEncoder
from qdrant_xai.encoding.text_prefixes import prefix_embeddings, remembered_prefixes
from qdrant_xai.encoding.words import split_words
from qdrant_xai.explain.base import word_method
from qdrant_xai.explain.words.prefix import PrefixReading
from qdrant_xai.testing import build_tiny_clip

TEXTS = [
    "a red circle and a blue square",
    ", a green triangle.",  # punctuation before the first word and after the last
    "hello world, foo-bar!",  # the tiny vocabulary splits "hello" into several tokens
    "blue",
    "",
    "!!!",
]


def plain(encoder: ClipEncoder, texts: list[str]) -> np.ndarray:
    """[N, P] normalised ``get_text_features`` of the texts (the eager model, one batch)."""
    tokens = encoder.processor.tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=encoder.max_text_tokens,
        return_tensors="pt",
    )
    with torch.inference_mode():
        out = encoder.model.get_text_features(**tokens)
    features = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.nn.functional.normalize(features, dim=-1).numpy()


class TokenRows:
    """Counts the rows the prefix pass embeds (a hook on the SDPA twin's token embedding)."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self.rows = 0
        self._module = encoder._embedder.text_model.embeddings.token_embedding

    def __enter__(self) -> TokenRows:
        self._handle = self._module.register_forward_hook(self._count)
        return self

    def _count(self, _module: Any, inputs: tuple[Any, ...], _output: Any) -> None:
        self.rows += int(inputs[0].shape[0])

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


@pytest.fixture(params=["tiny", "shapes"])
def encoder(request: pytest.FixtureRequest) -> ClipEncoder:
    name = "tiny_encoder" if request.param == "tiny" else "shapes_encoder"
    return request.getfixturevalue(name)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_every_prefix_is_the_plain_embedding_of_the_prefix_text(
    encoder: ClipEncoder, attention: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if attention == "eager":  # the path of a model that cannot switch to SDPA
        monkeypatch.setattr(encoder, "_embedder", encoder.model)
    long_text = "a red circle and " * 10  # past the context: truncated
    results = prefix_embeddings(encoder, [*TEXTS, long_text])
    assert results[-1].truncated and not any(r.truncated for r in results[:-1])
    for result in results:
        assert result.words == split_words(result.text)[: len(result.words)]
        prefixes = [result.prefix_text(j) for j in range(len(result.words) + 1)]
        assert np.abs(result.embeddings - plain(encoder, prefixes)).max() <= 1e-5, prefixes
        assert np.abs(result.embedding - plain(encoder, [result.text])[0]).max() <= 1e-5
        if result.words:  # the last prefix is the whole text
            assert np.abs(result.embeddings[-1] - result.embedding).max() <= 1e-6
    assert results[1].prefix_text(1) == ", a"  # punctuation joins the word before (or first)
    assert results[1].prefix_text(3) == ", a green triangle."


def test_knocking_out_the_last_word_is_the_previous_prefix(encoder: ClipEncoder) -> None:
    for result in prefix_embeddings(encoder, TEXTS):
        assert result.knockouts.shape == (len(result.words), encoder.dim)
        if result.words:
            assert np.abs(result.knockouts[-1] - result.embeddings[-2]).max() <= 1e-5
        if len(result.words) > 1:  # a real knockout changes the embedding
            assert np.abs(result.knockouts[0] - result.embedding).max() > 1e-3


def test_knockout_matches_a_one_layer_reference(tmp_path: Path) -> None:
    """With one layer, the end token's output depends only on the embeddings of the tokens
    it reads: knocking word j out equals the plain forward of the text without word j's
    tokens, every other token kept at its position and the end token moved up."""
    one_layer = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "one", num_layers=1))
    text = "a red circle, hello blue square"
    (result,) = prefix_embeddings(one_layer, [text])
    tokens = one_layer._tokenize([text], offsets=True)
    ids, offsets = tokens["input_ids"][0], tokens["offset_mapping"][0].tolist()
    for j, word in enumerate(result.words):
        following = result.words[j + 1].start if j + 1 < len(result.words) else len(text) + 1
        # the word's tokens and the punctuation after it (before the next word)
        drop = [t for t, (a, b) in enumerate(offsets) if b > a and word.start <= a < following]
        keep = [t for t in range(len(ids)) if t not in drop]
        positions = torch.tensor(keep)
        positions[-1] = len(ids) - 1 - len(drop)  # the end token where it would be
        with torch.inference_mode():
            out = one_layer.model.get_text_features(
                input_ids=ids[keep][None], position_ids=positions[None]
            )
        features = out.pooler_output if hasattr(out, "pooler_output") else out
        reference = torch.nn.functional.normalize(features, dim=-1)[0].numpy()
        assert np.abs(result.knockouts[j] - reference).max() <= 1e-5, word


def test_reading_scores_add_up_and_the_default_mixes_knockouts(encoder: ClipEncoder) -> None:
    rng = np.random.default_rng(0)
    targets = rng.standard_normal((len(TEXTS), encoder.dim)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    reading = PrefixReading(knockout=0.0).attribute(encoder, TEXTS, targets)
    mixed = word_method("prefix").attribute(encoder, TEXTS, targets)
    knocked = PrefixReading(knockout=1.0).attribute(encoder, TEXTS, targets)
    whole, empty = plain(encoder, TEXTS), plain(encoder, [""])[0]
    for k, text in enumerate(TEXTS):
        words, scores = reading[k]
        assert words == split_words(text) and scores.dtype == np.float32
        if words:  # Σ r_j = cos(text, v) − cos(empty, v)
            expected = float(whole[k] @ targets[k] - empty @ targets[k])
            assert abs(float(scores.sum()) - expected) <= 1e-5
            # for the last word both terms are the exact leave-one-out
            assert abs(float(knocked[k][1][-1] - scores[-1])) <= 1e-5
        assert np.allclose(mixed[k][1], 0.25 * scores + 0.75 * knocked[k][1], atol=1e-6)


def test_one_pass_per_distinct_text_serves_every_target() -> None:
    # a fresh encoder: the session's shared one may remember these queries' prefixes from
    # an earlier test, and then no pass runs at all
    shapes_encoder = ClipEncoder.from_pretrained("shapes")
    rng = np.random.default_rng(1)
    targets = rng.standard_normal((6, shapes_encoder.dim)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    texts = ["a red circle and a blue square"] * 5 + ["a green cross"]
    method = PrefixReading()
    with TokenRows(shapes_encoder) as counter:
        together = method.attribute(shapes_encoder, texts, targets)
    assert counter.rows == 2  # two distinct texts, one forward
    for k in range(6):
        alone = method.attribute(shapes_encoder, texts[k : k + 1], targets[k : k + 1])[0]
        assert np.allclose(together[k][1], alone[1], atol=1e-6)


def test_a_search_query_forward_yields_the_prefixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("qdrant_xai.encoding.encoder.QUERY_CACHE_SIZE", 8)
    encoder = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "m"))  # fresh memory
    query = "a red circle and a blue square"
    target = plain(encoder, ["a red circle"])
    assert encoder.query_prefixes is False
    plain_query = encoder.embed_texts([query])
    fresh = PrefixReading().attribute(encoder, [query], target)
    assert encoder.query_prefixes is True  # the method turned it on
    assert remembered_prefixes(encoder, query) is None  # embedded before it was on
    other = "a green cross and a yellow circle"
    embedded = encoder.embed_texts([other])  # as a search does: the prefix pass
    assert np.abs(embedded - plain(encoder, [other])).max() <= 1e-5
    assert remembered_prefixes(encoder, other) is not None
    with TokenRows(encoder) as counter:
        served = PrefixReading().attribute(encoder, [other], target)
    assert counter.rows == 0  # no forward: the search's pass is reused
    encoder.query_prefixes = False
    assert np.allclose(served[0][1], PrefixReading().attribute(encoder, [other], target)[0][1])
    assert np.abs(plain_query - encoder.embed_texts([query])).max() == 0  # still remembered
    assert len(fresh[0][1]) == 7
    # forgotten with the embedding, oldest first
    encoder.query_prefixes = True
    for k in range(8):
        encoder.embed_texts([f"a red circle {k}"])
    assert remembered_prefixes(encoder, other) is None
    assert len(encoder._query_prefixes) == 8


def test_knockout_weight_is_checked() -> None:
    with pytest.raises(ValueError, match="knockout"):
        PrefixReading(knockout=1.5)
    assert PrefixReading().attribute(None, [], np.zeros((0, 4))) == []  # type: ignore[arg-type]
