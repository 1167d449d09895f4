"""Explaining collections qdrant-xai did not write: vector checks and feature backfill.

A collection filled by another tool (LangChain, LlamaIndex, FastEmbed, Qdrant's tutorial)
has vectors but no features. Two tools make it explainable:

* :func:`check_vectors` re-encodes a small sample of its points with the configured CLIP
  and compares them with the stored vectors, so a heatmap is never drawn with a model the
  collection was not built with.
* :class:`Backfiller` computes the features of existing points and writes them with
  ``set_payload`` (vectors untouched), batch by batch. It verifies each point's stored
  vector against the re-encoded one before writing, skips points that already carry
  current features (so a rerun resumes), and reports what it did.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.encoding.fingerprint import MIN_AGREEMENT, check_agreement, vector_agreement
from qdrant_xai.errors import ImageLoadError, ModelMismatchError, QdrantXaiError
from qdrant_xai.images.load import LoadedImage
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.progress import progress_bar
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.codec import Codec, PayloadFeatureCodec
from qdrant_xai.storage.layouts import CollectionLayout, layout_named
from qdrant_xai.storage.payloads import (
    check_stored_words,
    image_features_payload,
    is_current,
    stored_crop_box,
    text_features_payload,
)
from qdrant_xai.storage.schema import (
    PayloadKeys,
    Profile,
    check_query_dimension,
    check_write_options,
    require_collection,
)

__all__ = ["BackfillSummary", "Backfiller", "VectorCheck", "check_vectors"]


@dataclass(frozen=True)
class VectorCheck:
    """The outcome of :func:`check_vectors`.

    Attributes:
        checked: points re-encoded and compared.
        agreement: cosine between stored and re-encoded vector, per checked point.
        skipped: ``(point id, reason)`` of sampled points that could not be re-encoded.
    """

    checked: int
    agreement: tuple[float, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.checked > 0 and min(self.agreement) >= MIN_AGREEMENT


def check_vectors(
    client: QdrantClient,
    collection_name: str,
    encoder: ClipEncoder,
    *,
    layout: str | CollectionLayout = "qdrant-xai",
    sources: ImageSourcePolicy | None = None,
    sample: int = 8,
    on_mismatch: Literal["error", "warn"] = "error",
    retry: RetryPolicy | None = None,
) -> VectorCheck:
    """Checks that a collection's vectors come from ``encoder``'s model.

    Re-encodes up to ``sample`` points (images through ``sources``, texts directly) and
    compares each with its stored vector.

    Raises:
        ModelMismatchError: a dimension differs, or a stored vector disagrees with its
            re-encoding (``on_mismatch="warn"`` turns the latter into a warning).
        QdrantXaiError: no sampled point could be re-encoded (say which sources to allow).
    """
    retry = retry or RetryPolicy()
    resolved = layout_named(layout).resolve(client, collection_name, retry=retry)
    _check_dimensions(client, collection_name, resolved, encoder, retry)
    records, _ = retry.call(
        client.scroll,
        collection_name,
        what=f"reading a sample of collection {collection_name!r}",
        client=client,
        limit=sample,
        with_payload=resolved.payload_keys(),
        with_vectors=resolved.vector_request(),
    )
    policy = sources or ImageSourcePolicy()
    agreement: list[float] = []
    skipped: list[tuple[str, str]] = []
    for record in records:
        try:
            stored, fresh = _stored_and_fresh(record, resolved, encoder, policy)
        except QdrantXaiError as exc:
            skipped.append((str(record.id), str(exc)))
            continue
        agreement.append(vector_agreement(stored, fresh))
    if not agreement:
        reasons = "; ".join(f"{pid}: {why}" for pid, why in skipped[:3]) or "no points"
        raise QdrantXaiError(
            f"cannot check the vectors of {collection_name!r}: no sampled point could be "
            f"re-encoded ({reasons}). Allow the image folder (image_roots / --image-root) "
            "or check the layout"
        )
    result = VectorCheck(len(agreement), tuple(agreement), tuple(skipped))
    if not result.ok:
        message = (
            f"the vectors of {collection_name!r} do not come from {encoder.model_id}: "
            f"re-encoding {result.checked} points gives cosine {min(agreement):.3f} at worst "
            f"(needs {MIN_AGREEMENT}); pass the model the collection was built with"
        )
        if on_mismatch == "error":
            raise ModelMismatchError(message)
        warnings.warn(message, stacklevel=2)
    return result


def _check_dimensions(
    client: QdrantClient,
    collection_name: str,
    layout: CollectionLayout,
    encoder: ClipEncoder,
    retry: RetryPolicy,
) -> None:
    info = require_collection(client, collection_name, retry=retry)
    for name in sorted({layout.image_vector, layout.text_vector}):
        check_query_dimension(info, collection_name, name, dim=encoder.dim, model=encoder.model_id)


def _stored_and_fresh(
    record: models.Record,
    layout: CollectionLayout,
    encoder: ClipEncoder,
    policy: ImageSourcePolicy,
) -> tuple[np.ndarray, np.ndarray]:
    payload = record.payload or {}
    source = layout.image_source(payload)
    kind: Literal["image", "text"] = "image" if source is not None else "text"
    vector = layout.vector_of(record.vector, kind)
    if vector is None:
        raise QdrantXaiError(f"no stored {kind} vector")
    stored = np.asarray(vector, dtype=np.float32)
    if source is not None:
        return stored, encoder.embed_images([policy.open(source)])[0]
    text = layout.text(payload)
    if text is None:
        raise QdrantXaiError("neither an image source nor a text in the payload")
    return stored, encoder.embed_texts([text])[0]


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
        lines += [f"  skipped {pid}: {reason}" for pid, reason in self.failed]
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

    Only the payload changes (``set_payload``): ids, vectors and the other payload keys are
    left alone. Image points get the patch contributions (and the ``full`` profile's
    last-layer input), caption points their word contributions; both get the model
    fingerprint, so the explainer then uses the stored vectors and features directly.

    Args:
        client: any ``QdrantClient``.
        encoder: the CLIP model the collection's vectors were made with.
        collection_name: the existing collection.
        layout: where its image sources, texts and vectors are (a preset name or layout).
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
    """

    def __init__(
        self,
        client: QdrantClient,
        encoder: ClipEncoder,
        *,
        collection_name: str,
        layout: str | CollectionLayout = "qdrant-xai",
        sources: ImageSourcePolicy | None = None,
        codec: Codec = "fp16",
        profile: Profile = "standard",
        batch_size: int = 32,
        verify: bool = True,
        retry: RetryPolicy | None = None,
        repair: bool = False,
    ) -> None:
        check_write_options(batch_size=batch_size, profile=profile)
        self.client = client
        self.encoder = encoder
        self.collection_name = collection_name
        self.layout = layout_named(layout)
        self.sources = sources or ImageSourcePolicy()
        self.codec = PayloadFeatureCodec(codec)
        self.profile = profile
        self.batch_size = batch_size
        self.verify = verify
        self.retry = retry or RetryPolicy()
        self.repair = repair

    def run(self, *, progress: bool = True, max_points: int | None = None) -> BackfillSummary:
        """Backfills every point (or the first ``max_points``), page by page."""
        layout = self.layout.resolve(self.client, self.collection_name, retry=self.retry)
        _check_dimensions(self.client, self.collection_name, layout, self.encoder, self.retry)
        summary = BackfillSummary()
        bar = progress_bar(total=self._count(), unit="pt", desc="backfilling", enabled=progress)
        seen = 0
        for page in self._pages(layout):
            if max_points is not None:
                page = page[: max(0, max_points - seen)]
            self._backfill_page(page, layout, summary)
            seen += len(page)
            bar.update(len(page))
            if max_points is not None and seen >= max_points:
                break
        bar.close()
        return summary

    # -- pages --------------------------------------------------------------------------

    def _count(self) -> int:
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
                    tokens = 1 + fp.grid[0] * fp.grid[1]
                    self.codec.decode(
                        payload.get(PayloadKeys.LAST_LAYER),
                        fingerprint=fp.key,
                        shape=(tokens, self.encoder.vision_width),
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

    def _backfill_page(
        self, records: Sequence[models.Record], layout: CollectionLayout, summary: BackfillSummary
    ) -> None:
        images: list[tuple[models.Record, LoadedImage]] = []
        texts: list[tuple[models.Record, str]] = []
        for record in records:
            payload = record.payload or {}
            source = layout.image_source(payload)
            text = layout.text(payload) if source is None else None
            current = is_current(
                payload, self.encoder.fingerprint.key, self.profile, image=source is not None
            )
            if current:
                if not self.repair or self._intact(payload, source is not None, text):
                    summary.unchanged += 1
                    continue
                summary.damaged.append(str(record.id))
            if source is not None:
                try:
                    images.append((record, self.sources.open(source)))
                except (ImageLoadError, QdrantXaiError) as exc:
                    summary.failed.append((str(record.id), str(exc)))
                continue
            if text is None:
                summary.failed.append(
                    (str(record.id), f"no image source or text at {layout.name!r} layout keys")
                )
                continue
            texts.append((record, text))
        operations = [
            *self._image_operations(images, layout, summary),
            *self._text_operations(texts, layout, summary),
        ]
        if operations:
            self.retry.call(
                self.client.batch_update_points,
                self.collection_name,
                operations,
                what=f"writing the features of {len(operations)} points to "
                f"{self.collection_name!r}",
                client=self.client,
                wait=True,
            )
            summary.updated += len(operations)

    def _verified(
        self,
        record: models.Record,
        layout: CollectionLayout,
        kind: Literal["image", "text"],
        fresh: np.ndarray,
        summary: BackfillSummary,
    ) -> bool:
        if not self.verify:
            return True
        vector = layout.vector_of(record.vector, kind)
        if vector is None:
            summary.failed.append((str(record.id), f"no stored {kind} vector to verify"))
            return False
        try:
            check_agreement(
                vector, fresh, what=f"its stored {kind} vector", model=self.encoder.model_id
            )
        except ModelMismatchError as exc:
            summary.failed.append((str(record.id), f"{exc}; not backfilled"))
            return False
        return True

    def _image_operations(
        self,
        items: list[tuple[models.Record, LoadedImage]],
        layout: CollectionLayout,
        summary: BackfillSummary,
    ) -> list[models.SetPayloadOperation]:
        if not items:
            return []
        features = self.encoder.encode_images(
            [image for _, image in items], last_layer=self.profile == "full"
        )
        operations = []
        for (record, image), feats in zip(items, features, strict=True):
            if not self._verified(record, layout, "image", feats.embedding, summary):
                continue
            payload = image_features_payload(
                self.encoder, self.codec, image, feats, profile=self.profile
            )
            operations.append(_set_payload(record.id, payload))
        return operations

    def _text_operations(
        self,
        items: list[tuple[models.Record, str]],
        layout: CollectionLayout,
        summary: BackfillSummary,
    ) -> list[models.SetPayloadOperation]:
        if not items:
            return []
        features = self.encoder.encode_texts([text for _, text in items])
        operations = []
        for (record, _), feats in zip(items, features, strict=True):
            if not self._verified(record, layout, "text", feats.embedding, summary):
                continue
            payload = text_features_payload(self.encoder, self.codec, feats)
            operations.append(_set_payload(record.id, payload))
        return operations


def _set_payload(point_id: Any, payload: dict[str, Any]) -> models.SetPayloadOperation:
    return models.SetPayloadOperation(
        set_payload=models.SetPayload(payload=payload, points=[point_id])
    )
