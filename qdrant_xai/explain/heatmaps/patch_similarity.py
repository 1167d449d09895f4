"""The patch-similarity family: heatmaps from the similarity of each patch token to the query.

**patch** — the basis of the explainable cross-modal retrieval framework this library
follows (*Explainable CLIP retrieval*, section "Visual Attribution"): ``h_i = cos(p_i, t)``
with ``p_i`` the raw patch token ``i`` after ``post_layernorm`` and ``visual_projection``
and ``t`` the normalised query. CLIP never trains its patch tokens to align with text, and
Li et al. show the resulting maps are noisy and often *inverted* (the background lights
up): *CLIP Surgery for Better Explainability with Enhancement in Open-Vocabulary Tasks*,
Li, Wang, Yang, Zhou, Ye, Zhang, Zhang, Zhou, 2023, https://arxiv.org/abs/2304.05653.
It is kept as the reference the other methods are measured against.

**debiased** — a one-layer simplification of CLIP Surgery (same paper). Patch tokens
``p̃_i`` come from the *last* layer's value-value attention output alone,
``p̃_i = W_proj · post_layernorm(out_proj(Σ_j softmax(v vᵀ · scale)_ij v_j))``, without the
residual stream and the MLP (:func:`qdrant_xai.encoding.last_layer.surgery_patch_tokens`);
then the mean cosine to reference texts ``t_1 … t_K`` (whole texts, default
:data:`DEFAULT_REFERENCES`) is subtracted::

    h_i = cos(p̃_i, t) − (1/K) Σ_k cos(p̃_i, t_k)

It differs from the published method (``clip-surgery``, :mod:`.clip_surgery`) in three
ways: one block instead of the last six, the residual stream dropped instead of kept, and
the plain mean of whole reference texts instead of the renormalised empty-prompt template
ensemble. It runs
from the stored input of the last vision layer (the ``full`` feature profile: a replay of
one attention layer, no forward pass of the hit) or from the image.

**multiscale** — the framework's multi-scale similarity propagation::

    R^s_ij = α_s · cos(p_ij, u_ij) · (1/|N_s|) Σ_{(k,l) ∈ N_s(i,j)} r^{s−1}_kl

read here as (the paper leaves ``u``, ``r`` and ``α`` open): ``u_ij = t`` the query
embedding at every position; ``r^0 = max(cos(p, t), 0)`` and ``r^s = max(R^s, 0)`` (only
positive evidence propagates, so two negatives never make a positive); ``N_s(i,j)`` the
``(2s+1) x (2s+1)`` window around ``(i,j)`` clipped at the border (the mean is over the
cells inside the grid); ``α_s`` rescales each scale to the largest ``|cos(p, t)|`` of the
image; the heatmap is the mean of ``R^1 … R^S``. ``p`` is either the stored direct patch
contributions (the default, always stored) or the raw patch tokens.

All three run from stored features: no forward pass of the hit image when its patch tokens
(or, for multiscale, its contributions) are stored. :func:`patch_tokens_of` gets the patch
tokens from whatever evidence there is (stored tokens, the stored input of the last vision
layer, or the image).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F

from qdrant_xai.encoding.last_layer import as_tensor, replay_last_layer, surgery_patch_tokens
from qdrant_xai.errors import FeaturesMissingError
from qdrant_xai.explain.base import HeatmapMethod, ImageEvidence, register_heatmap_method

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = [
    "DEFAULT_REFERENCES",
    "DebiasedPatch",
    "MultiScale",
    "PatchSimilarity",
    "cosine_maps",
    "multiscale_propagation",
    "patch_tokens_of",
    "surgery_tokens_of",
]

#: neutral texts whose mean response :class:`DebiasedPatch` subtracts
DEFAULT_REFERENCES: tuple[str, ...] = ("", "a photo", "an image", "a picture")

#: encoder -> {references: [K, P] embeddings}; entries die with their encoder
_REFERENCE_CACHE: weakref.WeakKeyDictionary[ClipEncoder, dict[tuple[str, ...], np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


def patch_tokens_of(
    encoder: ClipEncoder, evidence: ImageEvidence, *, max_batch: int = 64
) -> np.ndarray:
    """The raw projected patch tokens of N images, from the cheapest evidence there is.

    In order: the stored ``patch_tokens``; a replay of the last vision layer from the stored
    ``last_layer_inputs`` (no image read, no gradient); a forward pass of the ``images``.

    Args:
        encoder: the model the evidence came from.
        evidence: N images.
        max_batch: images per replay or forward pass.

    Returns:
        [N, gh, gw, P] float32 patch tokens (after ``post_layernorm`` and the projection).

    Raises:
        FeaturesMissingError: the evidence holds none of the three.
    """
    gh, gw = encoder.grid
    if evidence.patch_tokens is not None:
        return np.asarray(evidence.patch_tokens, dtype=np.float32)
    if evidence.last_layer_inputs is not None:
        hidden = evidence.last_layer_inputs
        chunks = []
        with torch.inference_mode(), encoder.forward_lock:  # runs the model's last layer
            for start in range(0, len(hidden), max_batch):
                batch = as_tensor(encoder.model, hidden[start : start + max_batch])
                tokens = replay_last_layer(encoder.model, batch).patch_tokens
                chunks.append(tokens.to(device="cpu", dtype=torch.float32).numpy())
        if not chunks:
            return np.zeros((0, gh, gw, encoder.dim), dtype=np.float32)
        return np.concatenate(chunks).reshape(len(hidden), gh, gw, -1)
    if evidence.images is not None:
        images = evidence.images
        features = [
            feature
            for start in range(0, len(images), max_batch)
            for feature in encoder.encode_images(
                images[start : start + max_batch], patch_tokens=True
            )
        ]
        if not features:
            return np.zeros((0, gh, gw, encoder.dim), dtype=np.float32)
        stacked = [f.patch_tokens for f in features if f.patch_tokens is not None]
        return np.stack(stacked).astype(np.float32)
    raise FeaturesMissingError(
        "no patch tokens: the hits have neither stored patch tokens nor last-layer inputs, "
        "and their images were not read; index with patch tokens (or the 'full' feature "
        "profile), or let the explainer read the images"
    )


def cosine_maps(features: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``cos(p_i, t)`` for every cell of N feature grids.

    Args:
        features: [N, gh, gw, P] per-cell vectors (any norm; zero vectors give 0).
        queries: [N, P] or [P] query embeddings (normalised here).

    Returns:
        [N, gh, gw] float32 cosines.
    """
    features = np.asarray(features, dtype=np.float32)
    queries = _unit(np.asarray(queries, dtype=np.float32))
    units = _unit(features)
    if queries.ndim == 1:
        return np.einsum("nhwp,p->nhw", units, queries).astype(np.float32)
    return np.einsum("nhwp,np->nhw", units, queries).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@register_heatmap_method
