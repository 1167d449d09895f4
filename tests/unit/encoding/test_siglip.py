"""SigLIP and fixed-resolution SigLIP 2 through the family seam, on tiny models built offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, CLIPModel, SiglipModel

from qdrant_xai import ClipEncoder
from qdrant_xai.encoding.families import SUPPORTED_MODEL_TYPES, family_of
from qdrant_xai.encoding.fingerprint import hash_weights
from qdrant_xai.encoding.siglip_towers import (
    run_siglip_image_tower,
    siglip_source_contributions,
    split_by_source,
)
from qdrant_xai.errors import ModelLoadError, UnsupportedMethodError, UnsupportedModelError
from qdrant_xai.explain import HEATMAP_METHODS, WORD_METHODS, ImageEvidence
from qdrant_xai.explain.words.integrated_gradients import IntegratedGradients
from qdrant_xai.testing import build_clip_processor, build_tiny_siglip, tiny_clip_config

torch.set_num_threads(1)

TEXTS = ["a red circle and a blue square", "yellow", "a green cross, and a purple triangle"]


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (32, 32), (64, 48)]
    return [
        Image.fromarray(rng.integers(0, 255, (*sizes[i % 3], 3), dtype=np.uint8)) for i in range(n)
    ]


@pytest.fixture(scope="module", params=[1, 2], ids=["siglip", "siglip2-fixres"])
def siglip_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_siglip(
        tmp_path_factory.mktemp(f"siglip{request.param}"), version=request.param
    )


@pytest.fixture(scope="module")
def siglip(siglip_dir: Path) -> ClipEncoder:
    return ClipEncoder.from_pretrained(siglip_dir)


@pytest.fixture(scope="module")
def biased(siglip_dir: Path) -> ClipEncoder:
    """The tiny SigLIP with every bias, layer-norm weight and the probe made random (a new
    model's are 0 and 1, which would hide the bias part and the layer norms' scales)."""
    model = SiglipModel.from_pretrained(siglip_dir, attn_implementation="eager")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name or name.endswith("probe"):
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(0.3 * noise)
    return ClipEncoder(model, AutoProcessor.from_pretrained(siglip_dir), model_id="biased")


def test_the_family_comes_from_the_config(siglip: ClipEncoder) -> None:
    assert siglip.family.name == "siglip"
    assert not siglip.family.causal_text
    assert siglip.grid == (4, 4) and siglip.dim == 32
    assert siglip.vision_tokens == 16
    assert SUPPORTED_MODEL_TYPES == ("clip", "siglip")


def test_embeddings_are_the_models_own_features(siglip: ClipEncoder, siglip_dir: Path) -> None:
    model = SiglipModel.from_pretrained(siglip_dir)
    processor = AutoProcessor.from_pretrained(siglip_dir)
    images = _images(3)
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")
        image_ref = model.get_image_features(**pixels).pooler_output
        tokens = processor(text=TEXTS, padding="max_length", truncation=True, return_tensors="pt")
        text_ref = model.get_text_features(**tokens).pooler_output
    image_ref = torch.nn.functional.normalize(image_ref, dim=-1).numpy()
    text_ref = torch.nn.functional.normalize(text_ref, dim=-1).numpy()
    assert tokens["input_ids"].shape[1] == 64  # SigLIP's fixed text length
    features = siglip.encode_images(images)
    np.testing.assert_allclose(np.stack([f.embedding for f in features]), image_ref, atol=1e-5)
    np.testing.assert_allclose(siglip.embed_images(images), image_ref, atol=1e-5)
    texts = siglip.encode_texts(TEXTS)
    np.testing.assert_allclose(np.stack([t.embedding for t in texts]), text_ref, atol=1e-5)
    np.testing.assert_allclose(siglip.embed_texts(TEXTS), text_ref, atol=1e-5)
    np.testing.assert_allclose(siglip.embed_texts(TEXTS[:1]), text_ref[:1], atol=1e-5)
    assert [w.text for w in texts[2].words] == [
        "a",
        "green",
        "cross",
        "and",
        "a",
        "purple",
        "triangle",
    ]


def test_head_parts_sum_exactly_to_the_embedding(biased: ClipEncoder) -> None:
    """``Σ_i C_i + B = y / |y|``: the linearised head splits y, it does not change it."""
    pixels = biased.pixel_values(_images(3, seed=1))
    vision = biased.model.vision_model
    with torch.no_grad():
        states = vision(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
        split = split_by_source(vision, states.hidden_states, states.attentions)
        out = run_siglip_image_tower(biased.model, pixels)
        reference = biased.model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(split.embeds, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(split.patches.sum(1) + split.biases, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(split.weights.sum(-1), torch.ones(3, 2), atol=1e-6, rtol=0)
    norm = reference.norm(dim=-1, keepdim=True)
    total = out.contributions.sum((1, 2)) + split.biases / norm
    torch.testing.assert_close(total, reference / norm, atol=1e-5, rtol=1e-5)


def _direct_paths_by_brute_force(vision: Any, pixels: torch.Tensor) -> torch.Tensor:
    """An independent reference of :func:`split_by_source`: the parts of EVERY token by
    source, [B, N + 1, N, D], kept layer by layer (the module doc's definition, in the
    plainest torch), then the post layer norm, the pooling head and its MLP applied to
    them; the patches' parts [B, N, D] of the image embedding."""
    out = vision(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    x = out.hidden_states[0]
    batch, n, width = x.shape
    eye = torch.arange(n)
    parts = x.new_zeros(batch, n + 1, n, width)  # source j (last: biases) at token i
    parts[:, eye, eye] = x
    for layer, attention in zip(vision.encoder.layers, out.attentions, strict=True):
        attn = layer.self_attn
        heads = attn.num_heads
        values = (layer.layer_norm1(x) @ attn.v_proj.weight.T).view(batch, n, heads, -1)
        for j in range(n):  # what layer moves from j to every token i
            from_j = torch.einsum("bhi,bhd->bihd", attention[:, :, :, j], values[:, j])
            parts[:, j] += from_j.reshape(batch, n, width) @ attn.out_proj.weight.T
        parts[:, -1] += attn.v_proj.bias @ attn.out_proj.weight.T + attn.out_proj.bias
        x_mid = parts.sum(1)
        mlp_out = layer.mlp(layer.layer_norm2(x_mid))
        parts[:, eye, eye] += mlp_out
        x = x_mid + mlp_out
    norm = vision.post_layernorm
    sigma = torch.sqrt(x.var(-1, unbiased=False) + norm.eps)  # [B, N]
    normed = (parts - parts.mean(-1, keepdim=True)) * norm.weight / sigma[:, None, :, None]
    normed[:, -1] += norm.bias
    head = vision.head
    pool = head.attention
    tokens = normed.sum(1)
    torch.testing.assert_close(tokens, out.last_hidden_state, atol=1e-5, rtol=1e-5)
    _, weights = pool(
        head.probe.expand(batch, 1, width), tokens, tokens, average_attn_weights=False
    )
    weights = weights[:, :, 0]  # [B, G, N]
    groups = weights.shape[1]
    values = normed @ pool.in_proj_weight[2 * width :].T
    values[:, -1] += pool.in_proj_bias[2 * width :]
    per_group = values.view(batch, n + 1, n, groups, -1)
    read = torch.einsum("bgi,bsigd->bsgd", weights, per_group).reshape(batch, n + 1, width)
    o_parts = read @ pool.out_proj.weight.T
    o_parts[:, -1] += pool.out_proj.bias
    o = o_parts.sum(1)
    ln = head.layernorm
    o_sigma = torch.sqrt(o.var(-1, unbiased=False, keepdim=True) + ln.eps)
    ln_parts = (o_parts - o_parts.mean(-1, keepdim=True)) * ln.weight / o_sigma[:, None]
    ln_parts[:, -1] += ln.bias
    pre = head.mlp.fc1(ln(o))
    gate = head.mlp.activation_fn(pre) / pre
    fc1_parts = ln_parts @ head.mlp.fc1.weight.T
    fc1_parts[:, -1] += head.mlp.fc1.bias
    y_parts = o_parts + (fc1_parts * gate[:, None]) @ head.mlp.fc2.weight.T
    y_parts[:, -1] += head.mlp.fc2.bias
    torch.testing.assert_close(y_parts.sum(1), out.pooler_output, atol=1e-5, rtol=1e-5)
    return y_parts[:, :-1]


def test_the_split_by_source_equals_a_brute_force_reference(biased: ClipEncoder) -> None:
    """The product's split (a read-out per pooling head, no [N, N, D] tensor) against the
    parts of every token kept explicitly, on a model with random biases and norms."""
    pixels = biased.pixel_values(_images(2, seed=3))
    vision = biased.model.vision_model
    with torch.no_grad():
        reference = _direct_paths_by_brute_force(vision, pixels)
        out = vision(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
        split = split_by_source(vision, out.hidden_states, out.attentions)
    torch.testing.assert_close(split.patches, reference, atol=2e-5, rtol=1e-4)
    # what the encoder stores: the same parts from the forward pass's recorded projections
    with torch.no_grad():
        tower = run_siglip_image_tower(biased.model, pixels)
    scale = tower.embeds.norm(dim=-1)[:, None, None]
    stored = tower.contributions.reshape(reference.shape) * scale
    torch.testing.assert_close(stored, reference, atol=2e-5, rtol=1e-4)


def test_how_much_of_the_embedding_the_patches_carry(
    siglip: ClipEncoder, biased: ClipEncoder
) -> None:
    """cos(Σ_i C_i, y): 1 for a new model (no biases), below 1 once biases carry a part;
    also ``Σ_i C_i · ŷ``, the patches' share of ``ŷ · ŷ = 1`` (the rest is the biases')."""
    shares = {}
    for name, encoder in (("as built", siglip), ("random biases", biased)):
        features = encoder.encode_images(_images(6, seed=2))
        cosines, along = [], []
        for f in features:
            total = f.contributions.reshape(-1, encoder.dim).sum(0)
            cosines.append(float(total @ f.embedding / np.linalg.norm(total)))
            along.append(float(total @ f.embedding))
        shares[name] = float(np.mean(cosines))
        print(
            f"SigLIP patch share, {name}: mean cos(sum C_i, y) = {shares[name]:.4f}, "
            f"mean sum C_i . y/|y| = {np.mean(along):.4f}"
        )
    assert shares["as built"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < shares["random biases"] <= 1.0 + 1e-6


def test_text_contributions_are_the_direct_paths_into_the_last_position(
    biased: ClipEncoder,
) -> None:
    """Σ_t c_t · |e| = head(LN-linearised Σ_l (attention output at T-1 − out-proj bias))."""
    text = biased.model.text_model
    batch = biased._tokenize(TEXTS, offsets=False)
    outputs: list[torch.Tensor] = []
    handles = [
        layer.self_attn.register_forward_hook(lambda _m, _i, out: outputs.append(out[0][:, -1]))
        for layer in text.encoder.layers
    ]
    residual: list[torch.Tensor] = []
    handles.append(
        text.final_layer_norm.register_forward_pre_hook(lambda _m, i: residual.append(i[0][:, -1]))
    )
    try:
        with torch.no_grad():
            out = biased.family.run_text_tower(
                biased.model, batch["input_ids"], batch["attention_mask"]
            )
    finally:
        for handle in handles:
            handle.remove()
    layers = text.encoder.layers
    direct = sum(
        o - layer.self_attn.out_proj.bias for o, layer in zip(outputs, layers, strict=True)
    )
    norm = text.final_layer_norm
    sigma = torch.sqrt(residual[0].var(-1, unbiased=False, keepdim=True) + norm.eps)
    expected = ((direct - direct.mean(-1, keepdim=True)) * norm.weight / sigma) @ text.head.weight.T
    got = out.contributions.sum(1) * out.embeds.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=1e-4)
    assert (out.eos_index == batch["input_ids"].shape[1] - 1).all()


def test_fingerprints_tell_families_and_checkpoints_apart(
    siglip: ClipEncoder, tmp_path: Path
) -> None:
    other = ClipEncoder.from_pretrained(build_tiny_siglip(tmp_path / "other", seed=1))
    assert siglip.fingerprint.family == "siglip"
    assert siglip.fingerprint.legacy_key is None
    assert siglip.fingerprint.key != other.fingerprint.key
    model = siglip.model
    assert hash_weights(model, family="siglip") != hash_weights(model, family="clip")


def test_an_openclip_shaped_clip_loads_with_its_own_fingerprint(
    tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    """LAION OpenCLIP checkpoints in the HF CLIP format: gelu, projection ≠ width."""
    processor = build_clip_processor(image_size=32, model_max_length=32)
    config = tiny_clip_config(
        processor.tokenizer,
        image_size=32,
        patch_size=8,
        vision_hidden_size=32,
        vision_layers=2,
        vision_heads=2,
        text_hidden_size=24,
        text_layers=2,
        text_heads=2,
        context_length=32,
        projection_dim=20,
    )
    config.text_config.hidden_act = config.vision_config.hidden_act = "gelu"
    torch.manual_seed(3)
    CLIPModel(config).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    encoder = ClipEncoder.from_pretrained(tmp_path)
    assert encoder.family.name == "clip" and encoder.dim == 20
    assert encoder.model.config.vision_config.hidden_act == "gelu"
    assert encoder.encode_images(_images(1))[0].contributions.shape == (4, 4, 20)
    assert encoder.fingerprint.key != tiny_encoder.fingerprint.key
    assert encoder.fingerprint.legacy_key is not None


def test_other_model_types_are_refused_naming_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="'clip', 'siglip'") as raised:
        family_of("bert", model_id="bert-base")
    assert isinstance(raised.value, ModelLoadError)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "siglip2"}))
    with pytest.raises(UnsupportedModelError, match="NaFlex"):
        ClipEncoder.from_pretrained(tmp_path)


