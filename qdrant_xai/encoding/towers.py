"""Direct per-token contributions to CLIP's embeddings (text-based decomposition).

Gandelsman, Efros, Steinhardt, *Interpreting CLIP's Image Representation via Text-Based
Decomposition*, ICLR 2024, https://arxiv.org/abs/2310.05916.

A CLIP tower ends in a residual stream; its pooled token (the class token of the vision
tower, the end-of-text token of the text tower) is a sum of direct contributions. Every
attention layer ``l`` adds, at the pooled position ``q``,

    Σ_i Σ_h A^l[h, q, i] · V^l[h, i] · W_O^l[h]   (+ the out-projection bias)

so source token ``i`` contributes ``c_i = Σ_l Σ_h A^l[h, q, i] · V^l[h, i] · W_O^l[h]``
(no bias). The final layer norm is linearised at the pooled token's own residual ``r``
(``LN(c) ≈ γ ⊙ (c − mean(c)) / σ(r)``) and the projection maps ``c_i`` into the joint
space. Dividing by the norm of the (unnormalised) embedding makes ``C_i · t`` the share of
the cosine similarity ``cos(image, t)`` that flows directly from token ``i``.

The functions are stateless: they run one forward pass of a tower with hooks that record,
per layer, the attention row of the pooled token and the value vectors, and need the model
loaded with ``attn_implementation="eager"`` (SDPA does not return attention weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ImageTowerOutput",
    "TextTowerOutput",
    "attention_weights",
    "image_patch_contributions",
    "run_image_tower",
    "run_text_tower",
    "text_token_contributions",
]


def attention_weights(output: object) -> Tensor:
    """The attention weights a CLIP attention layer returns beside its output (what a
    forward hook on ``self_attn`` sees), or a clear error when it returns none."""
    weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
    if weights is None:
        raise RuntimeError(
            "the CLIP attention layers returned no attention weights; load the model "
            'with attn_implementation="eager" (SDPA and flash attention do not return them)'
        )
    return weights


@dataclass
class _Recording:
    attention_rows: list[Tensor]  # per layer: [B, H, N] attention of the pooled token
    values: list[Tensor]  # per layer: [B, N, D] value vectors (bias included)
    final_residual: Tensor | None = None  # [B, N, D] input of the final layer norm


@contextmanager
def _record_attention(
    layers: Any, query_index: Tensor, final_norm: nn.Module | None = None
) -> Iterator[_Recording]:
    """Hooks every encoder layer; keeps only the attention row of the pooled token.

    Args:
        layers: the tower's ``encoder.layers``.
        query_index: [B] position of the pooled token in each sequence.
        final_norm: if given, its input (the residual stream) is recorded too.
    """
    recording = _Recording(attention_rows=[], values=[])
    batch = torch.arange(query_index.shape[0], device=query_index.device)
    handles = []

    def on_attention(_module: nn.Module, _inputs: object, output: object) -> None:
        weights = attention_weights(output)
        recording.attention_rows.append(weights[batch, :, query_index, :])

    def on_values(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        recording.values.append(output)

    def on_final_norm(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        recording.final_residual = inputs[0]

    for layer in layers:
        handles.append(layer.self_attn.register_forward_hook(on_attention))
        handles.append(layer.self_attn.v_proj.register_forward_hook(on_values))
    if final_norm is not None:
        handles.append(final_norm.register_forward_pre_hook(on_final_norm))
    try:
        yield recording
    finally:
        for handle in handles:
            handle.remove()


def _direct_contributions(recording: _Recording, layers: Any) -> Tensor:
    """Σ_l Σ_h A^l[h, q, i] · V^l[h, i] · W_O^l[h] for every source token i.

    Returns:
        [B, N, D] contributions in the tower's residual space (before the final norm).
    """
    total: Tensor | None = None
    for layer, rows, values in zip(layers, recording.attention_rows, recording.values, strict=True):
        attn = layer.self_attn
        batch, n_tokens, width = values.shape
        heads = attn.num_heads
        per_head = values.view(batch, n_tokens, heads, width // heads)
        weighted = torch.einsum("bhn,bnhd->bnhd", rows.to(values.dtype), per_head)
        contribution = weighted.reshape(batch, n_tokens, width) @ attn.out_proj.weight.T
        total = contribution if total is None else total + contribution
    if total is None:
        raise ValueError("the tower has no attention layers")
    return total


def _project_linearised(
    contributions: Tensor, residual: Tensor, norm: Any, projection: Any
) -> Tensor:
    """Final layer norm linearised at ``residual``, then the projection into the joint space.

    Args:
        contributions: [B, N, D] per-token contributions in the residual space.
        residual: [B, D] the pooled token's residual stream (input of the final norm).

    Returns:
        [B, N, P] contributions in the joint space.
    """
    sigma = torch.sqrt(residual.var(dim=-1, unbiased=False, keepdim=True) + norm.eps)
    centred = contributions - contributions.mean(dim=-1, keepdim=True)
    normed = centred * norm.weight / sigma.unsqueeze(1)
    return normed @ projection.weight.T


@dataclass
class ImageTowerOutput:
    """What one forward pass of the vision tower yields.

    Attributes:
        embeds: [B, P] projected image embeddings, not normalised.
        contributions: [B, gh, gw, P] direct patch contributions, divided by ``|embeds|``.
        patch_tokens: [B, gh, gw, P] raw patch tokens after ``post_layernorm`` and the
            projection (the "patch similarity" baseline), not normalised.
        last_layer_inputs: [B, 1 + gh*gw, D] the residual stream entering the last encoder
            layer (what :mod:`qdrant_xai.encoding.last_layer` replays for gradient methods).
    """

    embeds: Tensor
    contributions: Tensor
    patch_tokens: Tensor
    last_layer_inputs: Tensor


def run_image_tower(model: Any, pixel_values: Tensor) -> ImageTowerOutput:
    """One vision-tower forward pass yielding embeddings, contributions and patch tokens.

    Args:
        model: a ``CLIPModel`` loaded with ``attn_implementation="eager"``.
        pixel_values: [B, 3, H, W] as produced by the CLIP image processor.
    """
    vision = model.vision_model
    batch = pixel_values.shape[0]
    query_index = torch.zeros(batch, dtype=torch.long, device=pixel_values.device)
    layers = vision.encoder.layers
    entering: list[Tensor] = []

    def on_last_layer(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        entering.append(args[0] if args else kwargs["hidden_states"])

    handle = layers[-1].register_forward_pre_hook(on_last_layer, with_kwargs=True)
    try:
        with _record_attention(layers, query_index) as recording:
            outputs = vision(pixel_values=pixel_values)
    finally:
        handle.remove()
    hidden = outputs.last_hidden_state  # [B, 1 + gh*gw, D], before post_layernorm
    embeds = model.visual_projection(outputs.pooler_output)
    per_token = _direct_contributions(recording, layers)[:, 1:]
    projected = _project_linearised(
        per_token, hidden[:, 0], vision.post_layernorm, model.visual_projection
    )
    projected = projected / embeds.norm(dim=-1).clamp_min(1e-12)[:, None, None]
    patch_tokens = model.visual_projection(vision.post_layernorm(hidden[:, 1:]))
    grid_h, grid_w = _patch_grid(model, pixel_values)
    return ImageTowerOutput(
        embeds=embeds,
        contributions=projected.reshape(batch, grid_h, grid_w, -1),
        patch_tokens=patch_tokens.reshape(batch, grid_h, grid_w, -1),
        last_layer_inputs=entering[0],
    )


def image_patch_contributions(model: Any, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
    """Image embeddings and direct patch contributions in the joint space.

    Args:
        model: a ``CLIPModel`` loaded with ``attn_implementation="eager"``.
        pixel_values: [B, 3, H, W].

    Returns:
        ``(embeds [B, P], contributions [B, gh, gw, P])``; ``contributions @ t`` for a
        normalised text embedding ``t`` is the heatmap of ``cos(image, t)``.
    """
    out = run_image_tower(model, pixel_values)
    return out.embeds, out.contributions


def _patch_grid(model: Any, pixel_values: Tensor) -> tuple[int, int]:
    patch = int(model.config.vision_config.patch_size)
    return int(pixel_values.shape[-2]) // patch, int(pixel_values.shape[-1]) // patch


@dataclass
class TextTowerOutput:
    """What one forward pass of the text tower yields.

    Attributes:
        embeds: [B, P] projected text embeddings, not normalised.
        contributions: [B, T, P] direct token contributions at the end-of-text token,
            divided by ``|embeds|``; zero for tokens after it.
        eos_index: [B] position of the pooled end-of-text token.
    """

    embeds: Tensor
    contributions: Tensor
    eos_index: Tensor


def eos_positions(input_ids: Tensor, eos_token_id: int) -> Tensor:
    """[B] position of the first end-of-text token, as CLIP's text tower pools it."""
    if eos_token_id == 2:  # legacy configs: the highest id is the end token
        return input_ids.argmax(dim=-1)
    return (input_ids == eos_token_id).int().argmax(dim=-1)