class PatchSimilarity(HeatmapMethod):
    """``h_i = cos(p_i, t)`` with the raw projected patch tokens (the framework's basis).

    Runs from stored patch tokens, else from stored last-layer inputs (one replay of the
    last layer), else from the image (one forward pass). Known to be noisy and often
    inverted, the background lighting up instead of the object (Li et al., CLIP Surgery,
    2023, https://arxiv.org/abs/2304.05653): CLIP aligns only the pooled token with text.
    Kept as the reference the other methods are measured against. It reads the patch
    tokens after the last layer, which the embedding never reads; the deeper the model,
    the more those tokens carry of other patches (the other tokens' part of a final patch
    token is 0.60 of its norm on the 4-layer shapes model, 0.87 on an 8-layer clutter
    model; ``docs/methods.md``).

    Args:
        max_batch: images per replay or forward pass when tokens are not stored.
    """

    name = "patch"

    families = frozenset({"clip"})  # replays CLIP's vision tower
    requires = (
        frozenset({"patch_tokens"}),
        frozenset({"last_layer_inputs"}),
        frozenset({"images"}),
    )
    cost = "0 passes (stored patch tokens), else 1 last-layer replay or 1 forward"

    def __init__(self, *, max_batch: int = 64) -> None:
        self.max_batch = max_batch

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        tokens = patch_tokens_of(encoder, evidence, max_batch=self.max_batch)
        return cosine_maps(tokens, queries)

    def __repr__(self) -> str:
        return f"PatchSimilarity(max_batch={self.max_batch})"


