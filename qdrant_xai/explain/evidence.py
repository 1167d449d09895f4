"""What explaining each hit needs, fetched, decoded and checked before any heatmap.

The first half of the explainer: one ``retrieve`` call reads the hits' stored features and
vectors (:class:`FetchRequest` says which, so a caller with its own, say async, client can
read them itself and hand the records over); each payload is decoded and validated for this
model (fingerprint, shapes, crop box, words); features that are not stored are recomputed
from the hit's image, read only under the source policy; and vectors no fingerprint vouches
for must agree with this model's re-encoding. Anything that cannot be trusted raises a typed
error naming the point and the fix, before a single heatmap is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder, ImageFeatures
from qdrant_xai.encoding.fingerprint import check_agreement, check_dimension
from qdrant_xai.errors import (
    FeatureCodecError,
    FeaturesMissingError,
    QdrantXaiError,
    brief_repr,
)
from qdrant_xai.explain.base import HeatmapMethod, ImageEvidence
from qdrant_xai.images.load import LoadedImage
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.layouts import CollectionLayout
from qdrant_xai.storage.payloads import check_stored_words, stored_crop_box
from qdrant_xai.storage.schema import PayloadKeys

__all__ = ["EvidenceReader", "FetchRequest", "HitData", "repeat_evidence", "stack_evidence"]

HitKind = Literal["image", "text"]

#: payload keys every explained hit is read with (small); feature maps are added per method
_LIGHT_KEYS = (
    PayloadKeys.KIND,
    PayloadKeys.FINGERPRINT,
    PayloadKeys.FEATURES,
    PayloadKeys.SOURCE,
    PayloadKeys.CROP_BOX,
    PayloadKeys.WIDTH,
    PayloadKeys.HEIGHT,
    PayloadKeys.TEXT,
    PayloadKeys.WORDS,
)
#: evidence fields a heatmap method may run from that can be stored, and their payload keys
STORED_FIELDS = {
    "contributions": PayloadKeys.FEATURES,
    "patch_tokens": PayloadKeys.PATCH_TOKENS,
    "last_layer_inputs": PayloadKeys.LAST_LAYER,
}


@dataclass(frozen=True)
class FetchRequest:
    """The one ``retrieve`` call that reads what explaining some hits needs.

    Use it with any client, e.g. an ``AsyncQdrantClient``, then pass the records to
    :meth:`~qdrant_xai.Explainer.explain` (``records=``)::

        request = explainer.fetch_request(hits)
        records = await async_client.retrieve(request.collection_name, **request.kwargs())
        explanations = explainer.explain(query, hits, records=records)
    """

    collection_name: str
    ids: tuple[models.ExtendedPointId, ...]
    with_payload: tuple[str, ...]
    with_vectors: bool | tuple[str, ...]

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``client.retrieve(collection_name, **kwargs)``."""
        vectors = self.with_vectors
        return {
            "ids": list(self.ids),
            "with_payload": list(self.with_payload),
            "with_vectors": vectors if isinstance(vectors, bool) else list(vectors),
        }


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


