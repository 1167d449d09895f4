"""Explaining collections qdrant-xai did not write: vector checks and feature backfill.

A collection filled by another tool (LangChain, LlamaIndex, FastEmbed, Qdrant's tutorial)
has vectors but no features. Two tools make it explainable:

* :func:`check_vectors` re-encodes a small sample of its points with the configured CLIP
  and compares them with the stored vectors, so a heatmap is never drawn with a model the
  collection was not built with.
* :class:`Backfiller` computes the features of existing points, batch by batch, and
  writes them to the collection's *sidecar* (:mod:`qdrant_xai.storage.sidecar`), so the
  collection itself stays byte-identical; ``in_place=True`` writes them into the points'
  payloads instead (``set_payload``, vectors untouched), the choice for qdrant-xai's own
  collections. It verifies each point's stored vector against the re-encoded one before
  writing, skips points whose features are current (so a rerun resumes), and reports what
  it did.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.encoding.fingerprint import check_agreement
from qdrant_xai.errors import (
    ImageLoadError,
    ModelMismatchError,
    QdrantXaiError,
    StaleFeaturesError,
)
from qdrant_xai.images.load import LoadedImage, load_in_passes
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.progress import progress_bar
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.codec import Codec, PayloadFeatureCodec
from qdrant_xai.storage.detect import resolve_layout
from qdrant_xai.storage.layouts import AUTO, CollectionLayout, LayoutSpec, layout_named
from qdrant_xai.storage.payloads import (
    check_source_content,
    check_stored_words,
    image_features_payload,
    is_current,
    stored_crop_box,
    text_features_payload,
)
from qdrant_xai.storage.schema import (
    PayloadKeys,
    Profile,
    check_write_options,
)
from qdrant_xai.storage.sidecar import Sidecar, SidecarEntry, current_entry
from qdrant_xai.storage.vector_check import check_dimensions

__all__ = ["BackfillSummary", "Backfiller", "FeatureWrite", "PendingPoint"]


@dataclass(frozen=True)
class PendingPoint:
    """A point that needs features: what :meth:`Backfiller.compute` needs of it, small and
    picklable (it crosses to Ray workers).

    Attributes:
        point_id: the point's id.
        kind: ``"image"`` or ``"text"``.
        value: its image source (a path, URL, data URI or base64, as the layout found it)
            or its text.
        vector: its stored vector of that kind (None: it has none).
    """

    point_id: models.ExtendedPointId
    kind: Literal["image", "text"]
    value: str
    vector: list[float] | None


@dataclass(frozen=True)
class FeatureWrite:
    """The features of one point, ready to write (in place or as a sidecar entry).

    Attributes:
        point_id, kind, vector: as in :class:`PendingPoint`.
        payload: the features' payload (``image_/text_features_payload``).
    """

    point_id: models.ExtendedPointId
    kind: Literal["image", "text"]
    payload: dict[str, Any]
    vector: list[float] | None


@dataclass
class BackfillSummary:
    """What a backfill run did.

    Attributes:
        updated: points whose features were written in this run.
        unchanged: points that already had current features.
        failed: ``(point id, reason)`` of points left as they were.
        damaged: ids of current points whose stored features did not decode (``repair``);
            they are rewritten like the others, or listed in ``failed``.
    """

    updated: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        repaired = f" ({len(self.damaged)} with damaged features)" if self.damaged else ""
        lines = [
            f"backfilled {self.updated} points{repaired}; {self.unchanged} unchanged; "
            f"{len(self.failed)} skipped"
        ]
        lines += [f"  skipped {pid}: {reason}" for pid, reason in self.failed[:20]]
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more")
        return "\n".join(lines)


class Backfiller:
    """Adds qdrant-xai features to the points of an existing collection.

    Setup::

        from qdrant_xai import Backfiller, ClipEncoder, ImageSourcePolicy
        backfiller = Backfiller(
            client, ClipEncoder.from_pretrained("openai/clip-vit-base-patch32"),
            collection_name="products", layout="langchain",
            sources=ImageSourcePolicy.from_roots(["/data/images"]),
        )

    Use::

        print(backfiller.run())   # resumable: rerun after an interruption

    Each page goes through :meth:`pending` (what is current: no image read), :meth:`compute`
    (load, encode, verify, build the writes; the model only) and :meth:`write`;
    :class:`~qdrant_xai.storage.distributed.RayBackfiller` runs :meth:`compute` on Ray Data.

    A collection another tool wrote is never written to: the features go to its sidecar
    collection (``"<collection>__xai"`` by default), keyed by the same point ids and by a
    copy of each point's stored vector, so a point re-written later is seen as stale. With
    ``in_place=True`` (and always for qdrant-xai's own collections) only the points' payloads
    change (``set_payload``): ids, vectors and the other payload keys are left alone. Image
    points get the patch contributions (and the ``full`` profile's last-layer input),
    caption points their word contributions; both get the model fingerprint, so the
    explainer then uses the stored vectors and features directly.

    Args:
        client: any ``QdrantClient``.
        encoder: the CLIP model the collection's vectors were made with.
        collection_name: the existing collection.
        layout: where its image sources, texts and vectors are: ``"auto"`` (detected), a
            preset name or a :class:`~qdrant_xai.storage.layouts.CollectionLayout`.
        sources: which image sources may be read (local roots, URL allow-list).
        codec: payload codec of the features.
        profile: ``"standard"`` or ``"full"`` (see :class:`~qdrant_xai.Indexer`).
        batch_size: points per scroll page, forward pass and write.
        verify: compare each point's stored vector with its re-encoding before writing;
            a point that disagrees is reported as failed, not written.
        retry: how Qdrant calls are retried on transient failures (default:
            :class:`RetryPolicy` defaults); writes are idempotent ``set_payload``s.
        repair: also rewrite points that carry this model's fingerprint but whose stored
            features do not decode for it (damaged or tampered payloads, which the
            explainer refuses); reads every point's features, so slower.
        sidecar: the sidecar's name (default ``"<collection>__xai"``).
        in_place: write the features into the collection's own payloads instead of the
            sidecar (grows every point's payload by its features).
    """

    def __init__(
        self,
        client: QdrantClient,
        encoder: ClipEncoder,
        *,
        collection_name: str,
        layout: LayoutSpec = AUTO,
        sources: ImageSourcePolicy | None = None,
        codec: Codec = "fp16",
        profile: Profile = "standard",
        batch_size: int = 32,
        verify: bool = True,
        retry: RetryPolicy | None = None,
        repair: bool = False,
        sidecar: str | None = None,
        in_place: bool = False,
    ) -> None:
        check_write_options(batch_size=batch_size, profile=profile)
        self.client = client
        self.encoder = encoder
        self.collection_name = collection_name
        if layout is not None and layout != AUTO:
            layout_named(layout)  # an unknown preset name fails here
        self.layout = layout
        self.sources = sources or ImageSourcePolicy()
        self.codec = PayloadFeatureCodec(codec)
        self.profile = profile
        self.batch_size = batch_size
        self.verify = verify
        self.retry = retry or RetryPolicy()
        self.repair = repair
        self.in_place = in_place
        self.sidecar_name = sidecar
        #: the sidecar the features go to (None: in place, or before :meth:`bind`)
        self.sidecar: Sidecar | None = None

    def run(self, *, progress: bool = True, max_points: int | None = None) -> BackfillSummary:
        """Backfills every point (or the first ``max_points``), page by page."""
        layout = self.prepare()
        summary = BackfillSummary()
        bar = progress_bar(total=self.count(), unit="pt", desc="backfilling", enabled=progress)
        for page in self.pages(layout, max_points=max_points):
            pending = self.pending(page, layout, summary)
            summary.updated += self.write(self.compute(pending, summary))
            bar.update(len(page))
        bar.close()
        return summary

    # -- the steps of a page, shared with RayBackfiller -----------------------------------

    def prepare(self) -> CollectionLayout:
        """The collection's layout, resolved, and its vectors' size checked against the
        model; chooses where the features go (payloads or the sidecar)."""
        layout = resolve_layout(self.client, self.collection_name, self.layout, retry=self.retry)
        check_dimensions(self.client, self.collection_name, layout, self.encoder, self.retry)
        self.bind(in_place=self.in_place or layout.name == "qdrant-xai")
        return layout

    def bind(self, *, in_place: bool) -> None:
        """Where :meth:`compute` builds writes for and :meth:`write` writes them: the
        points' payloads (``in_place``) or the sidecar (not created here)."""
        self.sidecar = (
            None
            if in_place
            else Sidecar(
                self.client, self.collection_name, name=self.sidecar_name, retry=self.retry
            )
        )

    def pages(
        self, layout: CollectionLayout, *, max_points: int | None = None
    ) -> Iterator[list[models.Record]]:
        """The collection's points, a page (``batch_size``) at a time, the first
        ``max_points`` only when given."""
        seen = 0
        for page in self._pages(layout):
            if max_points is not None:
                page = page[: max(0, max_points - seen)]
            seen += len(page)
            if page:
                yield page
            if max_points is not None and seen >= max_points:
                return

    def pending(
        self, records: Sequence[models.Record], layout: CollectionLayout, summary: BackfillSummary
    ) -> list[PendingPoint]:
        """The points of a page that need features (their features are missing, stale
        or, with ``repair``, damaged); the others are counted in ``summary`` (unchanged,
        or failed with the reason). Cheap: no image is decoded, nothing is encoded."""
        pending: list[PendingPoint] = []
        entries = self.sidecar.read([r.id for r in records]) if self.sidecar else {}
        for record in records:
            payload = record.payload or {}
            source = layout.image_source(payload, sources=self.sources)
            text = layout.text(payload) if source is None else None
            kind: Literal["image", "text"] = "image" if source is not None else "text"
            if self.sidecar is not None:
                payload = entries.get(str(record.id), {}).get(kind) or {}
                current = current_entry(
                    payload,
                    fingerprint=self.encoder.fingerprint.key,
                    stored_vector=layout.vector_of(record.vector, kind),
                    profile=self.profile,
                )
            else:
                changed = self._changed_file(record, payload, source)
                if changed is not None:  # its vector is the old picture's: index it again
                    summary.failed.append((str(record.id), changed))
                    continue
                current = is_current(
                    payload, self.encoder.fingerprint.key, self.profile, image=source is not None
                )
            if current:
                if not self.repair or self._intact(payload, source is not None, text):
                    summary.unchanged += 1
                    continue
                summary.damaged.append(str(record.id))
            value = source if source is not None else text
            if value is None:
                summary.failed.append(
                    (str(record.id), f"no image source or text at {layout.name!r} layout keys")
                )
                continue
            pending.append(
                PendingPoint(record.id, kind, value, layout.vector_of(record.vector, kind))
            )
        return pending

    def compute(
        self, points: Sequence[PendingPoint], summary: BackfillSummary
    ) -> list[FeatureWrite]:
        """The per-page work of both engines: images loaded (under :attr:`sources`, in
        passes within the pixel budget) and texts taken, encoded, each stored vector
        verified against its re-encoding, and the writes built. Needs the model, never
        the client; a point that cannot be done is listed in ``summary.failed``."""
        images = [p for p in points if p.kind == "image"]
        texts = [p for p in points if p.kind == "text"]
        written = [*self._images_in_passes(images, summary), *self._text_writes(texts, summary)]
        if self.sidecar is None:  # in place: the point itself ties the features to it
            return written
        kept = []
        for write in written:
            if write.vector is None:  # nothing to tie the entry to: it could never be used
                summary.failed.append((str(write.point_id), f"no stored {write.kind} vector"))
            else:
                kept.append(write)
        return kept

    def write(self, writes: Sequence[FeatureWrite]) -> int:
        """Writes what :meth:`compute` built: sidecar entries, or ``set_payload`` on the
        points (in place). Idempotent: writing the same writes again changes nothing.
        Returns the number of points written."""
        if not writes:
            return 0
        if self.sidecar is not None:
            return self.sidecar.write(
                [SidecarEntry(w.point_id, w.kind, w.payload, w.vector or []) for w in writes]
            )
        self.retry.call(
            self.client.batch_update_points,
            self.collection_name,
            [_set_payload(w.point_id, w.payload) for w in writes],
            what=f"writing the features of {len(writes)} points to {self.collection_name!r}",
            client=self.client,
            wait=True,
        )
        return len(writes)

    # -- pages --------------------------------------------------------------------------

    def count(self) -> int:
        """The number of points in the collection."""
        counted = self.retry.call(
            self.client.count,
            self.collection_name,
            what=f"counting the points of {self.collection_name!r}",
            client=self.client,
            exact=True,
        )
        return int(counted.count)

    def _pages(self, layout: CollectionLayout) -> Iterator[list[models.Record]]:
        offset: Any = None
        keys = [*layout.payload_keys(), PayloadKeys.FINGERPRINT, PayloadKeys.PROFILE]
        keys.append(PayloadKeys.CONTENT)
        if self.repair:
            keys += [PayloadKeys.FEATURES, PayloadKeys.LAST_LAYER, PayloadKeys.WORDS]
            keys += [PayloadKeys.CROP_BOX, PayloadKeys.WIDTH, PayloadKeys.HEIGHT]
        while True:
            records, offset = self.retry.call(
                self.client.scroll,
                self.collection_name,
                what=f"reading a page of collection {self.collection_name!r}",
                client=self.client,
                limit=self.batch_size,
                offset=offset,
                with_payload=list(dict.fromkeys(keys)),
                with_vectors=layout.vector_request(),
            )
            if records:
                yield records
            if offset is None:
                return

    def _changed_file(
        self, record: models.Record, payload: dict[str, Any], source: str | None
    ) -> str | None:
        """Why an image point written by qdrant-xai is stale (its file no longer hashes to
        the recorded ``xai_content``), or None: backfilling it would pair the old picture's
        vector with the new picture's features."""
        recorded = payload.get(PayloadKeys.CONTENT)
        try:
            check_source_content(recorded, source, self.sources, what=f"point {record.id}")
        except StaleFeaturesError as exc:
            return str(exc)
        return None

    def _intact(self, payload: dict[str, Any], is_image: bool, text: str | None) -> bool:
        """Whether a current point's stored features decode for this model and agree with
        its geometry and words, as the explainer demands (``repair``)."""
        fp = self.encoder.fingerprint
        try:
            if is_image:
                stored_crop_box(payload, "")
                self.codec.decode(
                    payload.get(PayloadKeys.FEATURES), fingerprint=fp.key, shape=(*fp.grid, fp.dim)
                )
                if self.profile == "full":
                    self.codec.decode(
                        payload.get(PayloadKeys.LAST_LAYER),
                        fingerprint=fp.key,
                        shape=(self.encoder.vision_tokens, self.encoder.vision_width),
                    )
                return True
            words = payload.get(PayloadKeys.WORDS)
            if not isinstance(words, list):
                return False
            check_stored_words(words, text or "", "")
            if words:
                self.codec.decode(
                    payload.get(PayloadKeys.FEATURES),
                    fingerprint=fp.key,
                    shape=(len(words), fp.dim),
                )
            return True
        except QdrantXaiError:
            return False

    def _verified(self, point: PendingPoint, fresh: np.ndarray, summary: BackfillSummary) -> bool:
        if not self.verify:
            return True
        if point.vector is None:
            summary.failed.append((str(point.point_id), f"no stored {point.kind} vector to verify"))
            return False
        try:
            check_agreement(
                point.vector,
                fresh,
                what=f"its stored {point.kind} vector",
                model=self.encoder.model_id,
            )
        except ModelMismatchError as exc:
            summary.failed.append((str(point.point_id), f"{exc}; not backfilled"))
            return False
        return True

    def _images_in_passes(
        self, points: list[PendingPoint], summary: BackfillSummary
    ) -> list[FeatureWrite]:
        """Decodes and encodes the page's images in passes of at most
        ``ImageLimits.max_batch_pixels`` decoded pixels (as the indexer does), so memory is
        bounded by the budget, not by the page size."""

        def load(point: PendingPoint) -> LoadedImage | None:
            try:
                return self.sources.open(point.value)
            except (ImageLoadError, QdrantXaiError) as exc:
                summary.failed.append((str(point.point_id), str(exc)))
                return None

        budget = self.sources.limits.max_batch_pixels
        written: list[FeatureWrite] = []
        for loaded in load_in_passes(points, load, max_pixels=budget):
            written += self._image_writes(loaded, summary)
        return written

    def _image_writes(
        self, items: list[tuple[PendingPoint, LoadedImage]], summary: BackfillSummary
    ) -> list[FeatureWrite]:
        if not items:
            return []
        features = self.encoder.encode_images(
            [image for _, image in items], last_layer=self.profile == "full"
        )
        written: list[FeatureWrite] = []
        for (point, image), feats in zip(items, features, strict=True):
            if not self._verified(point, feats.embedding, summary):
                continue
            payload = image_features_payload(
                self.encoder, self.codec, image, feats, profile=self.profile
            )
            written.append(FeatureWrite(point.point_id, "image", payload, point.vector))
        return written

    def _text_writes(
        self, points: list[PendingPoint], summary: BackfillSummary
    ) -> list[FeatureWrite]:
        if not points:
            return []
        features = self.encoder.encode_texts([p.value for p in points])
        written: list[FeatureWrite] = []
        for point, feats in zip(points, features, strict=True):
            if not self._verified(point, feats.embedding, summary):
                continue
            payload = text_features_payload(self.encoder, self.codec, feats)
            written.append(FeatureWrite(point.point_id, "text", payload, point.vector))
        return written


def _set_payload(point_id: Any, payload: dict[str, Any]) -> models.SetPayloadOperation:
    return models.SetPayloadOperation(
        set_payload=models.SetPayload(payload=payload, points=[point_id])
    )