def surgery_tokens_of(
    encoder: ClipEncoder, evidence: ImageEvidence, *, max_batch: int = 64
) -> np.ndarray:
    """[N, gh, gw, P] CLIP Surgery patch tokens, from stored last-layer inputs or images."""
    gh, gw = encoder.grid
    hidden = evidence.last_layer_inputs
    if hidden is None:
        if evidence.images is None:
            raise FeaturesMissingError(
                "debiased needs the stored input of the last vision layer (index with the "
                "'full' feature profile) or the images"
            )
        images = evidence.images
        hidden = np.stack(
            [
                f.last_layer_inputs
                for start in range(0, len(images), max_batch)
                for f in encoder.encode_images(images[start : start + max_batch], last_layer=True)
                if f.last_layer_inputs is not None
            ]
        )
    chunks = []
    with torch.inference_mode(), encoder.forward_lock:  # runs the model's last layer
        for start in range(0, len(hidden), max_batch):
            batch = as_tensor(encoder.model, hidden[start : start + max_batch])
            tokens = surgery_patch_tokens(encoder.model, batch)
            chunks.append(tokens.to(device="cpu", dtype=torch.float32).numpy())
    if not chunks:
        return np.zeros((0, gh, gw, encoder.dim), dtype=np.float32)
    return np.concatenate(chunks).reshape(len(hidden), gh, gw, -1)


@register_heatmap_method
class DebiasedPatch(HeatmapMethod):
    """Last-layer value-value patch tokens, minus their mean response to reference texts.

    ``h_i = cos(p̃_i, t) − mean_k cos(p̃_i, t_k)`` (module doc): a one-layer simplification
    of CLIP Surgery, not the published method (that is :class:`ClipSurgery`): one block
    instead of six, no residual stream, plain mean of whole reference texts. Reference
    embeddings are computed once per encoder. Runs from the stored last-layer input
    (``full`` profile) or the image. It reads only the last layer, whose input the earlier
    layers have already mixed; on a one-layer model its tokens are the published
    method's second path without the embeddings' residual. The references matter: generic
    prompts by default; pass your domain's class names (``references=["a dog", ...]``) for
    a sharper map. On the bundled 4-layer shapes model the pointing game gives 76 % of 97
    held-out queries (``clip-surgery``, over all 4 blocks: 85 %; random: 13 %), measured on
    the model the methods were developed on.

    Args:
        references: the reference texts (default :data:`DEFAULT_REFERENCES`).
        max_batch: images per replay or forward pass.
    """

    name = "debiased"

    families = frozenset({"clip"})  # replays CLIP's vision tower
    requires = (frozenset({"last_layer_inputs"}), frozenset({"images"}))
    cost = "1 replay of the last attention layer (full profile), else 1 forward"

    def __init__(
        self, *, references: Sequence[str] = DEFAULT_REFERENCES, max_batch: int = 64
    ) -> None:
        if isinstance(references, str):
            raise TypeError("references must be a sequence of texts, not one string")
        if len(references) == 0:
            raise ValueError("references must hold at least one text")
        self.references = tuple(references)
        self.max_batch = max_batch

    def reference_embeddings(self, encoder: ClipEncoder) -> np.ndarray:
        """[K, P] normalised embeddings of the references (cached per encoder)."""
        per_encoder = _REFERENCE_CACHE.setdefault(encoder, {})
        if self.references not in per_encoder:
            per_encoder[self.references] = encoder.embed_texts(list(self.references))
        return per_encoder[self.references]

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        tokens = surgery_tokens_of(encoder, evidence, max_batch=self.max_batch)
        # mean_k (p̂ · t_k) = p̂ · mean_k t_k: one bias map per image, whatever the query
        bias = _unit(tokens) @ self.reference_embeddings(encoder).mean(axis=0)
        return (cosine_maps(tokens, queries) - bias).astype(np.float32)

    def __repr__(self) -> str:
        return f"DebiasedPatch(references={self.references!r}, max_batch={self.max_batch})"


