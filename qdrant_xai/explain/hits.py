"""What explaining one hit needs (:class:`HitData`), and how hits become the evidence of
the heatmap methods: stacked per batch of image hits, or one query image repeated.

:mod:`.evidence` fills a :class:`HitData` per hit; :mod:`.explainer` turns them into
:class:`~qdrant_xai.explain.base.ImageEvidence`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from qdrant_client import models

from qdrant_xai.encoding.encoder import ImageFeatures
from qdrant_xai.encoding.fingerprint import check_dimension
from qdrant_xai.errors import (
    FeatureCodecError,
    FeaturesMissingError,
    QdrantXaiError,
    brief_repr,
)
from qdrant_xai.explain.base import HeatmapMethod, ImageEvidence
from qdrant_xai.explain.results import Explanation
from qdrant_xai.images.load import LoadedImage
from qdrant_xai.storage.layouts import LAYOUTS, CollectionLayout
from qdrant_xai.storage.writers import named_writer

__all__ = [
    "HitData",
    "HitKind",
    "failure",
    "fill",
    "has",
    "layout_of_hits",
    "needed_fields",
    "reencoded",
    "repeat_evidence",
    "required",
    "stack_evidence",
    "stored_unit",
    "what_is_missing",
]

HitKind = Literal["image", "text"]


@dataclass
class HitData:
    """What explaining one hit needs, fetched or recomputed."""

    kind: HitKind
    embedding: np.ndarray | None = None  # [P] normalised
    contributions: np.ndarray | None = None  # [gh, gw, P] (image hits)
    patch_tokens: np.ndarray | None = None  # [gh, gw, P] (image hits, when stored)
    last_layer_inputs: np.ndarray | None = None  # [1 + gh*gw, D] (full profile)
    image: LoadedImage | None = None  # when read
    word_contributions: np.ndarray | None = None  # [n_words, P] (text hits)
    source: str | None = None
    crop_box: tuple[int, int, int, int] | None = None
    text: str | None = None
    #: [P] normalised stored vector that no fingerprint vouches for (points written by
    #: other tools or without one): checked against this model's re-encoding
    unverified: np.ndarray | None = None
    #: why this hit cannot be explained (the other hits still are)
    error: QdrantXaiError | None = None
    #: the hit's stored vector of its kind, as Qdrant returned it (sidecar entries key on it)
    stored_vector: list[float] | None = None
    #: features computed here from the hit's image (written through to the sidecar)
    computed: ImageFeatures | None = None
    #: its features came from the sidecar
    from_sidecar: bool = False
    #: the content hash of its image file recorded when it was indexed (``xai_content``):
    #: whoever reads the file checks it still hashes so (``storage.payloads.check_content``)
    content: str | None = None
    #: it carries this model's legacy key (projections only): checked like a point with no
    #: fingerprint, its stored features unused
    legacy: bool = False


def needed_fields(method: HeatmapMethod, stored: ImageEvidence) -> set[str]:
    """The evidence fields to have for every hit: the first option already stored for all
    hits, else the first option that a read of the image can provide."""
    for option in method.requires:
        if all(stored.has(f) for f in option):
            return set(option)
    return set(method.requires[0])


def stack_evidence(hits: Sequence[HitData]) -> ImageEvidence:
    """Evidence of several image hits; a field is present only when every hit has it."""

    def stacked(name: str) -> np.ndarray | None:
        values = [getattr(h, name) for h in hits]
        return None if any(v is None for v in values) else np.stack(values)

    images = [h.image for h in hits]
    return ImageEvidence(
        embeddings=stacked("embedding"),
        contributions=stacked("contributions"),
        patch_tokens=stacked("patch_tokens"),
        last_layer_inputs=stacked("last_layer_inputs"),
        images=None if any(im is None for im in images) else [im for im in images if im],
    )


def repeat_evidence(features: ImageFeatures, image: LoadedImage, n: int) -> ImageEvidence:
    """Evidence of one (query) image, repeated for n pairs."""

    def repeated(value: np.ndarray | None) -> np.ndarray | None:
        return None if value is None else np.repeat(value[None], n, 0)

    return ImageEvidence(
        embeddings=repeated(features.embedding),
        contributions=repeated(features.contributions),
        patch_tokens=repeated(features.patch_tokens),
        last_layer_inputs=repeated(features.last_layer_inputs),
        images=[image] * n,
    )


def fill(data: HitData, image: LoadedImage, feats: ImageFeatures) -> None:
    """Completes a hit with its image's features, keeping what was stored."""
    data.embedding = feats.embedding
    data.contributions = feats.contributions
    data.computed = feats
    if data.patch_tokens is None:
        data.patch_tokens = feats.patch_tokens
    if data.last_layer_inputs is None:
        data.last_layer_inputs = feats.last_layer_inputs
    data.image = image


def stored_unit(vector: list[float], what: str, *, dim: int, model: str) -> np.ndarray:
    """[P] a hit's stored vector, normalised, if it can come from a model of ``dim``.

    Raises:
        DimensionMismatchError: its dimension is not this model's.
        FeatureCodecError: it is not a finite vector of numbers.
    """
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise FeatureCodecError(f"{what}: its stored vector is not a list of numbers") from exc
    if array.ndim != 1 or not np.isfinite(array).all():
        raise FeatureCodecError(f"{what}: its stored vector is not a finite 1-d vector")
    check_dimension(
        array.shape[0],
        dim,
        what=f"{what}: its stored vector",
        model=model,
    )
    return array / max(float(np.linalg.norm(array)), 1e-12)


def reencoded(data: HitData) -> str:
    """What was re-encoded for a hit, quoted briefly (for mismatch messages)."""
    if data.kind == "text":
        return f"its text {brief_repr(data.text or '')}"
    return f"its image {brief_repr(data.source or '')}"


def has(data: HitData, field: str) -> bool:
    return (data.image if field == "images" else getattr(data, field)) is not None


def what_is_missing(data: HitData, needs: set[str], *, fetched: bool) -> str:
    absent = [f for f in sorted(needs) if f != "images" and getattr(data, f) is None]
    if absent:
        return "no stored " + " or ".join(f.replace("_", " ") for f in absent)
    if "images" in needs:
        return "a method that reads the image"
    if fetched:
        return "no stored 'image' vector from this model"
    return (
        "no 'image' vector in the hit (search with with_vectors=True, or give the explainer "
        "the client and collection_name to fetch it)"
    )


def failure(hit: models.ScoredPoint, rank: int, query: object, data: HitData) -> Explanation:
    """The explanation of a hit that could not be explained: the hit and the reason."""
    return Explanation(
        hit=hit,
        rank=rank,
        query_kind="text" if isinstance(query, str) else "image",
        hit_kind=data.kind,
        text=data.text,
        image_source=data.source,
        error=data.error,
    )


def layout_of_hits(hits: Sequence[models.ScoredPoint]) -> CollectionLayout:
    """The layout the hits' payloads name, for an explainer with no collection to read:
    the writer most of them carry the signature of, else qdrant-xai's own."""
    vectors = next((h.vector for h in hits if isinstance(h.vector, dict)), None)
    names = sorted(vectors) if vectors is not None else [""]
    return LAYOUTS[named_writer([h.payload or {} for h in hits], names) or "qdrant-xai"]


def required(array: np.ndarray | None) -> np.ndarray:
    """``array``, which a completed image hit always has."""
    if array is None:  # pragma: no cover - _complete_image_hits fills every image hit
        raise FeaturesMissingError("internal: image hit without features")
    return array
