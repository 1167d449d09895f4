"""Whether a collection's stored vectors come from a given CLIP: re-encode a sample and
compare (:func:`check_vectors`), so a heatmap is never drawn with a model the collection
was not built with. The backfill and ``qdrant-xai inspect`` ask the same question.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.encoding.fingerprint import MIN_AGREEMENT, vector_agreement
from qdrant_xai.errors import ModelMismatchError, QdrantXaiError
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.detect import resolve_layout
from qdrant_xai.storage.layouts import AUTO, CollectionLayout, LayoutSpec
from qdrant_xai.storage.schema import check_query_dimension, require_collection

__all__ = ["VectorCheck", "check_dimensions", "check_vectors"]


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
    layout: LayoutSpec = AUTO,
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
    resolved = resolve_layout(client, collection_name, layout, retry=retry)
    check_dimensions(client, collection_name, resolved, encoder, retry)
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


def check_dimensions(
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
    source = layout.image_source(payload, sources=policy)
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
