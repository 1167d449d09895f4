"""Per-patch and per-token contributions to SigLIP's embeddings (SigLIP and SigLIP 2).

Zhai et al., *Sigmoid Loss for Language Image Pre-Training*, ICCV 2023,
https://arxiv.org/abs/2303.15343; Tschannen et al., *SigLIP 2*, 2025,
https://arxiv.org/abs/2502.14786 (its fixed-resolution checkpoints are ``SiglipModel``s).

**Image tower.** SigLIP has no class token: ``post_layernorm`` is applied to every token
``h_i`` (``[B, N, D]``, ``N = gh * gw`` patches), and a multi-head attention-pooling head
reads them. A learned probe ``p`` attends over the tokens (per head ``g``: weights
``a[g, i] = softmax_i((p W_q + b_q)_g · (LN(h_i) W_k + b_k)_g / sqrt(d))``), so the head's
attention output is, exactly,

    o = concat_g(Σ_i a[g, i] · (LN(h_i) W_v)_g) · W_O + b,    b = b_v W_O + b_O

(``Σ_i a[g, i] = 1``, so the value bias passes whole into ``b``). The head then adds its
MLP over its layer norm, ``y = o + MLP(LN(o))``, and ``y`` is the image embedding
(``get_image_features(...).pooler_output``; SigLIP has no projection after the head).

Splitting ``o`` by the token the probe reads would attribute to token ``i`` everything
the encoder moved into it, and a trained SigLIP's probe reads tokens that gathered the
picture from elsewhere (``docs/explanations.md`` measures both splits). So the split goes down
the residual stream, as Gandelsman et al. do for CLIP's class token: each final token is
the sum of its input embedding (patch plus position), every attention layer's output at
it and every MLP's output at it; an attention layer's output at ``i`` is
``Σ_j Σ_h A[h, i, j] (LN(x_j) W_v)_h W_O[h]`` plus biases, and the term of source ``j``
(``x_j`` is the whole residual stream at ``j`` entering that layer, not traced further
down: the direct path) goes to patch ``j``. A token's own embedding and its MLP outputs
stay with it; biases go to a bias part. With the real forward pass's attention weights
these parts of every final token are exact. ``post_layernorm`` is linear in them given
each token's own mean and deviation, and the pooling head's weights are known, so patch
``j``'s part of ``o`` is its parts of every token, weighted by ``a[g, i] / σ_i`` and read
through the head's value and out projections. The layers' values and attention outputs
are recorded from the forward pass; the cost is one more ``N x D x D`` product per layer
(each head's values through its slice of the out projection), with no ``N x N x D``
tensor. The head's layer norm
and MLP are linearised at the pooled vector ``o``: the layer norm with ``o``'s own mean
and deviation, the activation as the per-unit gate ``act(z) / z`` at the real
pre-activation ``z = fc1(LN(o))``, each part carried through these linear maps, biases
going to the bias part. Parts so carried sum to ``y`` *exactly* (to float rounding): the
linearisations fix how ``y`` is split, not its value. Patch ``j``'s contribution is its
part ``C_j`` divided by ``|y|``, so that

    Σ_j C_j + B = y / |y|      (``B``: the part of the biases and layer-norm shifts)

and ``C_j · t`` is patch ``j``'s share of ``cos(image, t)`` for a normalised ``t``. How much
of the embedding the patches carry, ``cos(Σ_j C_j, y)``, is measured by the tests.

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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from qdrant_xai.encoding.towers import (
    ImageSourceContributions,
    ImageTowerOutput,
    TextTowerOutput,
    _direct_contributions,
    _gate,
    _patch_grid,
    _project_linearised,
    _record_attention,
    _split_layer,
    _split_norm,
)

__all__ = [
    "PooledParts",
    "pool_each_token",
    "run_siglip_image_tower",
    "run_siglip_text_tower",
    "siglip_source_contributions",
    "split_by_source",
]


@dataclass
class PooledParts:
    """The attention-pooling head's output split by source patch (module doc).

    Attributes:
        embeds: [B, D] the head's output ``y`` (the image embedding, not normalised).
        patches: [B, N, D] part ``C_j · |y|`` of each patch.
        biases: [B, D] part of the biases and layer-norm shifts.
        weights: [B, G, N] the probe's attention over the tokens, per pooling head.

    ``patches.sum(1) + biases == embeds`` (to float rounding).
    """

    embeds: Tensor
    patches: Tensor
    biases: Tensor
    weights: Tensor


def split_by_source(
    vision: Any,
    hidden_states: Sequence[Tensor],
    attentions: Sequence[Tensor],
    recorded: Sequence[tuple[Tensor, Tensor]] | None = None,
) -> PooledParts:
    """SigLIP's image embedding split by source patch along the direct paths (module doc).

    Args:
        vision: ``model.vision_model`` (encoder layers, ``post_layernorm``, ``head``).
        hidden_states: the encoder's ``L + 1`` residual streams [B, N, D] (the embeddings,
            then each layer's output, before ``post_layernorm``).
        attentions: each layer's attention weights [B, H, N, N] of that forward pass.
        recorded: per layer, the value projection's and the attention's outputs of that
            pass (:func:`_recording_attention`), so they are not computed again; ``None``:
            computed here.
    """
    final = hidden_states[-1]
    batch, n_tokens, width = final.shape
    pooled, weights, read = _probe(vision, final)

    stays = hidden_states[0].clone()  # [B, N, D] what stays at its own position
    bias = final.new_zeros(width)  # attention biases, the same at every position
    parts = final.new_zeros(batch, weights.shape[1], n_tokens, width)  # [B, G, N, D]
    layers = vision.encoder.layers
    for index, (layer, x, after, attention) in enumerate(
        zip(layers, hidden_states[:-1], hidden_states[1:], attentions, strict=True)
    ):
        attn = layer.self_attn
        heads = attn.num_heads
        layer_bias = attn.v_proj.bias @ attn.out_proj.weight.T + attn.out_proj.bias
        if recorded is None:
            values = layer.layer_norm1(x) @ attn.v_proj.weight.T
            attended = None
        else:
            values, attended = recorded[index]
            values = values - attn.v_proj.bias
        values = values.view(batch, n_tokens, heads, -1)
        w_o = attn.out_proj.weight.T.reshape(heads, -1, width)  # [H, d, D]
        moved = torch.einsum("bjhd,hde->bhje", values, w_o)  # [B, H, N, D] from source j
        attention = attention.to(final.dtype)
        # pooling head g reads source j through this layer: Σ_i read[g, i] A[h, i, j]
        through = torch.einsum("bgi,bhij->bghj", read, attention)
        parts += torch.einsum("bghj,bhje->bgje", through, moved)
        if attended is None:  # the layer's attention output
            mixed = torch.einsum("bhij,bjhd->bihd", attention, values).reshape(x.shape)
            attended = mixed @ attn.out_proj.weight.T + layer_bias
        stays += after - x - attended  # the MLP's output, where it was computed
        bias += layer_bias
    parts += read[..., None] * stays[:, None]
    bias_part = read.sum(-1)[..., None] * bias  # [B, G, D]
    total, embeds = _through_head(vision, torch.cat([parts, bias_part[:, :, None]], 2), pooled)
    return PooledParts(embeds=embeds, patches=total[:, :-1], biases=total[:, -1], weights=weights)


def siglip_source_contributions(model: Any, pixel_values: Tensor) -> ImageSourceContributions:
    """SigLIP's image embedding as an exact sum over input patches, every layer's mix traced
    (DecompX's propagation, as :func:`~.towers.image_source_contributions` does for CLIP).

    Every layer is replayed on the per-source parts of the residual stream with the real
    forward pass's attention weights, layer-norm statistics and MLP gates, so what reaches a
    token from other patches is credited to those patches (the default split stops at one
    attention hop); then the pooling head's read-out and linearised MLP as in
    :func:`split_by_source`. Cost: the layers' linear maps run on ``gh*gw + 1`` copies of
    the stream, about that many forward passes. ``class_token`` is zero (SigLIP has none).

    Args:
        model: a ``SiglipModel`` loaded with ``attn_implementation="eager"``.
        pixel_values: [B, 3, H, W] as produced by the SigLIP image processor.
    """
    vision = model.vision_model
    x = vision.embeddings(pixel_values=pixel_values)  # [B, N, D], patches + positions
    batch, n_tokens, width = x.shape
    parts = x.new_zeros(batch, n_tokens + 1, n_tokens, width)  # source s at token i
    tokens = torch.arange(n_tokens, device=x.device)
    parts[:, tokens, tokens] = x
    for layer in vision.encoder.layers:
        x, parts = _split_layer(layer, x, parts, last=False)
    pooled, _, read = _probe(vision, x)
    by_source = torch.einsum("bgi,bsid->bgsd", read, parts)  # [B, G, N + 1, D]
    total, embeds = _through_head(vision, by_source, pooled)
    total = total / embeds.norm(dim=-1).clamp_min(1e-12)[:, None, None]
    grid_h, grid_w = _patch_grid(model, pixel_values)
    return ImageSourceContributions(
        embeds=embeds,
        patches=total[:, :-1].reshape(batch, grid_h, grid_w, -1),
        class_token=torch.zeros_like(embeds),
        biases=total[:, -1],
    )


def _probe(vision: Any, final: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pooling head's probe on the final residual stream ``final`` [B, N, D]: the head's
    attention output ``o`` [B, D], its weights ``a`` [B, G, N] and how much of each token's
    stream each pooling head reads through ``post_layernorm``, ``a / σ_i`` [B, G, N]."""
    head, norm = vision.head, vision.post_layernorm
    tokens = norm(final)
    probe = head.probe.expand(final.shape[0], 1, final.shape[-1])
    pooled, weights = head.attention(
        probe, tokens, tokens, need_weights=True, average_attn_weights=False
    )
    weights = weights[:, :, 0].to(final.dtype)
    sigma = torch.sqrt(final.var(dim=-1, unbiased=False) + norm.eps)  # [B, N]
    return pooled[:, 0], weights, weights / sigma[:, None]


def _through_head(vision: Any, read: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
    """Parts of the final streams as each pooling head reads them, [B, G, S, D] (last:
    biases; already weighted by ``a / σ``), through ``post_layernorm`` (its centring and
    scale; its shift to the biases, ``Σ_i a[g, i] = 1``), the head's value and out
    projections, head by head, and its linearised MLP: ``(parts of y [B, S, D], y)``."""
    head, norm = vision.head, vision.post_layernorm
    pool: nn.MultiheadAttention = head.attention
    batch, groups, sources, width = read.shape
    centred = (read - read.mean(dim=-1, keepdim=True)) * norm.weight
    centred[:, :, -1] += norm.bias
    w_v = pool.in_proj_weight[2 * width :].reshape(groups, -1, width)  # [G, d, D]
    values = torch.einsum("bgne,gde->bngd", centred, w_v).reshape(batch, sources, width)
    values[:, -1] += pool.in_proj_bias[2 * width :]
    head_parts = values @ pool.out_proj.weight.T
    head_parts[:, -1] += pool.out_proj.bias
    return _through_head_mlp(head, head_parts, pooled)


@contextmanager
def _recording_attention(layers: Any) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Records, per encoder layer, the value projection's output (bias included) and the
    attention's output (out projection and its bias included) of the next forward pass."""
    values: list[Tensor] = []
    outputs: list[Tensor] = []
    recorded: list[tuple[Tensor, Tensor]] = []

    def on_values(_module: nn.Module, _args: Any, output: Tensor) -> None:
        values.append(output)

    def on_attention(_module: nn.Module, _args: Any, output: Any) -> None:
        outputs.append(output[0])

    handles = []
    for layer in layers:
        handles.append(layer.self_attn.v_proj.register_forward_hook(on_values))
        handles.append(layer.self_attn.register_forward_hook(on_attention))
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
    recorded.extend(zip(values, outputs, strict=True))


def _through_head_mlp(head: Any, parts: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
    """``y = o + MLP(LN(o))`` carried part by part (``parts`` [B, S, D], last: biases, sum
    ``o``) with ``o``'s statistics and the real gates; ``(parts of y, y)``."""
    normed = _split_norm(parts[:, :, None], pooled[:, None], head.layernorm)[:, :, 0]
    mlp = head.mlp
    pre = mlp.fc1(head.layernorm(pooled))  # [B, 4D]
    pre_parts = normed @ mlp.fc1.weight.T
    pre_parts[:, -1] += mlp.fc1.bias
    out_parts = (pre_parts * _gate(pre, mlp.activation_fn)[:, None]) @ mlp.fc2.weight.T
    out_parts[:, -1] += mlp.fc2.bias
    return parts + out_parts, pooled + mlp.fc2(mlp.activation_fn(pre))


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
    with _recording_attention(vision.encoder.layers) as recorded:
        outputs = vision(
            pixel_values=pixel_values, output_attentions=True, output_hidden_states=True
        )
    if outputs.attentions is None or outputs.attentions[0] is None:
        raise RuntimeError(
            "the SigLIP attention layers returned no attention weights; load the model with "
            'attn_implementation="eager" (SDPA and flash attention do not return them)'
        )
    split = split_by_source(vision, outputs.hidden_states, outputs.attentions, recorded)
    embeds = outputs.pooler_output
    scale = embeds.norm(dim=-1).clamp_min(1e-12)[:, None, None]
    batch = pixel_values.shape[0]
    patch = int(model.config.vision_config.patch_size)
    grid_h, grid_w = int(pixel_values.shape[-2]) // patch, int(pixel_values.shape[-1]) // patch
    tokens = outputs.last_hidden_state  # after post_layernorm
    return ImageTowerOutput(
        embeds=embeds,
        contributions=(split.patches / scale).reshape(batch, grid_h, grid_w, -1),
        patch_tokens=pool_each_token(vision.head, tokens).reshape(batch, grid_h, grid_w, -1),
        last_layer_inputs=outputs.hidden_states[-2],
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
