"""Replaying the last layer of CLIP's vision tower from its stored input.

Gradient methods (Grad-ECLIP, last-layer GAE) and the raw patch tokens need only the last
encoder layer and the head: ``x_L`` (the residual stream entering the last layer, [B, N, D]
with N = 1 + gh*gw) determines the image embedding. Indexing with the ``full`` feature
profile stores ``x_L``, so these methods run at query time without reading the image.

The layer is spelled out from its modules (``layer_norm1``, ``q/k/v/out_proj``, ``mlp``,
``layer_norm2``, ``post_layernorm``, ``visual_projection``) so that the attention map, the
values and the attention output at the class token are tensors on the autograd graph.
:func:`replay_last_layer` reproduces the model's own forward pass (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["LastLayerOutput", "replay_last_layer", "surgery_patch_tokens"]


@dataclass
class LastLayerOutput:
    """Tensors of one replay of the last vision layer (all on the autograd graph).

    Attributes:
        embeds: [B, P] projected image embeddings (not normalised).
        patch_tokens: [B, N-1, P] patch tokens after ``post_layernorm`` and the projection.
        attention: [B, H, N, N] attention weights (softmax).
        logits: [B, H, N] scaled attention logits ``q_cls · k_i`` of the class token.
        values: [B, N, D] value vectors (heads concatenated, bias included).
        attention_output: [B, N, D] attention output before ``out_proj`` (take gradients
            here; ``cls_output`` is a view of its class-token row).
    """

    embeds: Tensor
    patch_tokens: Tensor
    attention: Tensor
    logits: Tensor
    values: Tensor
    attention_output: Tensor

    @property
    def cls_output(self) -> Tensor:
        """[B, D] attention output at the class token, before ``out_proj``."""
        return self.attention_output[:, 0]


def replay_last_layer(model: Any, hidden: Tensor) -> LastLayerOutput:
    """Runs the last vision encoder layer, ``post_layernorm`` and the projection.

    Args:
        model: a ``CLIPModel``.
        hidden: [B, N, D] the residual stream entering the last layer.
    """
    vision = model.vision_model
    layer = vision.encoder.layers[-1]
    attn = layer.self_attn
    batch, n_tokens, width = hidden.shape
    heads = attn.num_heads
    head_dim = width // heads

    normed = layer.layer_norm1(hidden)

    def split(x: Tensor) -> Tensor:
        return x.view(batch, n_tokens, heads, head_dim).transpose(1, 2)

    queries, keys = split(attn.q_proj(normed)), split(attn.k_proj(normed))
    values = attn.v_proj(normed)
    scores = (queries @ keys.transpose(-1, -2)) * attn.scale  # [B, H, N, N]
    attention = scores.softmax(dim=-1)
    mixed = attention @ split(values)  # [B, H, N, hd]
    mixed = mixed.transpose(1, 2).reshape(batch, n_tokens, width)
    residual = hidden + attn.out_proj(mixed)
    out = residual + layer.mlp(layer.layer_norm2(residual))
    normed_out = vision.post_layernorm(out)
    projection = model.visual_projection
    return LastLayerOutput(
        embeds=projection(normed_out[:, 0]),
        patch_tokens=projection(normed_out[:, 1:]),
        attention=attention,
        logits=scores[:, :, 0, :],
        values=values,
        attention_output=mixed,
    )


def surgery_patch_tokens(model: Any, hidden: Tensor) -> Tensor:
    """Patch tokens of the last layer's value-value attention path (CLIP Surgery).

    Li et al., *CLIP Surgery for Better Explainability with Enhancement in Open-Vocabulary
    Tasks*, 2023, https://arxiv.org/abs/2304.05653 ("architecture surgery"): the last
    layer's query-key attention mixes every patch with the global context, and the
    residual stream and MLP carry what all patches share. Attending values to values
    (``softmax(v vᵀ · scale) v``) and skipping the residual and the MLP keeps each patch's
    own content: ``p_i = W_proj · post_layernorm(out_proj(Σ_j a_ij v_j))``.

    Args:
        model: a ``CLIPModel``.
        hidden: [B, N, D] the residual stream entering the last layer.

    Returns:
        [B, N-1, P] projected patch tokens of the surgery path.
    """
    vision = model.vision_model
    attn = vision.encoder.layers[-1].self_attn
    layer = vision.encoder.layers[-1]
    batch, n_tokens, width = hidden.shape
    heads = attn.num_heads
    values = attn.v_proj(layer.layer_norm1(hidden))
    values = values.view(batch, n_tokens, heads, width // heads).transpose(1, 2)
    weights = ((values @ values.transpose(-1, -2)) * attn.scale).softmax(dim=-1)
    mixed = (weights @ values).transpose(1, 2).reshape(batch, n_tokens, width)
    out = attn.out_proj(mixed)
    return model.visual_projection(vision.post_layernorm(out[:, 1:]))


def as_tensor(model: Any, array: Any) -> Tensor:
    """A numpy array of last-layer inputs as a tensor on the model's device and dtype
    (copied: payload arrays may be read-only views)."""
    parameter = next(model.parameters())
    return torch.tensor(array).to(device=parameter.device, dtype=parameter.dtype)