def run_text_tower(model: Any, input_ids: Tensor, attention_mask: Tensor) -> TextTowerOutput:
    """One text-tower forward pass yielding embeddings and per-token contributions.

    Args:
        model: a ``CLIPModel`` loaded with ``attn_implementation="eager"``.
        input_ids: [B, T]; attention_mask: [B, T].
    """
    text = model.text_model
    eos_index = eos_positions(input_ids, text.eos_token_id)
    layers = text.encoder.layers
    with _record_attention(layers, eos_index, final_norm=text.final_layer_norm) as recording:
        outputs = text(input_ids=input_ids, attention_mask=attention_mask)
    embeds = model.text_projection(outputs.pooler_output)
    if recording.final_residual is None:  # pragma: no cover - the hook always fires
        raise RuntimeError("the text tower's final layer norm was not called")
    batch = torch.arange(input_ids.shape[0], device=input_ids.device)
    residual = recording.final_residual[batch, eos_index]
    per_token = _direct_contributions(recording, layers)
    projected = _project_linearised(
        per_token, residual, text.final_layer_norm, model.text_projection
    )
    projected = projected / embeds.norm(dim=-1).clamp_min(1e-12)[:, None, None]
    return TextTowerOutput(embeds=embeds, contributions=projected, eos_index=eos_index)