def test_prefix_refuses_siglip_naming_the_methods_that_work(siglip: ClipEncoder) -> None:
    target = siglip.embed_images(_images(1))
    with pytest.raises(UnsupportedMethodError, match="causal") as raised:
        WORD_METHODS.create("prefix").attribute(siglip, TEXTS[:1], target)
    assert "'tokens'" in str(raised.value) and "'ig'" in str(raised.value)
    assert siglip.query_prefixes is False


@pytest.mark.parametrize("method", ["tokens", "occlusion", "context", "ig"])
def test_word_methods_run_on_siglip(siglip: ClipEncoder, method: str) -> None:
    targets = siglip.embed_images(_images(2))
    results = WORD_METHODS.create(method).attribute(siglip, TEXTS[:2], targets)
    assert [len(words) for words, _ in results] == [7, 1]
    assert all(np.isfinite(scores).all() and len(scores) == len(words) for words, scores in results)


def test_integrated_gradients_stays_complete_on_siglip(siglip: ClipEncoder) -> None:
    targets = siglip.embed_images(_images(2))
    _, check = IntegratedGradients(steps=32).attribute_with_check(siglip, TEXTS[:2], targets)
    np.testing.assert_allclose(
        check.token_totals, check.input_scores - check.baseline_scores, atol=2e-3
    )


