"""Gradient-based heatmaps: Grad-ECLIP and GAE (generic attention explainability).

**Grad-ECLIP** — Zhao, Wang, Zeng, Zhao, Chan, *Gradient-based Visual Explanation for
Transformer-based CLIP*, ICML 2024, https://arxiv.org/abs/2405.18770.

The class token's attention output in the last layer (before ``out_proj``) is
``o = Σ_i a_i v_i`` (per head). For a score ``S = cos(image, t)`` the method weighs

* each channel ``c`` by its gradient ``w_c = ∂S/∂o_c`` (one backward pass), and
* each patch ``i`` of head ``h`` by ``λ_{h,i}``, the class token's logit ``q_cls · k_i``
  min-max normalised over the patches (a softened attention: the softmax is too peaked to
  serve as a spatial weight),

and the heatmap is ``H_i = ReLU(Σ_h λ_{h,i} Σ_{c∈h} w_c v_{i,c})`` over the patch tokens.
(The authors' code uses one head and the cosine of ``q_cls`` and ``k_i``; here λ is taken
per head from the model's own scaled logits.)

**GAE** — Chefer, Gur, Wolf, *Generic Attention-model Explainability for Interpreting
Bi-Modal and Encoder-Decoder Transformers*, ICCV 2021, https://arxiv.org/abs/2103.15679
(reference code: hila-chefer/Transformer-MM-Explainability, the CLIP notebook).

The target is the model's logit, ``S = exp(logit_scale) · cos(image, t)``, as in the
reference. Each attention map is weighted by its gradient and averaged over heads,
``Ā_l = E_h[ReLU(∇A_l ⊙ A_l)]``; relevancy starts at ``R = I`` and accumulates
``R ← R + Ā_l R`` over the layers used, first to last. The heatmap is the class token's
row over the patches, ``R[CLS, patches]``. ``gae`` rolls out every layer (the paper's
method); ``gae-last`` uses the last layer only (the reference notebook's default
``start_layer=-1``), where the map is ``Ā_L[CLS, patches]`` and the logit scale is only a
constant factor. With several layers the scale is not a factor (the products of ``Ā_l``
scale with its powers), so differentiating ``cos`` instead would change the map's shape.

Both methods need the gradient of a sum over the rows of their own targets: the rows are
independent, so one backward pass explains a whole batch of hits. They need attention
weights on the autograd graph, i.e. a model loaded with ``attn_implementation="eager"``
(which :class:`~qdrant_xai.encoding.encoder.ClipEncoder` enforces). All maps are
non-negative (ReLU): they show what raised the score, never what lowered it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from qdrant_xai.encoding.last_layer import as_tensor, replay_last_layer
from qdrant_xai.encoding.towers import attention_weights
from qdrant_xai.explain.base import HeatmapMethod, ImageEvidence, register_heatmap_method

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = [
    "Gae",
    "GaeLastLayer",
    "GradEclip",
    "gae_rollout",
    "grad_eclip_maps",
]

_FROM_LAST_LAYER: tuple[frozenset[str], ...] = (
    frozenset({"last_layer_inputs"}),
    frozenset({"images"}),
)
_FROM_IMAGES: tuple[frozenset[str], ...] = (frozenset({"images"}),)


def _cosine_total(embeds: Tensor, queries: Tensor) -> Tensor:
    """``Σ_n cos(embeds_n, queries_n)``: its gradient holds every row's own gradient."""
    normed = embeds / embeds.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # a copy: the caller's queries may be inference tensors, which autograd cannot save
    return (normed * queries.detach().to(normed.dtype).clone()).sum()


def _logit_total(model: Any, embeds: Tensor, queries: Tensor) -> Tensor:
    """``Σ_n exp(logit_scale) · cos(embeds_n, queries_n)``: GAE's target (the CLIP logit)."""
    scale = model.logit_scale.detach().float().exp().to(embeds.dtype)
    return scale * _cosine_total(embeds, queries)


