"""The direct-contribution decomposition on a real (tiny, random) CLIP.

The residual stream of a CLIP tower is an exact sum: embedding + Σ_l MLP_l + Σ_l attention_l,
and each attention output at the pooled token is Σ_i c_i + out_proj.bias. These tests rebuild
the pooled token from the recorded pieces, and check what the encoder derives from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import CLIPModel

from qdrant_xai import ClipEncoder
from qdrant_xai.demo.world import WORLD_WORDS, generate_scenes
from qdrant_xai.encoding.towers import (
    _direct_contributions,
    _project_linearised,
    _record_attention,
    eos_positions,
    run_image_tower,
    run_text_tower,
)
from qdrant_xai.encoding.words import split_words
from qdrant_xai.explain.heatmaps.decomposition import decomposition_heatmaps

ATOL = 1e-5


@pytest.fixture(scope="module")
def pixels(tiny_encoder: ClipEncoder) -> torch.Tensor:
    """[3, 3, 32, 32] pixel values of three shape scenes, as the processor makes them."""
    images = [scene.image for scene in generate_scenes(3, seed=11, size=64)]
    return tiny_encoder.processor.image_processor(images=images, return_tensors="pt")[
        "pixel_values"
    ]


@pytest.fixture(scope="module")
def tokens(tiny_encoder: ClipEncoder) -> Any:
    """Two captions of different lengths, padded into one batch."""
    return tiny_encoder.processor.tokenizer(
        ["a red circle", "a blue square and a green cross and a yellow triangle"],
        padding=True,
        return_tensors="pt",
    )


class _MlpOutputs:
    """Records each layer's MLP output (the other residual branch)."""

    def __init__(self, layers: torch.nn.ModuleList) -> None:
        self.outputs: list[torch.Tensor] = []
        self.handles = [layer.mlp.register_forward_hook(self._record) for layer in layers]

    def _record(self, _module: object, _inputs: object, output: torch.Tensor) -> None:
        self.outputs.append(output)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _features(output: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor or, in newer transformers, an output object."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# -- the residual identity --------------------------------------------------------------


@torch.no_grad()
def test_vision_residual_is_the_sum_of_its_parts(
    tiny_encoder: ClipEncoder, pixels: torch.Tensor
) -> None:
    model = tiny_encoder.model
    vision = model.vision_model
    layers = vision.encoder.layers
    embedded: list[torch.Tensor] = []
    pre = vision.pre_layrnorm.register_forward_hook(lambda _m, _i, out: embedded.append(out))
    mlps = _MlpOutputs(layers)
    query = torch.zeros(pixels.shape[0], dtype=torch.long)
    try:
        with _record_attention(layers, query) as recording:
            outputs = vision(pixel_values=pixels)
    finally:
        pre.remove()
        mlps.remove()
    contributions = _direct_contributions(recording, layers)  # [B, 1 + 16, D]
    assert contributions.shape == (3, 17, 32)
    assert len(recording.attention_rows) == len(layers) == len(mlps.outputs)

    cls = (
        embedded[0][:, 0]
        + sum(out[:, 0] for out in mlps.outputs)
        + sum(layer.self_attn.out_proj.bias for layer in layers)
        + contributions.sum(dim=1)
    )
    torch.testing.assert_close(cls, outputs.last_hidden_state[:, 0], atol=ATOL, rtol=0)
    # the identity is not vacuous: leaving out the patches breaks it
    without_patches = cls - contributions[:, 1:].sum(dim=1)
    assert (without_patches - outputs.last_hidden_state[:, 0]).abs().max() > 100 * ATOL

    # linearising the final norm at the CLS residual is exact for the sum of all parts
    residual = outputs.last_hidden_state[:, 0]
    norm, projection = vision.post_layernorm, model.visual_projection
    parts = torch.stack(
        [
            embedded[0][:, 0],
            sum(out[:, 0] for out in mlps.outputs),
            sum(layer.self_attn.out_proj.bias for layer in layers).expand_as(residual),
        ],
        dim=1,
    )
    joint = _project_linearised(torch.cat([parts, contributions], 1), residual, norm, projection)
    rebuilt = joint.sum(dim=1) + projection(norm.bias)
    embeds = _features(model.get_image_features(pixel_values=pixels))
    torch.testing.assert_close(rebuilt, embeds, atol=ATOL, rtol=0)


@torch.no_grad()
def test_text_residual_at_the_end_token_is_the_sum_of_its_parts(
    tiny_encoder: ClipEncoder, tokens: Any
) -> None:
    model = tiny_encoder.model
    text = model.text_model
    layers = text.encoder.layers
    eos = eos_positions(tokens["input_ids"], text.eos_token_id)
    lengths = tokens["attention_mask"].sum(dim=1)
    assert eos.tolist() == (lengths - 1).tolist()  # the first end token, not the padding
    embedded: list[torch.Tensor] = []
    emb = text.embeddings.register_forward_hook(lambda _m, _i, out: embedded.append(out))
    mlps = _MlpOutputs(layers)
    try:
        with _record_attention(layers, eos, final_norm=text.final_layer_norm) as recording:
            text(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    finally:
        emb.remove()
        mlps.remove()
    batch = torch.arange(len(eos))
    contributions = _direct_contributions(recording, layers)  # [B, T, D]
    pooled = (
        embedded[0][batch, eos]
        + sum(out[batch, eos] for out in mlps.outputs)
        + sum(layer.self_attn.out_proj.bias for layer in layers)
        + contributions.sum(dim=1)
    )
    assert recording.final_residual is not None
    torch.testing.assert_close(pooled, recording.final_residual[batch, eos], atol=ATOL, rtol=0)
    # causal attention: nothing after the end token contributes
    for row, end in enumerate(eos.tolist()):
        assert (contributions[row, end + 1 :] == 0).all()


# -- embeddings match the model's own ---------------------------------------------------


@torch.no_grad()
def test_tower_embeddings_equal_the_models_features(
    tiny_encoder: ClipEncoder, pixels: torch.Tensor, tokens: Any
) -> None:
    model = tiny_encoder.model
    image = run_image_tower(model, pixels)
    torch.testing.assert_close(
        image.embeds, _features(model.get_image_features(pixel_values=pixels)), atol=ATOL, rtol=0
    )
    assert image.contributions.shape == (3, 4, 4, 16)
    assert image.patch_tokens.shape == (3, 4, 4, 16)

    text = run_text_tower(model, tokens["input_ids"], tokens["attention_mask"])
    expected = model.get_text_features(
        input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
    )
    torch.testing.assert_close(text.embeds, _features(expected), atol=ATOL, rtol=0)
    assert text.contributions.shape == (*tokens["input_ids"].shape, 16)


def test_encoder_embeddings_agree_with_the_plain_embedding_path(
    tiny_encoder: ClipEncoder,
) -> None:
    images = [scene.image for scene in generate_scenes(2, seed=4, size=64)]
    encoded = np.stack([f.embedding for f in tiny_encoder.encode_images(images)])
    np.testing.assert_allclose(encoded, tiny_encoder.embed_images(images), atol=ATOL)
    np.testing.assert_allclose(np.linalg.norm(encoded, axis=1), 1.0, atol=1e-6)
    texts = ["a red circle", "a green cross and a purple square"]
    encoded_texts = np.stack([f.embedding for f in tiny_encoder.encode_texts(texts)])
    np.testing.assert_allclose(encoded_texts, tiny_encoder.embed_texts(texts), atol=ATOL)


# -- the heatmap is linear in the patch contributions -----------------------------------


@torch.no_grad()
def test_heatmap_sum_equals_the_projected_sum_of_patch_contributions(
    tiny_encoder: ClipEncoder, pixels: torch.Tensor
) -> None:
    model = tiny_encoder.model
    vision = model.vision_model
    layers = vision.encoder.layers
    with _record_attention(layers, torch.zeros(3, dtype=torch.long)) as recording:
        outputs = vision(pixel_values=pixels)
    patches = _direct_contributions(recording, layers)[:, 1:].sum(dim=1).numpy()  # [B, D]
    residual = outputs.last_hidden_state[:, 0].numpy()
    norm = vision.post_layernorm
    gamma, eps = norm.weight.numpy(), norm.eps
    sigma = np.sqrt(residual.var(axis=-1, keepdims=True) + eps)
    linearised = gamma * (patches - patches.mean(axis=-1, keepdims=True)) / sigma
    embeds = _features(model.get_image_features(pixel_values=pixels)).numpy()
    projected = linearised @ model.visual_projection.weight.numpy().T
    projected /= np.linalg.norm(embeds, axis=-1, keepdims=True)

    queries = tiny_encoder.embed_texts(["a red circle", "a blue square", "a yellow cross"])
    contributions = run_image_tower(model, pixels).contributions.numpy()
    for t in queries:
        heatmaps = decomposition_heatmaps(contributions, t)  # [B, 4, 4]
        assert heatmaps.shape == (3, 4, 4)
        np.testing.assert_allclose(heatmaps.sum(axis=(1, 2)), projected @ t, atol=ATOL)
        # the map is not constant: patches differ
        assert (heatmaps.std(axis=(1, 2)) > 0).all()


# -- SDPA-loaded models -----------------------------------------------------------------


def test_sdpa_model_is_refused_by_the_tower_and_switched_to_eager_by_the_encoder(
    tiny_model_dir: Path, tiny_encoder: ClipEncoder, pixels: torch.Tensor
) -> None:
    sdpa = CLIPModel.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError, match=r'attn_implementation="eager"'), torch.no_grad():
        run_image_tower(sdpa, pixels)
    # the failed pass left no hooks behind
    for layer in sdpa.vision_model.encoder.layers:
        assert not layer.self_attn._forward_hooks
        assert not layer.self_attn.v_proj._forward_hooks

    encoder = ClipEncoder(sdpa, tiny_encoder.processor, model_id="tiny-sdpa")
    assert sdpa.config._attn_implementation == "eager"
    assert encoder.fingerprint.key == tiny_encoder.fingerprint.key
    images = [scene.image for scene in generate_scenes(2, seed=4, size=64)]
    ours, reference = encoder.encode_images(images), tiny_encoder.encode_images(images)
    for got, want in zip(ours, reference, strict=True):
        assert got.contributions.shape == (4, 4, 16)
        np.testing.assert_allclose(got.contributions, want.contributions, atol=ATOL)
        np.testing.assert_allclose(got.embedding, want.embedding, atol=ATOL)
    (text,) = encoder.encode_texts(["a red circle and a blue square"])
    assert text.word_contributions.shape == (7, 16)


# -- words ------------------------------------------------------------------------------


def test_words_and_spans_of_a_punctuated_caption(tiny_encoder: ClipEncoder) -> None:
    caption = "a red circle, and a blue-square!"
    (features,) = tiny_encoder.encode_texts([caption])
    assert [w.text for w in features.words] == ["a", "red", "circle", "and", "a", "blue-square"]
    assert [w.span for w in features.words] == [
        (0, 1),
        (2, 5),
        (6, 12),
        (14, 17),
        (18, 19),
        (20, 31),
    ]
    assert all(caption[w.start : w.end] == w.text for w in features.words)
    assert features.word_contributions.shape == (6, 16)
    assert features.word_contributions.dtype == np.float32
    assert not features.truncated

    # each word's row is the sum of its tokens' rows; punctuation belongs to no word
    batch = tiny_encoder.processor.tokenizer([caption], return_tensors="pt")
    pieces = tiny_encoder.processor.tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert pieces[7:10] == ["blue</w>", "-</w>", "square</w>"]
    with torch.no_grad():
        out = run_text_tower(tiny_encoder.model, batch["input_ids"], batch["attention_mask"])
    per_token = out.contributions[0].numpy()
    expected = np.stack(
        [
            per_token[1],
            per_token[2],
            per_token[3],
            per_token[5],
            per_token[6],
            per_token[7:10].sum(0),
        ]
    )
    np.testing.assert_allclose(features.word_contributions, expected, atol=ATOL)


def test_long_text_is_truncated_to_the_context(tiny_encoder: ClipEncoder) -> None:
    words = [WORLD_WORDS[i % len(WORLD_WORDS)] for i in range(60)]
    text = " ".join(words)
    (features,) = tiny_encoder.encode_texts([text])
    assert features.truncated
    # 32 positions minus start and end tokens; every word of this vocabulary is one token
    assert [w.text for w in features.words] == words[:30]
    assert features.words == split_words(text)[:30]
    assert features.word_contributions.shape == (30, 16)
    assert np.isfinite(features.word_contributions).all()


def test_padding_does_not_change_a_texts_features(tiny_encoder: ClipEncoder) -> None:
    short = "a red circle"
    (alone,) = tiny_encoder.encode_texts([short])
    padded, _ = tiny_encoder.encode_texts([short, "a blue square and a green cross and a circle"])
    assert padded.words == alone.words
    np.testing.assert_allclose(padded.embedding, alone.embedding, atol=ATOL)
    np.testing.assert_allclose(padded.word_contributions, alone.word_contributions, atol=ATOL)