def test_heatmaps_decomposition_runs_and_clip_only_methods_refuse(siglip: ClipEncoder) -> None:
    features = siglip.encode_images(_images(2))
    evidence = ImageEvidence(
        embeddings=np.stack([f.embedding for f in features]),
        contributions=np.stack([f.contributions for f in features]),
    )
    query = siglip.embed_texts(TEXTS[:1])[0]
    maps = (
        HEATMAP_METHODS.create("decomposition")
        .check_model(siglip)
        .heatmaps(siglip, evidence, query)
    )
    assert maps.shape == (2, 4, 4)
    np.testing.assert_allclose(maps[0], features[0].contributions @ query, atol=1e-6)
    with pytest.raises(UnsupportedMethodError, match="'decomposition'"):
        HEATMAP_METHODS.create("grad-eclip").check_model(siglip)


def test_decompx_traces_every_layer_and_sums_exactly(biased: ClipEncoder) -> None:
    """SigLIP's every-layer split (``decompx``): parts over patches plus biases are the
    embedding, exactly; it differs from the default split (which stops at one attention
    hop), and the ``decompx`` heatmap method runs on SigLIP images with it."""
    images = _images(2, seed=4)
    pixels = biased.pixel_values(images)
    with torch.no_grad():
        full = siglip_source_contributions(biased.model, pixels)
        reference = biased.model.get_image_features(pixel_values=pixels).pooler_output
        direct = run_siglip_image_tower(biased.model, pixels).contributions
    torch.testing.assert_close(full.embeds, reference, atol=1e-5, rtol=1e-5)
    unit = reference / reference.norm(dim=-1, keepdim=True)
    total = full.patches.sum((1, 2)) + full.class_token + full.biases
    torch.testing.assert_close(total, unit, atol=1e-5, rtol=1e-5)
    assert not full.class_token.any()
    assert (full.patches - direct).norm() > 0.05 * direct.norm()
    method = HEATMAP_METHODS.create("decompx").check_model(biased)
    query = biased.embed_texts(TEXTS[:1])[0]
    maps = method.heatmaps(biased, ImageEvidence(images=images), query)
    assert maps.shape == (2, *biased.grid) and np.isfinite(maps).all()


def test_a_word_method_for_other_families_refuses_siglip(siglip: ClipEncoder) -> None:
    """A registered word method that names only CLIP is refused with the usable ones."""

    class ClipOnlyTokens(type(WORD_METHODS.create("tokens"))):  # type: ignore[misc]
        name = "clip-only-tokens"
        families = frozenset({"clip"})

    with pytest.raises(UnsupportedMethodError, match="'clip-only-tokens' cannot explain") as raised:
        ClipOnlyTokens().check_model(siglip)
    assert "'tokens'" in str(raised.value) and "'prefix'" not in str(raised.value)
    assert WORD_METHODS.create("tokens").check_model(siglip).name == "tokens"
