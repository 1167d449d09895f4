"""The full (every layer) split of the image embedding into per-token parts (DecompX).

Two independent checks: the parts add up to the real embedding, and each patch's part,
read along a direction, equals gradient × input of a separately written "frozen" vision
tower (attention weights, layer-norm scales and MLP gates held at their forward values, so
the tower is linear in its input tokens: the identity DecompX's propagation rests on).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from qdrant_xai import ClipEncoder
from qdrant_xai.demo.world import generate_scenes
from qdrant_xai.encoding.towers import image_source_contributions, run_image_tower


@pytest.fixture(scope="module")
def pixels(tiny_encoder: ClipEncoder) -> torch.Tensor:
    images = [scene.image for scene in generate_scenes(3, seed=13, size=64)]
    return tiny_encoder.pixel_values(images)


def test_parts_add_up_to_the_normalised_embedding(
    tiny_encoder: ClipEncoder, pixels: torch.Tensor
) -> None:
    with torch.inference_mode():
        out = image_source_contributions(tiny_encoder.model, pixels)
        direct = run_image_tower(tiny_encoder.model, pixels)
    assert out.patches.shape == (3, *tiny_encoder.grid, tiny_encoder.dim)
    assert out.class_token.shape == out.biases.shape == (3, tiny_encoder.dim)
    torch.testing.assert_close(out.embeds, direct.embeds, atol=1e-5, rtol=1e-5)
    unit = out.embeds / out.embeds.norm(dim=-1, keepdim=True)
    total = out.patches.sum(dim=(1, 2)) + out.class_token + out.biases
    torch.testing.assert_close(total, unit, atol=1e-5, rtol=1e-5)
    # the full parts are not the direct path's: other tokens carry patches too
    assert not torch.allclose(out.patches, direct.contributions, atol=1e-3)


def test_a_batch_equals_its_images_one_by_one(
    tiny_encoder: ClipEncoder, pixels: torch.Tensor
) -> None:
    with torch.inference_mode():
        batch = image_source_contributions(tiny_encoder.model, pixels)
        for i in range(len(pixels)):
            one = image_source_contributions(tiny_encoder.model, pixels[i : i + 1])
            torch.testing.assert_close(one.patches[0], batch.patches[i], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(one.biases[0], batch.biases[i], atol=1e-5, rtol=1e-4)


def _frozen_embedding(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's vision tower written out by hand, with every nonlinearity's forward value held
    fixed (detached): a linear function of ``tokens`` [1, N, D] plus constants."""
    vision = model.vision_model

    def norm(x: torch.Tensor, ln: Any) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        scale = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps).detach()
        return (x - mean) / scale * ln.weight + ln.bias

    x = norm(tokens, vision.pre_layrnorm)
    for layer in vision.encoder.layers:
        attn = layer.self_attn
        heads, n, width = attn.num_heads, x.shape[1], x.shape[2]
        h = norm(x, layer.layer_norm1)
        q, k, v = (
            proj(h).view(1, n, heads, width // heads).transpose(1, 2)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
        weights = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1).detach()
        x = x + attn.out_proj((weights @ v).transpose(1, 2).reshape(1, n, width))
        pre = layer.mlp.fc1(norm(x, layer.layer_norm2))
        gate = (layer.mlp.activation_fn(pre) / pre).detach()
        x = x + layer.mlp.fc2(gate * pre)
    return model.visual_projection(norm(x[:, 0], vision.post_layernorm))[0]


def test_each_part_is_gradient_times_input_of_the_frozen_tower(
    tiny_encoder: ClipEncoder, pixels: torch.Tensor
) -> None:
    model = tiny_encoder.model
    direction = torch.randn(tiny_encoder.dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = image_source_contributions(model, pixels[:1])
    with torch.no_grad():
        tokens = model.vision_model.embeddings(pixel_values=pixels[:1])
    tokens = tokens.clone().requires_grad_(True)
    embedding = _frozen_embedding(model, tokens)
    torch.testing.assert_close(embedding.detach(), out.embeds[0], atol=1e-5, rtol=1e-5)
    (embedding @ direction).backward()
    assert tokens.grad is not None
    reference = (tokens.grad * tokens).sum(-1)[0, 1:] / embedding.detach().norm()
    ours = (out.patches[0] @ direction).flatten()
    assert torch.corrcoef(torch.stack([reference, ours]))[0, 1] > 0.99
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
