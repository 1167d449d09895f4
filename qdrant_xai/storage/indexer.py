"""Indexing images and captions into a Qdrant collection, with their features.

Input is streamed: one batch of images is decoded, encoded and written at a time. Each
point is written whole (vector and features in one upsert), ids are deterministic, and a
batch whose points already exist with this model's fingerprint is skipped before any image
is read, so an interrupted run resumes where it stopped and a second run changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder, ImageFeatures, TextFeatures
from qdrant_xai.encoding.text_limits import TextLimits
from qdrant_xai.errors import ImageLoadError, InputTooLargeError
from qdrant_xai.images.load import (
    ImageLimits,
    LoadedImage,
    file_digest,
    load_image,
    load_in_passes,
)
from qdrant_xai.progress import progress_bar
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.captions import list_folder, printable, read_captions_csv
from qdrant_xai.storage.codec import Codec, PayloadFeatureCodec
from qdrant_xai.storage.index_records import BatchPlan, ImageRecord, IndexSummary
from qdrant_xai.storage.payloads import (
    image_features_payload,
    is_current,
    text_features_payload,
)
from qdrant_xai.storage.schema import (
    IMAGE_VECTOR,
    TEXT_VECTOR,
    PayloadKeys,
    Profile,
    check_write_options,
    ensure_collection,
    image_point_id,
    text_point_id,
)

__all__ = ["BatchPlan", "ImageRecord", "IndexSummary", "Indexer", "read_captions_csv"]

_POINT_OVERHEAD = 2048  # bytes of JSON around the vector and features of one point


class Indexer:
    """Writes CLIP vectors and explainable features of images and captions to Qdrant.

    Setup::

        from qdrant_client import QdrantClient
        from qdrant_xai import ClipEncoder, Indexer
        client = QdrantClient(path="./qdrant_data")
        indexer = Indexer(client, ClipEncoder.from_pretrained(), collection_name="photos")

    Use::

        summary = indexer.index_folder("photos/", captions="photos/captions.csv")
        print(summary)

    Args:
        client: any ``QdrantClient`` (embedded or server).
        encoder: the CLIP encoder; its fingerprint is stored with every point.
        collection_name: created with named vectors ``image`` and ``text`` when missing.
        codec: payload codec of the features, ``"fp16"``, ``"int8"`` or ``"svd"`` (see
            :mod:`qdrant_xai.storage.codec`).
        batch_size: images per forward pass.
        max_request_bytes: upper bound of one upsert request (Qdrant refuses 32 MB).
        image_limits: size bounds for decoding; a batch is decoded and encoded in passes of
            at most ``image_limits.max_batch_pixels`` pixels.
        text_limits: bounds on one caption or text; one over them is skipped and listed.
        patch_tokens: also store the raw projected patch tokens (the "patch similarity"
            baseline; doubles the payload). The direct contributions are always stored.
        profile: ``"standard"`` stores the direct patch contributions (every stored-feature
            method runs from them); ``"full"`` also stores the input of the last vision
            layer, so gradient methods (``grad-eclip``, ``gae``) and the raw patch tokens
            need no image read at query time (about 1.5x the payload of ``standard`` for
            ViT-B/32).
        retry: how Qdrant calls are retried on transient failures (default:
            :class:`RetryPolicy` defaults); every write is an idempotent upsert.
    """

    def __init__(
        self,
        client: QdrantClient,
        encoder: ClipEncoder,
        *,
        collection_name: str,
        codec: Codec = "fp16",
        batch_size: int = 16,
        max_request_bytes: int = 8 * 1024 * 1024,
        image_limits: ImageLimits | None = None,
        patch_tokens: bool = False,
        profile: Profile = "standard",
        retry: RetryPolicy | None = None,
        text_limits: TextLimits | None = None,
    ) -> None:
        check_write_options(batch_size=batch_size, profile=profile)
        self.client = client
        self.encoder = encoder
        self.collection_name = collection_name
        self.codec = PayloadFeatureCodec(codec)
        self.batch_size = batch_size
        self.max_request_bytes = max_request_bytes
        self.image_limits = image_limits or ImageLimits()
        self.patch_tokens = patch_tokens
        self.profile = profile
        self.retry = retry or RetryPolicy()
        self.text_limits = text_limits or TextLimits()

    # -- entry points -------------------------------------------------------------------

    def index_folder(
        self,
        directory: str | os.PathLike[str],
        *,
        captions: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> IndexSummary:
        """Indexes every image under ``directory`` (and its captions from a CSV).

        The CSV's image paths may be relative to ``directory`` or to the CSV's folder, or
        absolute (inside ``directory``); a row that matches no image, or whose caption is
        over :attr:`text_limits`, is listed in the summary by its row number, and the rest
        is indexed."""
        folder = list_folder(directory, captions=captions, text_limits=self.text_limits)
        records = (
            ImageRecord(source, tuple(folder.captions.get(source, ())))
            for _, source in folder.files
        )
        summary = self.index(records, total=len(folder.files), progress=progress)
        summary.failed += folder.failed
        return summary

    def index(
        self, records: Iterable[ImageRecord], *, total: int | None = None, progress: bool = True
    ) -> IndexSummary:
        """Indexes a stream of images with their captions, batch by batch."""
        ensure_collection(self.client, self.collection_name, dim=self.encoder.dim, retry=self.retry)
        summary = IndexSummary()
        bar = progress_bar(total=total, unit="img", desc="indexing", enabled=progress)
        batch: list[ImageRecord] = []
        for record in records:
            batch.append(record)
            if len(batch) == self.batch_size:
                self.index_batch(batch, summary)
                bar.update(len(batch))
                batch = []
        if batch:
            self.index_batch(batch, summary)
            bar.update(len(batch))
        bar.close()
        return summary

    def index_texts(self, texts: Sequence[str]) -> IndexSummary:
        """Indexes standalone texts (not tied to an image) as ``text`` points."""
        ensure_collection(self.client, self.collection_name, dim=self.encoder.dim, retry=self.retry)
        summary = IndexSummary()
        storable = [t for t in texts if self._acceptable_text(t, summary)]
        for start in range(0, len(storable), self.batch_size):
            chunk = list(storable[start : start + self.batch_size])
            ids = [text_point_id(t) for t in chunk]
            current, _ = self._current(ids, {})
            fresh = [(t, i) for t, i in zip(chunk, ids, strict=True) if i not in current]
            summary.unchanged += len(chunk) - len(fresh)
            points = self._text_points([(t, i, None) for t, i in fresh], summary)
            self._upsert(points)
            summary.indexed_texts += len(points)
        return summary

    # -- one batch ----------------------------------------------------------------------

    def index_batch(self, batch: list[ImageRecord], summary: IndexSummary) -> None:
        """One batch: checked, skipped when current, encoded and written (see the module)."""
        plan = self.plan_batch(batch, summary)
        todo, stored_captions = self.pending(plan, summary)
        for points, stale in self.batch_points(todo, plan, stored_captions, summary):
            self.write_points(points, stale)

    def plan_batch(self, batch: list[ImageRecord], summary: IndexSummary) -> BatchPlan:
        """The storable records of ``batch`` (valid names, acceptable captions; the others
        listed in ``summary``), their point ids and their files' digests; no Qdrant call."""
        batch = [
            ImageRecord(r.source, tuple(c for c in r.captions if self._acceptable_text(c, summary)))
            for r in batch
            if _storable_source(r.source, summary)
        ]
        ids = {r.source: image_point_id(r.source) for r in batch}
        caption_ids = {
            r.source: [text_point_id(c, r.source) for c in r.captions if c.strip()] for r in batch
        }
        # an image is current only with the same bytes: a file overwritten in place is
        # re-encoded, whatever its path and size
        digests = {ids[r.source]: file_digest(r.source, self.image_limits) for r in batch}
        return BatchPlan(batch, ids, caption_ids, digests)

    def pending(
        self, plan: BatchPlan, summary: IndexSummary
    ) -> tuple[list[ImageRecord], dict[str, list[str]]]:
        """The records of ``plan`` not yet current in the collection (the others counted as
        unchanged), and the caption ids each stored image point lists."""
        current, stored_captions = self._current(
            [*plan.ids.values(), *(i for v in plan.caption_ids.values() for i in v)],
            plan.digests,
        )
        todo = []
        for record in plan.records:
            if plan.ids[record.source] in current and (
                set(plan.caption_ids[record.source]) <= current
            ):
                summary.unchanged += 1
            else:
                todo.append(record)
        return todo, stored_captions

    def batch_points(
        self,
        todo: list[ImageRecord],
        plan: BatchPlan,
        stored_captions: dict[str, list[str]],
        summary: IndexSummary,
    ) -> Iterator[tuple[list[models.PointStruct], list[str]]]:
        """Decodes and encodes ``todo`` in passes of bounded memory; per pass, the points to
        write (counted as indexed in ``summary``) and the caption points to delete."""

        def load(record: ImageRecord) -> LoadedImage | None:
            try:
                return load_image(record.source, limits=self.image_limits)
            except ImageLoadError as exc:
                summary.failed.append((record.source, exc.reason))
                return None

        # bounded memory per batch: decoded and encoded in passes of at most the budget
        for loaded in load_in_passes(todo, load, max_pixels=self.image_limits.max_batch_pixels):
            yield self._loaded_points(loaded, plan.ids, plan.digests, stored_captions, summary)

    def write_points(self, points: list[models.PointStruct], stale: list[str]) -> None:
        """Upserts ``points`` in requests under :attr:`max_request_bytes`, then deletes the
        ``stale`` caption points (captions no longer given)."""
        self._upsert(points)
        old: list[models.ExtendedPointId] = list(stale)
        if old:  # edited captions: the old caption points go with the old captions
            self.retry.call(
                self.client.delete,
                self.collection_name,
                what=f"deleting {len(stale)} replaced caption points",
                client=self.client,
                points_selector=models.PointIdsList(points=old),
                wait=True,
            )

    def _loaded_points(
        self,
        loaded: list[tuple[ImageRecord, LoadedImage]],
        ids: dict[str, str],
        digests: dict[str, str | None],
        stored_captions: dict[str, list[str]],
        summary: IndexSummary,
    ) -> tuple[list[models.PointStruct], list[str]]:
        """Encodes decoded images into points with their captions' points, and the caption
        points of those images whose caption is no longer given."""
        features = self._encode_images([image for _, image in loaded], summary)
        points: list[models.PointStruct] = []
        captions: list[tuple[str, str, str | None]] = []
        stale: list[str] = []
        for (record, image), feats in zip(loaded, features, strict=True):
            if feats is None:
                continue
            kept = []
            for caption in record.captions:
                if not caption.strip():
                    summary.failed.append((record.source, "empty caption skipped"))
                    continue
                cid = text_point_id(caption, record.source)
                if cid in kept:  # a repeated CSV row is one point, written and counted once
                    continue
                kept.append(cid)
                captions.append((caption, cid, ids[record.source]))
            if image.frames > 1:
                summary.notes.append((record.source, f"indexed its first page of {image.frames}"))
            image_id = ids[record.source]
            points.append(self._image_point(image_id, image, feats, kept, digests.get(image_id)))
            stale += [c for c in stored_captions.get(image_id, []) if c not in kept]
        text_points = self._text_points(captions, summary)
        summary.indexed_images += len(points)
        summary.indexed_texts += len(text_points)
        return [*text_points, *points], list(dict.fromkeys(stale))

    def _acceptable_text(self, text: str, summary: IndexSummary) -> bool:
        """Whether ``text`` is valid Unicode within :attr:`text_limits`; reported if not."""
        if not _storable_text(text, summary):
            return False
        try:
            self.text_limits.check(text, what="the text")
        except InputTooLargeError as exc:
            summary.failed.append((printable(text[:60]), f"{exc}; the text is not indexed"))
            return False
        return True

    def _encode_images(
        self, images: list[LoadedImage], summary: IndexSummary
    ) -> list[ImageFeatures | None]:
        try:
            return list(self._encoder_pass(images))
        except (RuntimeError, ValueError):
            pass  # one bad image spoils the batch: retry one by one to find it
        results: list[ImageFeatures | None] = []
        for image in images:
            try:
                results.append(self._encoder_pass([image])[0])
            except (RuntimeError, ValueError) as exc:
                summary.failed.append((image.source, f"the model could not encode it ({exc})"))
                results.append(None)
        return results

    def _encoder_pass(self, images: list[LoadedImage]) -> list[ImageFeatures]:
        return self.encoder.encode_images(
            images, patch_tokens=self.patch_tokens, last_layer=self.profile == "full"
        )

    def _image_point(
        self,
        point_id: str,
        image: LoadedImage,
        feats: ImageFeatures,
        caption_ids: list[str],
        digest: str | None,
    ) -> models.PointStruct:
        payload = image_features_payload(
            self.encoder, self.codec, image, feats, profile=self.profile
        )
        payload[PayloadKeys.SOURCE] = image.source
        if digest is not None:
            payload[PayloadKeys.CONTENT] = digest
        payload[PayloadKeys.CAPTION_IDS] = caption_ids
        return models.PointStruct(
            id=point_id, vector={IMAGE_VECTOR: feats.embedding.tolist()}, payload=payload
        )

    def _text_points(
        self, items: list[tuple[str, str, str | None]], summary: IndexSummary
    ) -> list[models.PointStruct]:
        """Points for ``(text, point_id, image_id)`` items; empty texts are refused."""
        valid = []
        for text, pid, image_id in items:
            if text.strip():
                valid.append((text, pid, image_id))
            else:
                summary.failed.append((text, "empty text skipped"))
        encoded: list[TextFeatures] = self.encoder.encode_texts([t for t, _, _ in valid])
        points = []
        for (text, pid, image_id), feats in zip(valid, encoded, strict=True):
            if feats.truncated:
                summary.notes.append(
                    (
                        text[:60],
                        f"longer than the model's {self.encoder.max_text_tokens} tokens; "
                        f"indexed its first {len(feats.words)} words",
                    )
                )
            payload = text_features_payload(self.encoder, self.codec, feats)
            payload[PayloadKeys.TEXT] = text
            if image_id is not None:
                payload[PayloadKeys.IMAGE_ID] = image_id
            points.append(
                models.PointStruct(
                    id=pid, vector={TEXT_VECTOR: feats.embedding.tolist()}, payload=payload
                )
            )
        return points

    # -- Qdrant I/O ---------------------------------------------------------------------

    def _current(
        self, ids: list[str], digests: dict[str, str | None]
    ) -> tuple[set[str], dict[str, list[str]]]:
        """Ids among ``ids`` already stored with this model's fingerprint, (image points) at
        least this run's feature profile and the file bytes hashing to ``digests[id]``;
        and the caption ids each stored image point lists."""
        if not ids:
            return set(), {}
        found = self.retry.call(
            self.client.retrieve,
            self.collection_name,
            what=f"reading {len(ids)} points of collection {self.collection_name!r}",
            client=self.client,
            ids=ids,
            with_payload=[
                PayloadKeys.FINGERPRINT,
                PayloadKeys.KIND,
                PayloadKeys.PROFILE,
                PayloadKeys.CONTENT,
                PayloadKeys.CAPTION_IDS,
            ],
            with_vectors=False,
        )
        key = self.encoder.fingerprint.key
        current, captions = set(), {}
        for p in found:
            payload = p.payload or {}
            image = payload.get(PayloadKeys.KIND) == "image"
            if image and isinstance(payload.get(PayloadKeys.CAPTION_IDS), list):
                captions[str(p.id)] = [str(c) for c in payload[PayloadKeys.CAPTION_IDS]]
            digest = digests.get(str(p.id)) if image else None
            if (not image or digest is not None) and is_current(
                payload, key, self.profile, image=image, content=digest
            ):
                current.add(str(p.id))
        return current, captions

    def _upsert(self, points: list[models.PointStruct]) -> None:
        chunk: list[models.PointStruct] = []
        size = 0
        for point in points:
            point_size = _estimate_bytes(point)
            if chunk and size + point_size > self.max_request_bytes:
                self._write(chunk)
                chunk, size = [], 0
            chunk.append(point)
            size += point_size
        if chunk:
            self._write(chunk)

    def _write(self, points: list[models.PointStruct]) -> None:
        """One upsert, retried on transient failures (safe: the ids are deterministic)."""
        self.retry.call(
            self.client.upsert,
            self.collection_name,
            what=f"upsert of {len(points)} points into {self.collection_name!r}",
            client=self.client,
            points=points,
            wait=True,
        )