def text_token_contributions(
    model: Any, input_ids: Tensor, attention_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Text embeddings [B, P] and direct token contributions [B, T, P] at the end token."""
    out = run_text_tower(model, input_ids, attention_mask)
    return out.embeds, out.contributions


# -- the full decomposition: every source through every layer ----------------------------------


@dataclass
class ImageSourceContributions:
    """The image embedding split exactly into the parts that come from each input token.

    Attributes:
        embeds: [B, P] projected image embeddings, not normalised.
        patches: [B, gh, gw, P] part of each patch (its pixels and position embedding),
            divided by ``|embeds|``.
        class_token: [B, P] part of the class token (class and position embedding).
        biases: [B, P] part of the biases (layer-norm shifts, attention and MLP biases).

    ``patches.sum((1, 2)) + class_token + biases == embeds / |embeds|`` (to float error).
    """

    embeds: Tensor
    patches: Tensor
    class_token: Tensor
    biases: Tensor


def _split_norm(parts: Tensor, total: Tensor, norm: Any) -> Tensor:
    """A layer norm applied to a sum split into parts, exactly.

    Given the statistics of the whole input, ``LN(x) = γ ⊙ (x − μ) / σ + β`` is linear in
    ``x``: part ``s`` becomes ``γ ⊙ (x_s − mean(x_s)) / σ``, and ``β`` goes to the bias part
    (the last one).

    Args:
        parts: [B, S, N, D] the parts of ``total`` (last: the biases).
        total: [B, N, D] their sum.
    """
    sigma = torch.sqrt(total.var(dim=-1, unbiased=False, keepdim=True) + norm.eps)
    out = (parts - parts.mean(dim=-1, keepdim=True)) * norm.weight / sigma[:, None]
    out[:, -1] += norm.bias
    return out


def _gate(pre: Tensor, activation: Any) -> Tensor:
    """``act(z) / z`` elementwise (its limit ``act'(0)`` near 0), so ``act(z) = gate ⊙ z``."""
    tiny = torch.finfo(pre.dtype).eps
    safe = torch.where(pre.abs() < tiny, torch.full_like(pre, tiny), pre)
    return activation(safe) / safe


def _split_layer(layer: Any, x: Tensor, parts: Tensor, *, last: bool) -> tuple[Tensor, Tensor]:
    """One encoder layer run on the sum ``x`` and on its parts, with the attention weights,
    the layer norms' statistics and the MLP's gates of the real forward pass.

    Args:
        x: [B, N, D] residual stream; parts: [B, S, N, D] its parts (last: biases).
        last: only the class token's row is needed after this layer.

    Returns:
        ``(x, parts)`` after the layer (only position 0 when ``last``).
    """
    attn, mlp = layer.self_attn, layer.mlp
    batch, sources, n_tokens, width = parts.shape
    heads = attn.num_heads
    attended, weights = attn(hidden_states=layer.layer_norm1(x))
    weights = attention_weights((attended, weights))  # [B, H, N, N]
    values = _split_norm(parts, x, layer.layer_norm1) @ attn.v_proj.weight.T
    values[:, -1] += attn.v_proj.bias
    if last:
        weights, attended, x = weights[:, :, :1], attended[:, :1], x[:, :1]
        parts, n_queries = parts[:, :, :1], 1
    else:
        n_queries = n_tokens
    per_head = values.view(batch, sources, n_tokens, heads, width // heads)
    mixed = torch.einsum("bhjk,bskhd->bsjhd", weights.to(values.dtype), per_head)
    moved = mixed.reshape(batch, sources, n_queries, width) @ attn.out_proj.weight.T
    moved[:, -1] += attn.out_proj.bias
    x, parts = x + attended, parts + moved
    pre = mlp.fc1(layer.layer_norm2(x))  # [B, N, 4D]
    pre_parts = _split_norm(parts, x, layer.layer_norm2) @ mlp.fc1.weight.T
    pre_parts[:, -1] += mlp.fc1.bias
    out_parts = (pre_parts * _gate(pre, mlp.activation_fn)[:, None]) @ mlp.fc2.weight.T
    out_parts[:, -1] += mlp.fc2.bias
    return x + mlp.fc2(mlp.activation_fn(pre)), parts + out_parts


def image_source_contributions(model: Any, pixel_values: Tensor) -> ImageSourceContributions:
    """The image embedding as an exact sum over input tokens (patches, class token, biases).

    Every token of the vision tower's input is a source; every layer is replayed on the
    per-source parts of the residual stream with the real forward pass's attention weights
    (values mix by them), layer-norm statistics (a layer norm is then linear) and MLP gates
    ``act(z)/z`` (the activation then is a per-unit scaling). Biases are a source of their
    own. This is DecompX's propagation (Modarressi et al., *DecompX: Explaining Transformers
    Decisions by Propagating Token Decomposition*, ACL 2023,
    https://arxiv.org/abs/2306.02873) applied to CLIP's vision tower, and it also counts
    what reaches the class token through other tokens, which the direct path of
    :func:`run_image_tower` does not.

    Cost: the layers' linear maps run on ``2 + gh*gw`` copies of the stream, about
    ``2 + gh*gw`` forward passes (see the heatmap docs for measured figures).

    Args:
        model: a ``CLIPModel`` loaded with ``attn_implementation="eager"``.
        pixel_values: [B, 3, H, W] as produced by the CLIP image processor.
    """
    vision = model.vision_model
    embedded = vision.embeddings(pixel_values=pixel_values)  # [B, N, D]
    batch, n_tokens, width = embedded.shape
    parts = embedded.new_zeros(batch, n_tokens + 1, n_tokens, width)
    tokens = torch.arange(n_tokens, device=embedded.device)
    parts[:, tokens, tokens] = embedded
    x = vision.pre_layrnorm(embedded)
    parts = _split_norm(parts, embedded, vision.pre_layrnorm)
    layers = vision.encoder.layers
    for index, layer in enumerate(layers):
        x, parts = _split_layer(layer, x, parts, last=index == len(layers) - 1)
    pooled = _split_norm(parts[:, :, :1], x[:, :1], vision.post_layernorm)[:, :, 0]
    projected = pooled @ model.visual_projection.weight.T  # [B, S, P]
    if getattr(model.visual_projection, "bias", None) is not None:
        projected[:, -1] += model.visual_projection.bias
    embeds = projected.sum(dim=1)
    projected = projected / embeds.norm(dim=-1).clamp_min(1e-12)[:, None, None]
    grid_h, grid_w = _patch_grid(model, pixel_values)
    return ImageSourceContributions(
        embeds=embeds,
        patches=projected[:, 1:-1].reshape(batch, grid_h, grid_w, -1),
        class_token=projected[:, 0],
        biases=projected[:, -1],
    )