def multiscale_propagation(cosines: np.ndarray, *, scales: int = 3) -> np.ndarray:
    """Multi-scale similarity propagation of N cosine maps (see the module doc).

    Args:
        cosines: [N, gh, gw] ``cos(p_ij, t)`` per cell.
        scales: number of scales ``S``; scale ``s`` averages a ``(2s+1) x (2s+1)`` window.

    Returns:
        [N, gh, gw] float32: the mean of ``R^1 … R^S``, each rescaled to the largest
        ``|cos|`` of its image.
    """
    if scales < 1:
        raise ValueError(f"scales must be at least 1, got {scales}")
    cos = torch.as_tensor(np.asarray(cosines, dtype=np.float32)).unsqueeze(1)  # [N,1,gh,gw]
    if cos.shape[0] == 0:
        return np.zeros(cosines.shape, dtype=np.float32)
    peak = cos.abs().amax(dim=(2, 3), keepdim=True)  # [N,1,1,1]
    previous = cos.clamp_min(0)
    total = torch.zeros_like(cos)
    for s in range(1, scales + 1):
        neighbours = F.avg_pool2d(
            previous, kernel_size=2 * s + 1, stride=1, padding=s, count_include_pad=False
        )
        raw = cos * neighbours
        alpha = peak / raw.abs().amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        current = alpha * raw
        total += current
        previous = current.clamp_min(0)
    return (total / scales).squeeze(1).numpy().astype(np.float32)


@register_heatmap_method
class MultiScale(HeatmapMethod):
    """Multi-scale similarity propagation (the framework's visual attribution; module doc).

    A patch scores high when it matches the query *and* its neighbourhood, at growing
    scales, does too: isolated matching patches are damped, coherent regions kept.

    Args:
        scales: number of scales ``S`` (window ``(2s+1)²`` at scale ``s``).
        features: ``"contributions"`` (default; the stored direct patch contributions,
            always stored, so never a forward pass) or ``"patch_tokens"`` (the raw tokens,
            from the same evidence as :class:`PatchSimilarity`; inherits their noise).
        max_batch: images per replay or forward pass when tokens are not stored.

    Unreliable for small objects at large scales (the window averages them away) and,
    with ``features="patch_tokens"``, wherever the raw tokens are inverted. On the bundled
    shapes model (309 held-out queries) the pointing game gives 93% with contributions
    and 38% with patch tokens (random 13%), hence the default.
    """

    name = "multiscale"

    # its patch-token mode replays CLIP's last layer; the default mode reads only the
    # contributions and would serve SigLIP too, but has not been measured on it
    families = frozenset({"clip"})
    requires: tuple[frozenset[str], ...] = (frozenset({"contributions"}), frozenset({"images"}))
    cost = "0 passes (stored features)"

    def __init__(
        self,
        *,
        scales: int = 3,
        features: Literal["contributions", "patch_tokens"] = "contributions",
        max_batch: int = 64,
    ) -> None:
        if scales < 1:
            raise ValueError(f"scales must be at least 1, got {scales}")
        if features not in ("contributions", "patch_tokens"):
            raise ValueError(
                f"features must be 'contributions' or 'patch_tokens', got {features!r}"
            )
        self.scales = scales
        self.features = features
        self.max_batch = max_batch
        if features == "patch_tokens":
            self.requires = PatchSimilarity.requires

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        if self.features == "contributions":
            features = evidence.contributions
            if features is None:
                if evidence.images is None:
                    raise FeaturesMissingError(
                        "multiscale needs the stored patch contributions or the images"
                    )
                images = evidence.images
                features = np.stack(
                    [
                        f.contributions
                        for start in range(0, len(images), self.max_batch)
                        for f in encoder.encode_images(images[start : start + self.max_batch])
                    ]
                )
        else:
            features = patch_tokens_of(encoder, evidence, max_batch=self.max_batch)
        return multiscale_propagation(cosine_maps(features, queries), scales=self.scales)

    def __repr__(self) -> str:
        return (
            f"MultiScale(scales={self.scales}, features={self.features!r}, "
            f"max_batch={self.max_batch})"
        )