def _storable_source(source: str, summary: IndexSummary) -> bool:
    """Whether ``source`` can be stored (Qdrant payloads are UTF-8); reported if not."""
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        summary.failed.append(
            (
                printable(source),
                "the file name is not valid UTF-8, so it cannot be stored as the point's "
                "source; rename the file to UTF-8 (e.g. convmv -f latin1 -t utf8) and run again",
            )
        )
        return False
    return True


def _storable_text(text: str, summary: IndexSummary) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogates); reported if not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        summary.failed.append(
            (
                printable(text[:60]),
                "the text is not valid Unicode (lone surrogate characters, e.g. bytes decoded "
                "with surrogateescape); decode it properly and index it again",
            )
        )
        return False
    return True


def _estimate_bytes(point: models.PointStruct) -> int:
    payload = point.payload or {}
    heavy = 0
    for key in PayloadKeys.HEAVY:
        encoded = payload.get(key) or {}
        heavy += len(encoded.get("data", "")) + len(encoded.get("scale", ""))
    vectors = point.vector if isinstance(point.vector, dict) else {}
    floats = sum(len(v) for v in vectors.values() if isinstance(v, list))
    return _POINT_OVERHEAD + heavy + 24 * floats + len(str(payload.get(PayloadKeys.TEXT, "")))
