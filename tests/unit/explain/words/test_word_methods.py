"""Word attribution methods: context-aware occlusion and integrated gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from qdrant_xai import ClipEncoder
from qdrant_xai.demo.world import COLORS, SHAPES, generate_scenes
from qdrant_xai.encoding.words import split_words, text_without
from qdrant_xai.explain.words.integrated_gradients import IntegratedGradients, gauss_legendre
from qdrant_xai.explain.words.occlusion import ContextOcclusion, WordOcclusion
from qdrant_xai.explain.words.token_contributions import TokenContributions

CAPTIONS = [
    "a red circle and a blue square",
    "a green triangle",
    "a yellow cross and a purple circle and a red square",
    "blue",
]


class CountingEncoder:
    """Delegates to an encoder and records every text that ``embed_texts`` encodes."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self._encoder = encoder
        self.encoded: list[str] = []

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded.extend(texts)
        return self._encoder.embed_texts(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)


class RowCounter:
    """Counts the rows that go through the text tower (a forward pre-hook)."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self.rows = 0
        self._module = encoder.model.text_model.embeddings

    def __enter__(self) -> RowCounter:
        self._handle = self._module.register_forward_pre_hook(self._count, with_kwargs=True)
        return self

    def _count(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.rows += int(ids.shape[0])

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def targets_for(encoder: ClipEncoder, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    targets = rng.standard_normal((n, encoder.dim)).astype(np.float32)
    return targets / np.linalg.norm(targets, axis=1, keepdims=True)


def check_scores(results: list, texts: Sequence[str]) -> None:
    assert len(results) == len(texts)
    for (words, scores), text in zip(results, texts, strict=True):
        assert words == split_words(text)
        assert isinstance(scores, np.ndarray)
        assert scores.dtype == np.float32
        assert scores.shape == (len(words),)
        assert np.isfinite(scores).all()


@pytest.mark.parametrize("method", [ContextOcclusion(), IntegratedGradients(steps=8)])
def test_shapes_dtypes_and_words(tiny_encoder: ClipEncoder, method: Any) -> None:
    texts = [*CAPTIONS, "hello world, foo-bar!"]  # the tiny vocabulary splits "hello" into bytes
    results = method.attribute(tiny_encoder, texts, targets_for(tiny_encoder, len(texts)))
    check_scores(results, texts)


def test_empty_inputs(tiny_encoder: ClipEncoder) -> None:
    no_targets = np.zeros((0, tiny_encoder.dim), dtype=np.float32)
    assert ContextOcclusion().attribute(tiny_encoder, [], no_targets) == []
    assert IntegratedGradients().attribute(tiny_encoder, [], no_targets) == []
    (words, scores), *_ = ContextOcclusion().attribute(
        tiny_encoder, ["!"], targets_for(tiny_encoder, 1)
    )
    assert words == () and scores.shape == (0,)


def test_context_window_one_is_clipped_occlusion(shapes_encoder: ClipEncoder) -> None:
    targets = targets_for(shapes_encoder, len(CAPTIONS), seed=1)
    context = ContextOcclusion(window=1).attribute(shapes_encoder, CAPTIONS, targets)
    occlusion = WordOcclusion().attribute(shapes_encoder, CAPTIONS, targets)
    for (words_c, scores_c), (words_o, scores_o) in zip(context, occlusion, strict=True):
        assert words_c == words_o
        np.testing.assert_allclose(scores_c, np.maximum(scores_o, 0.0), atol=1e-6)
    assert any((s < 0).any() for _, s in occlusion)  # the clipping is exercised


def test_context_known_answer(shapes_encoder: ClipEncoder) -> None:
    text = "a red circle and"
    target = targets_for(shapes_encoder, 1, seed=2)[0]
    words = split_words(text)
    spans = {
        (0, 1): [0],
        (1, 2): [1],
        (2, 3): [2],
        (3, 4): [3],
        (0, 2): [0, 1],
        (1, 3): [1, 2],
        (2, 4): [2, 3],
    }
    variants = [text] + [text_without(text, [words[i] for i in ids]) for ids in spans.values()]
    sims = shapes_encoder.embed_texts(variants) @ target
    drop = dict(zip(spans, np.maximum(sims[0] - sims[1:], 0.0), strict=True))
    expected = [
        (drop[0, 1] + drop[0, 2]) / 2,
        (drop[1, 2] + drop[0, 2] + drop[1, 3]) / 3,
        (drop[2, 3] + drop[1, 3] + drop[2, 4]) / 3,
        (drop[3, 4] + drop[2, 4]) / 2,
    ]
    ((_, scores),) = ContextOcclusion(window=2).attribute(shapes_encoder, [text], target[None])
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert (scores >= 0).all()
    # a window longer than the text is capped at the whole text
    ((_, short),) = ContextOcclusion(window=9).attribute(shapes_encoder, ["a red"], target[None])
    whole = shapes_encoder.embed_texts(["a red", "red", "a", ""]) @ target
    d = np.maximum(whole[0] - whole[1:], 0.0)
    np.testing.assert_allclose(short, [(d[0] + d[2]) / 2, (d[1] + d[2]) / 2], atol=1e-6)


def test_context_encodes_each_distinct_text_once(tiny_encoder: ClipEncoder) -> None:
    texts = ["a red circle", "a blue square and a red cross", "a red circle"]
    targets = targets_for(tiny_encoder, 3)
    counting = CountingEncoder(tiny_encoder)
    results = ContextOcclusion(window=2).attribute(counting, texts, targets)  # type: ignore[arg-type]
    # 1 + 3 + 2 variants of the first text, 1 + 7 + 6 of the second, all distinct
    assert len(counting.encoded) == 6 + 14
    assert sorted(counting.encoded) == sorted(set(counting.encoded))
    again = ContextOcclusion(window=2).attribute(tiny_encoder, ["a red circle"], targets[2:3])
    np.testing.assert_allclose(results[2][1], again[0][1], atol=1e-6)
    assert not np.allclose(results[0][1], results[2][1])  # different targets, different scores


def ig_tolerance(delta: np.ndarray) -> np.ndarray:
    return np.maximum(0.02 * np.abs(delta), 1e-3)


@pytest.mark.parametrize("encoder_name", ["tiny_encoder", "shapes_encoder"])
def test_ig_completeness(encoder_name: str, request: pytest.FixtureRequest) -> None:
    encoder: ClipEncoder = request.getfixturevalue(encoder_name)
    texts = [*CAPTIONS, "hello world"]  # no punctuation: every replaced token is in a word
    targets = targets_for(encoder, len(texts), seed=3)
    results, check = IntegratedGradients(max_batch=256).attribute_with_check(
        encoder, texts, targets
    )
    check_scores(results, texts)
    np.testing.assert_allclose(
        check.input_scores, (encoder.embed_texts(texts) * targets).sum(1), atol=1e-5
    )
    assert (np.abs(check.delta) > 1e-3).all()  # the check is not vacuous
    assert (np.abs(check.gap) <= ig_tolerance(check.delta)).all(), check.gap
    sums = np.array([scores.sum() for _, scores in results])
    np.testing.assert_allclose(sums, check.word_totals, atol=1e-6)
    # too few quadrature points break completeness on the trained model: the check can fail
    if encoder_name == "shapes_encoder":
        _, coarse = IntegratedGradients(steps=2).attribute_with_check(encoder, texts, targets)
        assert (np.abs(coarse.gap) > ig_tolerance(coarse.delta)).any()


def test_ig_punctuation_share_is_folded_into_a_word(shapes_encoder: ClipEncoder) -> None:
    texts = ["a red circle, a blue square and a green cross"]
    targets = targets_for(shapes_encoder, 1, seed=4)
    results, check = IntegratedGradients().attribute_with_check(shapes_encoder, texts, targets)
    check_scores(results, texts)
    # all replaced tokens (comma included) add up, and so do the words: the comma's share
    # went to "circle"
    assert abs(check.token_totals - check.delta)[0] <= ig_tolerance(check.delta)[0]
    np.testing.assert_allclose(check.word_totals, check.token_totals, atol=1e-5)


def test_ig_pad_baseline(tiny_encoder: ClipEncoder) -> None:
    targets = targets_for(tiny_encoder, len(CAPTIONS), seed=5)
    _, zero = IntegratedGradients().attribute_with_check(tiny_encoder, CAPTIONS, targets)
    _, pad = IntegratedGradients(baseline="pad").attribute_with_check(
        tiny_encoder, CAPTIONS, targets
    )
    np.testing.assert_allclose(pad.input_scores, zero.input_scores, atol=1e-6)
    assert not np.allclose(pad.baseline_scores, zero.baseline_scores)
    assert (np.abs(pad.gap) <= ig_tolerance(pad.delta)).all()
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(baseline="mean")


def test_ig_batched_equals_one_at_a_time(tiny_encoder: ClipEncoder) -> None:
    texts = ["a red circle and a blue square"] * 3 + ["a green cross"]
    targets = targets_for(tiny_encoder, len(texts), seed=6)
    method = IntegratedGradients(steps=6, max_batch=5)  # chunks cut across pairs
    batched = method.attribute(tiny_encoder, texts, targets)
    for k, (text, target) in enumerate(zip(texts, targets, strict=True)):
        ((words, scores),) = IntegratedGradients(steps=6).attribute(
            tiny_encoder, [text], target[None]
        )
        assert batched[k][0] == words
        np.testing.assert_allclose(batched[k][1], scores, atol=1e-5)


def test_ig_computes_each_pair_once(tiny_encoder: ClipEncoder) -> None:
    texts = ["a red circle", "a red circle", "a blue cross", "a red circle"]
    targets = targets_for(tiny_encoder, 2, seed=7)[[0, 0, 0, 1]]  # pairs 0 and 1 repeat
    method = IntegratedGradients(steps=6)
    with RowCounter(tiny_encoder) as counter:
        results = method.attribute(tiny_encoder, texts, targets)
    assert counter.rows == 3 * 6  # three distinct (text, target) pairs, one row per step
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert not np.allclose(results[0][1], results[3][1])


def test_gauss_legendre_on_unit_interval() -> None:
    alphas, weights = gauss_legendre(5)
    assert ((alphas > 0) & (alphas < 1)).all()
    np.testing.assert_allclose(weights.sum(), 1.0)
    np.testing.assert_allclose((weights * alphas**9).sum(), 1 / 10)  # exact to degree 9


def test_ig_under_no_grad(tiny_encoder: ClipEncoder) -> None:
    targets = targets_for(tiny_encoder, 1)
    expected = IntegratedGradients(steps=4).attribute(tiny_encoder, ["a red circle"], targets)
    with torch.no_grad():
        got = IntegratedGradients(steps=4).attribute(tiny_encoder, ["a red circle"], targets)
    np.testing.assert_allclose(got[0][1], expected[0][1], atol=1e-6)


def test_top_word_is_a_content_word_on_shapes(shapes_encoder: ClipEncoder) -> None:
    """The word each method ranks first names a colour or a shape in most captions."""
    scenes = list(generate_scenes(30, seed=0))
    captions = [scene.caption for scene in scenes]
    targets = shapes_encoder.embed_images([scene.image for scene in scenes])
    content = {*COLORS, *SHAPES}
    chance = np.mean([np.mean([w.text in content for w in split_words(c)]) for c in captions])
    rates = {}
    methods = (
        WordOcclusion(),
        ContextOcclusion(),
        IntegratedGradients(max_batch=256),
        TokenContributions(),
    )
    for method in methods:
        results = method.attribute(shapes_encoder, captions, targets)
        rates[method.name] = float(
            np.mean([words[int(np.argmax(s))].text in content for words, s in results])
        )
    print(f"top word is a content word: {rates} (chance {chance:.2f})")
    assert all(rate > chance + 0.1 for rate in rates.values()), rates
    assert rates["occlusion"] >= 0.9 and rates["ig"] >= 0.9, rates
