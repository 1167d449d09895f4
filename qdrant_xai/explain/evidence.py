"""What explaining each hit needs, fetched, decoded and checked before any heatmap.

The first half of the explainer: one ``retrieve`` call reads the hits' stored features and
vectors (:class:`FetchRequest` says which, so a caller with its own, say async, client can
read them itself and hand the records over); each payload is decoded and validated for this
model (fingerprint, shapes, crop box, words); features that are not stored are recomputed
from the hit's image, read only under the source policy; and vectors no fingerprint vouches
for must agree with this model's re-encoding. Anything that cannot be trusted raises a typed
error naming the point and the fix, before a single heatmap is drawn.

A point carrying this model's legacy key (see :mod:`qdrant_xai.encoding.fingerprint`) is
read like one without a fingerprint; an image read here whose file no longer hashes to the
point's ``xai_content`` fails that hit (:func:`~qdrant_xai.storage.payloads.check_source_content`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.encoding.fingerprint import check_agreement
from qdrant_xai.errors import (
    FeaturesMissingError,
    QdrantXaiError,
    brief_repr,
)
from qdrant_xai.explain.base import HeatmapMethod, ImageEvidence
from qdrant_xai.explain.hits import (
    HitData,
    HitKind,
    fill,
    has,
    needed_fields,
    reencoded,
    stack_evidence,
    stored_unit,
    what_is_missing,
)
from qdrant_xai.images.load import LoadedImage
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.layouts import CollectionLayout
from qdrant_xai.storage.payloads import (
    check_source_content,
    check_stored_words,
    image_features_payload,
    stored_crop_box,
)
from qdrant_xai.storage.schema import PayloadKeys
from qdrant_xai.storage.sidecar import Sidecar, SidecarEntry, current_entry

__all__ = ["EvidenceReader", "FetchRequest"]

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
    PayloadKeys.CONTENT,
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


class EvidenceReader:
    """Reads, decodes and checks what a set of hits needs (see the module doc).

    Args:
        encoder: the model the explanations are drawn with (every point is checked for it).
        client: where to fetch stored features; ``None``: only what the hits carry.
        sources: the policy under which images named in payloads may be read.
        retry: how Qdrant calls are retried.
        write_sidecar: whether features computed from images are written to a sidecar.
    """

    def __init__(
        self,
        encoder: ClipEncoder,
        client: QdrantClient | None,
        *,
        sources: ImageSourcePolicy,
        retry: RetryPolicy,
        write_sidecar: bool = True,
    ) -> None:
        self.encoder = encoder
        self.client = client
        self.sources = sources
        self.retry = retry
        self.codec = PayloadFeatureCodec()
        #: whether features computed from images may be written to a sidecar (turned off
        #: for good when a write fails)
        self.write_sidecar = write_sidecar

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
        sidecar: Sidecar | None = None,
    ) -> list[HitData]:
        """One :class:`HitData` per hit: fetched (``request``) or given (``records``),
        decoded (with its ``sidecar`` entry when the source point has no features of its
        own and the entry is current), completed from images where nothing stored
        suffices, and verified; features computed from images are then written through to
        the sidecar."""
        if records is None and request is not None and self.client is not None:
            records = self._fetch(request)
        stored = {str(r.id): r for r in records or ()}
        entries = self._sidecar_entries(hits, stored, sidecar)
        data = []
        for hit in hits:
            record = stored.get(str(hit.id))
            try:
                data.append(
                    self._decode(
                        hit,
                        record,
                        layout,
                        stored_words,
                        hit_kind,
                        default_kind,
                        entries.get(str(hit.id), {}),
                    )
                )
            except QdrantXaiError as exc:
                payload = {**(hit.payload or {}), **((record.payload if record else None) or {})}
                kind = hit_kind or layout.kind_of(payload, default=default_kind)
                data.append(HitData(kind=kind, error=exc))
        self._complete_image_hits(hits, data, method, grounding)
        self._verify_vectors(hits, data)
        if sidecar is not None:
            self._write_through(hits, data, sidecar)
        return data

    def _sidecar_entries(
        self,
        hits: list[models.ScoredPoint],
        stored: dict[str, models.Record],
        sidecar: Sidecar | None,
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Sidecar entries of the hits that carry no fingerprint of their own."""
        if sidecar is None:
            return {}
        foreign = []
        for hit in hits:
            record = stored.get(str(hit.id))
            payload = {**(hit.payload or {}), **((record.payload if record else None) or {})}
            if payload.get(PayloadKeys.FINGERPRINT) is None:
                foreign.append(hit.id)
        return sidecar.read(foreign)

    def _write_through(
        self, hits: list[models.ScoredPoint], data: list[HitData], sidecar: Sidecar
    ) -> None:
        """Stores the features computed from images of verified foreign hits in the
        sidecar, so their next explanation reads no image. A sidecar that cannot be written
        (a read-only API key, say) is warned about once and left alone."""
        entries = [
            SidecarEntry(
                hit.id,
                "image",
                image_features_payload(
                    self.encoder,
                    self.codec,
                    d.image,
                    d.computed,
                    profile="full" if d.computed.last_layer_inputs is not None else "standard",
                ),
                d.stored_vector,
            )
            for hit, d in zip(hits, data, strict=True)
            if d.error is None
            and d.computed is not None
            and d.image is not None
            and d.stored_vector is not None
            and d.unverified is not None  # checked against the stored vector
            and not d.legacy  # the sidecar holds features of points without a fingerprint
        ]
        if not entries or not self.write_sidecar:
            return
        try:
            sidecar.write(entries)
        except (QdrantXaiError, UnexpectedResponse, ResponseHandlingException, ValueError) as exc:
            self.write_sidecar = False
            warnings.warn(
                f"cannot write to the sidecar collection {sidecar.name!r} ({brief_repr(str(exc))}"
                "); explanations go on without caching their features (pass sidecar=False, "
                "CLI --no-sidecar, to not try)",
                stacklevel=4,
            )

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
        entries: dict[str, dict[str, Any]],
    ) -> HitData:
        payload: dict[str, Any] = {
            **(hit.payload or {}),
            **((record.payload if record else None) or {}),
        }
        stored_vector = record.vector if record is not None else None
        if stored_vector is None:
            stored_vector = hit.vector
        source = layout.image_source(payload, sources=self.sources)
        text = layout.text(payload)
        kind: HitKind
        if layout.image_vector == layout.text_vector:
            # one vector per point: a point is what it holds, whatever was searched for; one
            # holding an image and a text (a LangChain image whose page_content is its file
            # name) was embedded from its image
            kind = layout.kind_of(payload, default="image", sources=self.sources)
        elif (hit_kind == "image" and source) or (hit_kind == "text" and text):
            kind = hit_kind  # a point holding both (one image, one caption vector)
        else:
            kind = layout.kind_of(payload, default=default_kind, sources=self.sources)
        what = f"point {hit.id}"
        vector = layout.vector_of(stored_vector, kind)
        from_sidecar = payload.get(PayloadKeys.FINGERPRINT) is None and current_entry(
            entries.get(kind), fingerprint=self.encoder.fingerprint.key, stored_vector=vector
        )
        if from_sidecar:  # the entry's features belong to this very vector (see sidecar.py)
            payload = {**payload, **entries[kind]}
        recorded = payload.get(PayloadKeys.KIND)
        fingerprint = payload.get(PayloadKeys.FINGERPRINT)
        # this model's legacy key vouches for nothing but the projections: read the point
        # as one without a fingerprint (features recomputed, vector checked)
        legacy = fingerprint is not None and not self.encoder.fingerprint.check(
            fingerprint, what=what
        )
        if legacy:
            fingerprint = recorded = None
        data = HitData(
            kind=kind,
            source=source,
            text=text,
            stored_vector=vector,
            from_sidecar=from_sidecar,
            legacy=legacy,
        )
        content = payload.get(PayloadKeys.CONTENT)
        if kind == "image" and isinstance(content, str):
            data.content = content
        if kind == "image" and recorded == "image":  # another tool's crop_box means its own
            data.crop_box = stored_crop_box(payload, what)
        if vector is not None:
            unit = stored_unit(vector, what, dim=self.encoder.dim, model=self.encoder.model_id)
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
            "last_layer_inputs": (self.encoder.vision_tokens, self.encoder.vision_width),
        }
        for field, shape in shapes.items():
            key = STORED_FIELDS[field]
            if payload.get(key) is not None:
                decoded = self.codec.decode(
                    payload[key], fingerprint=fp.key, shape=shape, what=f"{what} {key}"
                )
                setattr(data, field, decoded)

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
                        reencoded=reencoded(d),
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
            if data[i].embedding is None or any(not has(data[i], f) for f in needs)
        ]
        opened: list[tuple[int, LoadedImage]] = []
        for i in todo:
            try:
                image = self._open(hits[i], data[i], needs)
                # a hit whose image was just read must be the picture it was indexed from,
                # or its stored vector and the features computed now describe two pictures
                what = f"point {hits[i].id}"
                check_source_content(data[i].content, data[i].source, self.sources, what=what)
                opened.append((i, image))
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
            fill(data[i], image, feats)
            # the features are this image's now: so is the box (the file may have changed)
            data[i].crop_box = self.encoder.crop_box(image.width, image.height)

    def _open(self, hit: models.ScoredPoint, data: HitData, needs: set[str]) -> LoadedImage:
        missing = what_is_missing(data, needs, fetched=self.client is not None)
        if data.legacy:
            missing += (
                " usable (its features were written with an earlier model fingerprint, "
                "before key version 2, so its vector is checked against its re-encoded image)"
            )
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