class EvidenceReader:
    """Reads, decodes and checks what a set of hits needs (see the module doc).

    Args:
        encoder: the model the explanations are drawn with (every point is checked for it).
        client: where to fetch stored features; ``None``: only what the hits carry.
        sources: the policy under which images named in payloads may be read.
        retry: how Qdrant calls are retried.
    """

    def __init__(
        self,
        encoder: ClipEncoder,
        client: QdrantClient | None,
        *,
        sources: ImageSourcePolicy,
        retry: RetryPolicy,
    ) -> None:
        self.encoder = encoder
        self.client = client
        self.sources = sources
        self.retry = retry
        self.codec = PayloadFeatureCodec()

    def request(
        self,
        hits: Sequence[models.ScoredPoint],
        collection_name: str,
        layout: CollectionLayout,
        method: HeatmapMethod,
    ) -> FetchRequest:
        """The retrieve call reading the payload keys and vectors ``method`` may use."""
        keys = [*_LIGHT_KEYS, *layout.payload_keys()]
        for option in method.requires:
            keys += [STORED_FIELDS[f] for f in option if f in STORED_FIELDS]
        vectors = layout.vector_request()
        return FetchRequest(
            collection_name=collection_name,
            ids=tuple(hit.id for hit in hits),
            with_payload=tuple(dict.fromkeys(keys)),
            with_vectors=vectors if isinstance(vectors, bool) else tuple(vectors),
        )

    def read(
        self,
        hits: list[models.ScoredPoint],
        *,
        layout: CollectionLayout,
        request: FetchRequest | None,
        records: Sequence[models.Record] | None,
        method: HeatmapMethod,
        stored_words: bool,
        grounding: bool,
        hit_kind: HitKind | None,
        default_kind: HitKind,
    ) -> list[HitData]:
        """One :class:`HitData` per hit: fetched (``request``) or given (``records``),
        decoded, completed from images where nothing stored suffices, and verified."""
        if records is None and request is not None and self.client is not None:
            records = self._fetch(request)
        stored = {str(r.id): r for r in records or ()}
        data = []
        for hit in hits:
            record = stored.get(str(hit.id))
            try:
                data.append(self._decode(hit, record, layout, stored_words, hit_kind, default_kind))
            except QdrantXaiError as exc:
                payload = {**(hit.payload or {}), **((record.payload if record else None) or {})}
                kind = hit_kind or layout.kind_of(payload, default=default_kind)
                data.append(HitData(kind=kind, error=exc))
        self._complete_image_hits(hits, data, method, grounding)
        self._verify_vectors(hits, data)
        return data

    def _fetch(self, request: FetchRequest) -> list[models.Record]:
        assert self.client is not None
        try:
            return self.retry.call(
                self.client.retrieve,
                request.collection_name,
                what=f"reading the features of {len(request.ids)} hits from "
                f"{request.collection_name!r}",
                client=self.client,
                **request.kwargs(),
            )
        except (ValueError, KeyError) as exc:
            raise QdrantXaiError(
                f"cannot fetch the hits' features from collection "
                f"{request.collection_name!r} ({exc})"
            ) from exc

    # -- one hit ------------------------------------------------------------------------

    def _decode(
        self,
        hit: models.ScoredPoint,
        record: models.Record | None,
        layout: CollectionLayout,
        stored_words: bool,
        hit_kind: HitKind | None,
        default_kind: HitKind,
    ) -> HitData:
        payload: dict[str, Any] = {
            **(hit.payload or {}),
            **((record.payload if record else None) or {}),
        }
        stored_vector = record.vector if record is not None else None
        if stored_vector is None:
            stored_vector = hit.vector
        source = layout.image_source(payload)
        text = layout.text(payload)
        recorded = payload.get(PayloadKeys.KIND)
        kind: HitKind
        if (hit_kind == "image" and source) or (hit_kind == "text" and text):
            kind = hit_kind  # a point holding both (one image, one caption vector)
        else:
            kind = layout.kind_of(payload, default=default_kind)
        what = f"point {hit.id}"
        fingerprint = payload.get(PayloadKeys.FINGERPRINT)
        if fingerprint is not None:
            self.encoder.fingerprint.check(fingerprint, what=what)
        data = HitData(kind=kind, source=source, text=text)
        if kind == "image" and recorded == "image":  # another tool's crop_box means its own
            data.crop_box = stored_crop_box(payload, what)
        vector = layout.vector_of(stored_vector, kind)
        if vector is not None:
            unit = self._stored_unit(vector, what)
            if fingerprint is not None and recorded == kind:
                data.embedding = unit
            else:  # recomputed instead, then checked against it (_verify_vectors): never
                # skipped, whatever else the payload names
                data.unverified = unit
        if kind == "image" and recorded == "image":
            self._decode_image_features(payload, data, what)
        if kind == "text" and data.text is None:
            raise FeaturesMissingError(
                f"{what}: a text hit without a text in its payload (looked for "
                f"{', '.join(layout.text_keys)}); pass layout=... for collections written by "
                "other tools"
            )
        words = payload.get(PayloadKeys.WORDS)
        if (
            stored_words
            and kind == "text"
            and recorded == "text"
            and payload.get(PayloadKeys.FEATURES) is not None
            and isinstance(words, list)
            and words
        ):
            check_stored_words(words, data.text or "", what)
            fp = self.encoder.fingerprint
            data.word_contributions = self.codec.decode(
                payload[PayloadKeys.FEATURES],
                fingerprint=fp.key,
                shape=(len(words), fp.dim),
                what=f"{what} word features",
            )
        return data

    def _decode_image_features(self, payload: dict[str, Any], data: HitData, what: str) -> None:
        fp = self.encoder.fingerprint
        shapes = {
            "contributions": (*fp.grid, fp.dim),
            "patch_tokens": (*fp.grid, fp.dim),
            "last_layer_inputs": (1 + fp.grid[0] * fp.grid[1], self.encoder.vision_width),
        }
        for field, shape in shapes.items():
            key = STORED_FIELDS[field]
            if payload.get(key) is not None:
                decoded = self.codec.decode(
                    payload[key], fingerprint=fp.key, shape=shape, what=f"{what} {key}"
                )
                setattr(data, field, decoded)

    def _stored_unit(self, vector: list[float], what: str) -> np.ndarray:
        """A hit's stored vector, normalised, if it can come from this model.

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
            self.encoder.dim,
            what=f"{what}: its stored vector",
            model=self.encoder.model_id,
        )
        return array / max(float(np.linalg.norm(array)), 1e-12)

    # -- all hits -----------------------------------------------------------------------

    def _verify_vectors(self, hits: list[models.ScoredPoint], data: list[HitData]) -> None:
        """Hits that no fingerprint vouches for must have been found with this model: their
        stored vector must agree with this model's re-encoding, or every explanation would
        be drawn with a model that did not retrieve them. Image hits are re-encoded already
        (:meth:`_complete_image_hits`), texts here.

        Raises:
            ModelMismatchError: a stored vector disagrees with its re-encoding.
        """
        texts = [
            i
            for i, d in enumerate(data)
            if d.error is None and d.unverified is not None and d.embedding is None
        ]
        if texts:
            fresh = self.encoder.embed_texts([data[i].text or "" for i in texts])
            for i, embedding in zip(texts, fresh, strict=True):
                data[i].embedding = embedding
        for hit, d in zip(hits, data, strict=True):
            if d.error is None and d.unverified is not None and d.embedding is not None:
                try:
                    check_agreement(
                        d.unverified,
                        d.embedding,
                        what=f"point {hit.id}: its stored {d.kind} vector",
                        model=self.encoder.model_id,
                        reencoded=_reencoded(d),
                    )
                except QdrantXaiError as exc:
                    d.error = exc

    def _complete_image_hits(
        self,
        hits: list[models.ScoredPoint],
        data: list[HitData],
        method: HeatmapMethod,
        grounding: bool,
    ) -> None:
        """Reads the image of every hit whose stored features do not suffice, and encodes it."""
        images_at = [i for i, d in enumerate(data) if d.kind == "image" and d.error is None]
        stored = stack_evidence([data[i] for i in images_at]) if images_at else ImageEvidence()
        needs = needed_fields(method, stored)
        if grounding:
            needs.add("contributions")
        todo = [
            i
            for i in images_at
            if data[i].embedding is None or any(not _has(data[i], f) for f in needs)
        ]
        opened: list[tuple[int, LoadedImage]] = []
        for i in todo:
            try:
                opened.append((i, self._open(hits[i], data[i], needs)))
            except QdrantXaiError as exc:
                data[i].error = exc
        if not opened:
            return
        encoded = self.encoder.encode_images(
            [image for _, image in opened],
            patch_tokens="patch_tokens" in needs,
            last_layer="last_layer_inputs" in needs,
        )
        for (i, image), feats in zip(opened, encoded, strict=True):
            _fill(data[i], image, feats)
            # the features are this image's now: so is the box (the file may have changed)
            data[i].crop_box = self.encoder.crop_box(image.width, image.height)

    def _open(self, hit: models.ScoredPoint, data: HitData, needs: set[str]) -> LoadedImage:
        missing = _what_is_missing(data, needs, fetched=self.client is not None)
        if not data.source:
            raise FeaturesMissingError(
                f"point {hit.id} has {missing} and no image source to read; re-index "
                "it with qdrant-xai (features are stored by default; --profile full for "
                "gradient methods)"
            )
        try:
            return self.sources.open(data.source)
        except QdrantXaiError as exc:
            raise FeaturesMissingError(
                f"point {hit.id} has {missing}, and its image cannot be read: {exc}. "
                f"The image source policy: {self.sources.describe()}. Allow the image "
                "folder with image_roots (CLI: --image-root) or its URL host (sources="
                "ImageSourcePolicy(allow_urls=True, allowed_hosts=[...]); CLI: "
                "--allow-url-host), or backfill / re-index the collection with qdrant-xai "
                "(--profile full for gradient methods)"
            ) from exc


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


def _fill(data: HitData, image: LoadedImage, feats: ImageFeatures) -> None:
    """Completes a hit with its image's features, keeping what was stored."""
    data.embedding = feats.embedding
    data.contributions = feats.contributions
    if data.patch_tokens is None:
        data.patch_tokens = feats.patch_tokens
    if data.last_layer_inputs is None:
        data.last_layer_inputs = feats.last_layer_inputs
    data.image = image


def _reencoded(data: HitData) -> str:
    """What was re-encoded for a hit, quoted briefly (for mismatch messages)."""
    if data.kind == "text":
        return f"its text {brief_repr(data.text or '')}"
    return f"its image {brief_repr(data.source or '')}"


def _has(data: HitData, field: str) -> bool:
    return (data.image if field == "images" else getattr(data, field)) is not None


def _what_is_missing(data: HitData, needs: set[str], *, fetched: bool) -> str:
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
