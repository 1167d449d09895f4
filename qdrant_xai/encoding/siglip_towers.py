"""Per-patch and per-token contributions to SigLIP's embeddings (SigLIP and SigLIP 2).

Zhai et al., *Sigmoid Loss for Language Image Pre-Training*, ICCV 2023,
https://arxiv.org/abs/2303.15343; Tschannen et al., *SigLIP 2*, 2025,
https://arxiv.org/abs/2502.14786 (its fixed-resolution checkpoints are ``SiglipModel``s).

**Image tower.** SigLIP has no class token: ``post_layernorm`` is applied to every token
``h_i`` (``[B, N, D]``, ``N = gh * gw`` patches), and a multi-head attention-pooling head
reads them. A learned probe ``p`` attends over the patches (per head ``h``: weights
``a[h, i] = softmax_i((p W_q + b_q)_h · (h_i W_k + b_k)_h / sqrt(d))``), so the head's
attention output is, exactly,

    o = Σ_i c_i + b,    c_i = concat_h(a[h, i] · (h_i W_v)_h) · W_O,    b = b_v W_O + b_O

(``Σ_i a[h, i] = 1``, so the value bias passes whole into ``b``). The head then adds its
MLP over its layer norm, ``y = o + MLP(LN(o))``, and ``y`` is the image embedding
(``get_image_features(...).pooler_output``; SigLIP has no projection after the head). The
layer norm and MLP are linearised at the pooled vector ``o``: the layer norm with ``o``'s
own mean and deviation (then linear in its input), the activation as the per-unit gate
``act(z) / z`` at the real pre-activation ``z = fc1(LN(o))`` (then ``act(z) = gate ⊙ z``),
and each part ``c_i`` (and ``b``) is carried through these linear maps, biases going to
``b``'s part. Parts so carried sum to ``y`` *exactly* (to float rounding): the
linearisation fixes how ``y`` is split, not its value. Patch ``i``'s contribution is its
carried part ``C_i`` divided by ``|y|``, so that

    Σ_i C_i + B = y / |y|      (``B``: the part of the biases and layer-norm shifts)

and ``C_i · t`` is patch ``i``'s share of ``cos(image, t)`` for a normalised ``t``. What
reaches token ``i`` from other patches in the encoder layers below stays with position
``i``: the direct-path decomposition of :mod:`.towers` (attention rows of the pooled
token at every layer) has no analogue without a pooled token inside the encoder, so here
the split is by the position the head reads. How much of the embedding the patches carry,
``cos(Σ_i C_i, y)``, is measured by the tests.

**Text tower.** SigLIP's text tower is bidirectional (no causal mask) and pools the LAST
position (often a pad token, as texts are padded to a fixed length), through
``final_layer_norm`` and a linear ``head``. The direct contributions of :mod:`.towers`
apply as for CLIP with the pooled position ``T - 1``: every layer's attention row of that
position, the final layer norm linearised at its residual, the head's weight (its bias is
in no token's part). As for CLIP, they sum to the direct attention paths into the pooled
token, not to the whole embedding.

**Scores.** Explanations refer to the cosine Qdrant ranks by. SigLIP's own score is
``sigmoid(exp(logit_scale) · cos + logit_bias)``: monotone in the cosine, so rankings
agree, but shares of the cosine are not shares of that probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from qdrant_xai.encoding.towers import (
    ImageTowerOutput,
    TextTowerOutput,
    _direct_contributions,
    _gate,
    _project_linearised,
    _record_attention,
    _split_norm,
)

__all__ = [
    "PooledParts",
    "pool_each_token",
    "run_siglip_image_tower",
    "run_siglip_text_tower",
    "split_attention_pool",
]


@dataclass
class PooledParts:
    """The attention-pooling head's output split by the patch the head read.

    Attributes:
        embeds: [B, D] the head's output ``y`` (the image embedding, not normalised).
        patches: [B, N, D] part ``C_i · |y|`` of each patch token (module doc).
        biases: [B, D] part of the biases and layer-norm shifts.
        weights: [B, H, N] the probe's attention over the patches, per head.

    ``patches.sum(1) + biases == embeds`` (to float rounding).
    """

    embeds: Tensor
    patches: Tensor
    biases: Tensor
    weights: Tensor


def split_attention_pool(head: Any, tokens: Tensor) -> PooledParts:
    """Runs SigLIP's attention-pooling head on ``tokens`` and splits its output by token.

    Args:
        head: ``vision_model.head`` (probe, ``nn.MultiheadAttention``, layer norm, MLP).
        tokens: [B, N, D] the vision tower's output after ``post_layernorm``.
    """
    attention: nn.MultiheadAttention = head.attention
    batch, n_tokens, width = tokens.shape
    heads = attention.num_heads
    probe = head.probe.expand(batch, 1, width)
    pooled, weights = attention(
        probe, tokens, tokens, need_weights=True, average_attn_weights=False
    )  # [B, 1, D], [B, H, 1, N]
    pooled, weights = pooled[:, 0], weights[:, :, 0]
    w_v = attention.in_proj_weight[2 * width :]
    b_v = attention.in_proj_bias[2 * width :]
    values = (tokens @ w_v.T).view(batch, n_tokens, heads, width // heads)
    mixed = torch.einsum("bhn,bnhd->bnhd", weights.to(values.dtype), values)
    moved = mixed.reshape(batch, n_tokens, width) @ attention.out_proj.weight.T
    bias = b_v @ attention.out_proj.weight.T + attention.out_proj.bias  # [D]
    parts = torch.cat([moved, bias.expand(batch, 1, width)], dim=1)  # [B, N + 1, D]
    # y = o + MLP(LN(o)), carried part by part with o's statistics and the real gates
    normed = _split_norm(parts[:, :, None], pooled[:, None], head.layernorm)[:, :, 0]
    mlp = head.mlp
    pre = mlp.fc1(head.layernorm(pooled))  # [B, 4D]
    pre_parts = normed @ mlp.fc1.weight.T
    pre_parts[:, -1] += mlp.fc1.bias
    out_parts = (pre_parts * _gate(pre, mlp.activation_fn)[:, None]) @ mlp.fc2.weight.T
    out_parts[:, -1] += mlp.fc2.bias
    total = parts + out_parts
    embeds = pooled + mlp.fc2(mlp.activation_fn(pre))
    return PooledParts(embeds=embeds, patches=total[:, :-1], biases=total[:, -1], weights=weights)


def pool_each_token(head: Any, tokens: Tensor) -> Tensor:
    """[B, N, D] the head's output for each token read alone (its attention weight 1): the
    SigLIP analogue of CLIP's projected patch tokens (the ``patch_similarity`` baseline)."""
    attention: nn.MultiheadAttention = head.attention
    width = tokens.shape[-1]
    values = tokens @ attention.in_proj_weight[2 * width :].T + attention.in_proj_bias[2 * width :]
    pooled = attention.out_proj(values)
    out: Tensor = pooled + head.mlp(head.layernorm(pooled))
    return out