def _min_max(x: Tensor, dim: int = -1) -> Tensor:
    low = x.amin(dim=dim, keepdim=True)
    high = x.amax(dim=dim, keepdim=True)
    return (x - low) / (high - low).clamp_min(1e-12)


def grad_eclip_maps(
    model: Any, hidden: Tensor, queries: Tensor, grid: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Grad-ECLIP heatmaps of a batch from the input of the last vision layer.

    Args:
        model: a ``CLIPModel``.
        hidden: [B, 1 + gh*gw, D] the residual stream entering the last layer.
        queries: [B, P] one normalised query embedding per row.
        grid: ``(gh, gw)``.

    Returns:
        ``(maps [B, gh, gw], channel_weights [B, D])``, detached; ``channel_weights`` is
        ``∂cos(image_b, query_b)/∂o_b`` at the class token's attention output ``o_b``.
    """
    with torch.inference_mode(False), torch.enable_grad():
        hidden = hidden.detach().clone().requires_grad_(True)
        out = replay_last_layer(model, hidden)
        mixed = out.attention_output
        loss = _cosine_total(out.embeds, queries)
        (gradient,) = torch.autograd.grad(loss, mixed)
    weights = gradient[:, 0]  # the embedding reads only the class token's row
    with torch.no_grad():
        batch, heads = out.logits.shape[:2]
        spatial = _min_max(out.logits[:, :, 1:].detach())  # [B, H, gh*gw]
        values = out.values[:, 1:].detach()  # [B, gh*gw, D]
        per_head = values.reshape(batch, values.shape[1], heads, -1)
        channel = weights.reshape(batch, heads, -1)
        maps = torch.einsum("bhi,bihc,bhc->bi", spatial, per_head, channel).relu()
    return maps.reshape(batch, *grid), weights.detach()


def gae_rollout(attentions: list[Tensor], gradients: list[Tensor]) -> Tensor:
    """GAE relevancy of the class token over the patches.

    Args:
        attentions: per used layer, first to last, [B, H, N, N] attention weights.
        gradients: their gradients, same shapes.

    Returns:
        [B, N - 1] ``R[CLS, patches]`` with ``R = Π_l (I + Ā_l)`` (last layer leftmost),
        ``Ā_l = mean_h ReLU(∇A_l ⊙ A_l)``.
    """
    batch, _, n_tokens, _ = attentions[0].shape
    relevance = torch.eye(n_tokens, dtype=torch.float32, device=attentions[0].device)
    relevance = relevance.expand(batch, n_tokens, n_tokens)
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient.float() * attention.float()).clamp_min(0).mean(dim=1)
        relevance = relevance + torch.bmm(weighted, relevance)
    return relevance[:, 0, 1:]


class _BatchedGradientMethod(HeatmapMethod):
    """Chunking, query broadcasting and last-layer input gathering shared by both methods."""

    max_batch: int

    def _queries(self, queries: np.ndarray, n: int) -> np.ndarray:
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = np.broadcast_to(queries, (n, queries.shape[0]))
        if queries.ndim != 2 or queries.shape[0] != n:
            raise ValueError(f"queries must be [P] or [{n}, P], got shape {queries.shape}")
        return queries

    def _chunks(self, n: int) -> Iterator[slice]:
        step = max(1, int(self.max_batch))
        for start in range(0, n, step):
            yield slice(start, min(start + step, n))

    def _hidden(self, encoder: ClipEncoder, evidence: ImageEvidence, rows: slice) -> Tensor:
        """[B, 1 + gh*gw, D] last-layer inputs of ``rows``: stored, or from one forward."""
        if evidence.last_layer_inputs is not None:
            stored = np.asarray(evidence.last_layer_inputs[rows])
        elif evidence.images is not None:
            features = encoder.encode_images(evidence.images[rows], last_layer=True)
            stored = np.stack([f.last_layer_inputs for f in features])  # type: ignore[misc]
        else:
            raise ValueError(f"{self.name} needs last_layer_inputs or images")
        expected = 1 + encoder.grid[0] * encoder.grid[1]
        if stored.ndim != 3 or stored.shape[1] != expected:
            raise ValueError(
                f"last_layer_inputs must be [N, {expected}, D] for a {encoder.grid} grid, "
                f"got shape {stored.shape}"
            )
        return as_tensor(encoder.model, stored)

    def _query_tensor(self, encoder: ClipEncoder, queries: np.ndarray, rows: slice) -> Tensor:
        return torch.tensor(np.array(queries[rows], dtype=np.float32)).to(encoder.device)

    def _empty(self, encoder: ClipEncoder) -> np.ndarray:
        return np.zeros((0, *encoder.grid), dtype=np.float32)


@register_heatmap_method
class GradEclip(_BatchedGradientMethod):
    """Grad-ECLIP: gradient channel weights × normalised q·k spatial weights × values.

    Runs from stored last-layer inputs (the ``full`` feature profile: a replay of the last
    layer, no image read) or from the images (one extra no-grad forward to get them). One
    forward + backward of the last layer per batch of ``max_batch`` hits. Non-negative
    (ReLU); needs eager attention. Sees only the last layer's attention, so it is coarse
    where the embedding was formed earlier, and it cannot show what lowered the score; on
    the bundled 4-layer shapes model it points at the named object in 86 % of 97 held-out
    queries (the all-layer ``gae``: 94 %).

    Differs from the authors' code (Cyang-Zhao/Grad-Eclip): they replay the last block
    with a single attention head, which on a multi-head model changes the embedding being
    explained (shapes model: cosine 0.944-0.998 to the real one); we replay the model's own
    heads. Their spatial weight is the min-max cosine of ``q_cls`` and ``k_i`` over all
    channels; ours is each head's min-max logit ``q_cls · k_i``, since each head's values
    are mixed by that head's attention alone. They feed the whole image at its aspect ratio
    (interpolated position embeddings) and min-max the map; we use the encoder's
    preprocessing (the crop the search embedded) and return the raw grid. The target
    (``cos``), the layer (the last), the values before ``out_proj``, the ReLU and the class
    token are theirs. ``docs/methods.md`` lists every choice.

    Args:
        max_batch: hits per forward/backward pass (bounds memory).
    """

    name = "grad-eclip"

    families = frozenset({"clip"})  # replays CLIP's vision tower
    requires = _FROM_LAST_LAYER
    cost = "1 last-layer forward + backward per batch (+1 forward without stored inputs)"

    def __init__(self, *, max_batch: int = 64) -> None:
        self.max_batch = max_batch

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        n = len(evidence)
        if n == 0:
            return self._empty(encoder)
        queries = self._queries(queries, n)
        out = []
        for rows in self._chunks(n):
            hidden = self._hidden(encoder, evidence, rows)
            with encoder.forward_lock:  # replays the model's last layer with autograd
                maps, _ = grad_eclip_maps(
                    encoder.model, hidden, self._query_tensor(encoder, queries, rows), encoder.grid
                )
            out.append(maps.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def __repr__(self) -> str:
        return f"GradEclip(max_batch={self.max_batch})"


@register_heatmap_method
class Gae(_BatchedGradientMethod):
    """GAE: gradient-weighted attention rollout (Chefer et al., ICCV 2021), as published.

    ``layers="all"`` (the default, the paper's method) rolls out every layer of the vision
    tower with the reference target ``exp(logit_scale) · cos``; it needs the images: one
    full forward + backward of the vision tower per batch. ``layers="last"`` is
    :class:`GaeLastLayer` (``gae-last``). Non-negative (ReLU on gradient × attention);
    needs eager attention. Attention-based, so it can credit tokens that attention routed
    information through rather than the object itself. The map is in logit units (it
    scales with ``exp(logit_scale)``, and with its powers across layers).

    Args:
        layers: ``"all"`` or ``"last"``.
        max_batch: hits per forward/backward pass (bounds memory).
    """

    name = "gae"

    families = frozenset({"clip"})  # replays CLIP's vision tower
    requires = _FROM_IMAGES
    cost = "1 full vision forward + backward per batch"

    def __init__(self, *, layers: Literal["last", "all"] = "all", max_batch: int = 32) -> None:
        if layers not in ("last", "all"):
            raise ValueError(f"layers must be 'last' or 'all', got {layers!r}")
        self.layers = layers
        self.max_batch = max_batch
        # the evidence the method runs from depends on the option (read by can_run)
        self.requires = _FROM_LAST_LAYER if layers == "last" else _FROM_IMAGES

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        n = len(evidence)
        if n == 0:
            return self._empty(encoder)
        if self.layers == "all" and evidence.images is None:
            raise ValueError(f"{self.name} (all layers) needs the images")
        queries = self._queries(queries, n)
        out = []
        for rows in self._chunks(n):
            query = self._query_tensor(encoder, queries, rows)
            if self.layers == "all":
                assert evidence.images is not None
                pixels = encoder.pixel_values(evidence.images[rows])
                with encoder.forward_lock:  # hooks the model's attention layers
                    relevance = _gae_all_layers(encoder.model, pixels, query)
            else:
                hidden = self._hidden(encoder, evidence, rows)
                with encoder.forward_lock:  # replays the model's last layer with autograd
                    relevance = _gae_last_layer(encoder.model, hidden, query)
            out.append(relevance.reshape(-1, *encoder.grid).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layers={self.layers!r}, max_batch={self.max_batch})"


@register_heatmap_method
class GaeLastLayer(Gae):
    """GAE on the last attention layer only: ``Ā_L[CLS, patches]``, the reference
    notebook's default (``start_layer=-1``).

    Runs from stored last-layer inputs (the ``full`` profile: a replay of the last layer,
    no image read) or from the images. It reads only the last layer: on a one-layer model
    it equals :class:`Gae`; with more layers the class token's last attention falls on
    tokens the earlier layers already mixed, and it is blind to that mixing. Even on the
    bundled 4-layer shapes model it points at the named object less often than the
    rollout (75 % vs 94 % of 97 held-out queries, the model the methods were developed
    on).

    Args:
        max_batch: hits per forward/backward pass (bounds memory).
    """

    name = "gae-last"

    families = frozenset({"clip"})  # replays CLIP's vision tower
    requires = _FROM_LAST_LAYER
    cost = "1 last-layer forward + backward per batch (+1 forward without stored inputs)"

    def __init__(self, *, max_batch: int = 32) -> None:
        super().__init__(layers="last", max_batch=max_batch)

    def __repr__(self) -> str:
        return f"GaeLastLayer(max_batch={self.max_batch})"


def _gae_last_layer(model: Any, hidden: Tensor, queries: Tensor) -> Tensor:
    with torch.inference_mode(False), torch.enable_grad():
        hidden = hidden.detach().clone().requires_grad_(True)
        out = replay_last_layer(model, hidden)
        target = _logit_total(model, out.embeds, queries)
        (gradient,) = torch.autograd.grad(target, out.attention)
    return gae_rollout([out.attention.detach()], [gradient])


def _gae_all_layers(model: Any, pixels: Tensor, queries: Tensor) -> Tensor:
    """Full vision-tower forward with grad, capturing each layer's attention weights."""
    vision = model.vision_model
    attentions: list[Tensor] = []

    def on_attention(_module: nn.Module, _inputs: object, output: object) -> None:
        attentions.append(attention_weights(output))

    handles = [
        layer.self_attn.register_forward_hook(on_attention) for layer in vision.encoder.layers
    ]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            pixels = pixels.detach().clone().requires_grad_(True)
            outputs = vision(pixel_values=pixels)
            embeds = model.visual_projection(outputs.pooler_output)
            gradients = torch.autograd.grad(_logit_total(model, embeds, queries), attentions)
    finally:
        for handle in handles:
            handle.remove()
    return gae_rollout([a.detach() for a in attentions], list(gradients))