def run_siglip_image_tower(model: Any, pixel_values: Tensor) -> ImageTowerOutput:
    """One SigLIP vision forward pass yielding embeddings, contributions and patch tokens.

    Args:
        model: a ``SiglipModel`` loaded with ``attn_implementation="eager"``.
        pixel_values: [B, 3, H, W] as produced by the SigLIP image processor.

    Returns:
        ``embeds`` [B, P] (``get_image_features(...).pooler_output``), ``contributions``
        [B, gh, gw, P] (``C_i`` of the module doc: with the bias part they sum to
        ``embeds / |embeds|``), ``patch_tokens`` [B, gh, gw, P] (:func:`pool_each_token`)
        and ``last_layer_inputs`` [B, gh*gw, D] (no class token).
    """
    vision = model.vision_model
    layers = vision.encoder.layers
    entering: list[Tensor] = []

    def on_last_layer(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        entering.append(args[0] if args else kwargs["hidden_states"])

    handle = layers[-1].register_forward_pre_hook(on_last_layer, with_kwargs=True)
    try:
        outputs = vision(pixel_values=pixel_values)
    finally:
        handle.remove()
    tokens = outputs.last_hidden_state  # [B, N, D], after post_layernorm
    split = split_attention_pool(vision.head, tokens)
    embeds = outputs.pooler_output
    scale = embeds.norm(dim=-1).clamp_min(1e-12)[:, None, None]
    batch = pixel_values.shape[0]
    patch = int(model.config.vision_config.patch_size)
    grid_h, grid_w = int(pixel_values.shape[-2]) // patch, int(pixel_values.shape[-1]) // patch
    return ImageTowerOutput(
        embeds=embeds,
        contributions=(split.patches / scale).reshape(batch, grid_h, grid_w, -1),
        patch_tokens=pool_each_token(vision.head, tokens).reshape(batch, grid_h, grid_w, -1),
        last_layer_inputs=entering[0],
    )


def run_siglip_text_tower(
    model: Any, input_ids: Tensor, attention_mask: Tensor | None
) -> TextTowerOutput:
    """One SigLIP text forward pass yielding embeddings and per-token contributions.

    Args:
        model: a ``SiglipModel`` loaded with ``attn_implementation="eager"``.
        input_ids: [B, T] padded to the fixed length the model was trained with.
        attention_mask: [B, T] or ``None`` (what the checkpoint's tokenizer returns).

    Returns:
        ``embeds`` [B, P] (``get_text_features(...).pooler_output``), ``contributions``
        [B, T, P] (direct attention paths into the last position, divided by
        ``|embeds|``; module doc) and ``eos_index`` [B] (``T - 1`` for every text).
    """
    text = model.text_model
    batch, length = input_ids.shape
    pooled_at = torch.full((batch,), length - 1, dtype=torch.long, device=input_ids.device)
    layers = text.encoder.layers
    with _record_attention(layers, pooled_at, final_norm=text.final_layer_norm) as recording:
        outputs = text(input_ids=input_ids, attention_mask=attention_mask)
    if recording.final_residual is None:  # pragma: no cover - the hook always fires
        raise RuntimeError("the text tower's final layer norm was not called")
    embeds = outputs.pooler_output
    residual = recording.final_residual[:, -1]
    per_token = _direct_contributions(recording, layers)
    projected = _project_linearised(per_token, residual, text.final_layer_norm, text.head)
    projected = projected / embeds.norm(dim=-1).clamp_min(1e-12)[:, None, None]
    return TextTowerOutput(embeds=embeds, contributions=projected, eos_index=pooled_at)
