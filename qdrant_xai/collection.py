"""The layout of a qdrant-xai collection: named vectors, payload keys, point ids.

A collection holds two kinds of points:

* image points: vector ``image``; payload ``source``, ``width``, ``height``, ``crop_box``,
  ``caption_ids`` and the patch contributions under ``xai_features`` (optionally the raw
  projected patch tokens under ``xai_patch_tokens``, and with the ``full`` feature profile
  the input of the last vision layer under ``xai_last_layer``; ``xai_profile`` names the
  profile);
* text points: vector ``text``; payload ``text``, ``words`` (``[word, start, end]``),
  ``image_id`` (the image it captions, if any) and word contributions under
  ``xai_features``.

Both carry ``xai_kind``, ``xai_fingerprint`` (the model key) and ``xai_model`` (the id
or folder the model was loaded from, a hint for tools). Point ids are UUID5 of the
source (and caption), so indexing the same data twice writes the same points.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from qdrant_xai._exceptions import CollectionError, PointIdError, SchemaMismatchError

__all__ = [
    "IMAGE_VECTOR",
    "TEXT_VECTOR",
    "PayloadKeys",
    "ensure_collection",
    "image_point_id",
    "parse_point_id",
    "recorded_model",
    "require_collection",
    "text_point_id",
]

IMAGE_VECTOR = "image"
TEXT_VECTOR = "text"
_NAMESPACE = uuid.UUID("6b1f5c2e-9a7d-5e43-8d1c-0c5a3f4e2b71")


class PayloadKeys:
    """Payload keys qdrant-xai reads and writes."""

    KIND = "xai_kind"
    FINGERPRINT = "xai_fingerprint"
    FEATURES = "xai_features"
    PATCH_TOKENS = "xai_patch_tokens"
    LAST_LAYER = "xai_last_layer"
    MODEL = "xai_model"
    PROFILE = "xai_profile"
    SOURCE = "source"
    WIDTH = "width"
    HEIGHT = "height"
    CROP_BOX = "crop_box"
    CAPTION_IDS = "caption_ids"
    TEXT = "text"
    WORDS = "words"
    IMAGE_ID = "image_id"

    #: keys too large to return with search results; fetched only for explained hits
    HEAVY = (FEATURES, PATCH_TOKENS, LAST_LAYER)


def image_point_id(source: str) -> str:
    """Deterministic id of the image point for ``source``."""
    return str(uuid.uuid5(_NAMESPACE, f"image\n{source}"))


def text_point_id(text: str, image_source: str | None = None) -> str:
    """Deterministic id of a text point (a caption is keyed by its image too)."""
    return str(uuid.uuid5(_NAMESPACE, f"text\n{image_source or ''}\n{text}"))


def parse_point_id(value: str | int) -> int | str:
    """A Qdrant point id from user input: an unsigned integer, or a UUID (normalised).

    Raises:
        PointIdError: anything else (also a ``ValueError``).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise PointIdError(f"point id {value} is negative; Qdrant ids are unsigned")
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise PointIdError(
            f"{value!r} is not a Qdrant point id (an unsigned integer or a UUID); use the id "
            "of a search result"
        ) from None


def require_collection(client: QdrantClient, collection_name: str) -> models.CollectionInfo:
    """The collection's info, or a :class:`CollectionError` that says how to create it."""
    try:
        if not client.collection_exists(collection_name):
            raise CollectionError(
                f"collection {collection_name!r} does not exist; index images into it first "
                "(qdrant-xai index DIR --collection NAME) or pass the right --collection"
            )
        return client.get_collection(collection_name)
    except UnexpectedResponse as exc:
        raise CollectionError(f"cannot read collection {collection_name!r}: {exc}") from exc


def ensure_collection(client: QdrantClient, collection_name: str, *, dim: int) -> None:
    """Creates the collection when missing; checks its vectors when it exists.

    Raises:
        SchemaMismatchError: the existing collection lacks a named vector, or has another
            size or distance; the message lists every difference.
    """
    if not client.collection_exists(collection_name):
        client.create_collection(
            collection_name,
            vectors_config={
                name: models.VectorParams(size=dim, distance=models.Distance.COSINE)
                for name in (IMAGE_VECTOR, TEXT_VECTOR)
            },
        )
        return
    check_schema(client.get_collection(collection_name), collection_name, dim=dim)


def check_schema(info: models.CollectionInfo, collection_name: str, *, dim: int) -> None:
    """Raise :class:`SchemaMismatchError` listing how ``info`` differs from what is needed."""
    vectors: Any = info.config.params.vectors
    problems = []
    if not isinstance(vectors, dict):
        problems.append(
            "it has one unnamed vector; qdrant-xai needs named vectors 'image' and 'text'"
        )
    else:
        for name in (IMAGE_VECTOR, TEXT_VECTOR):
            params = vectors.get(name)
            if params is None:
                problems.append(f"vector {name!r} is missing")
                continue
            if params.size != dim:
                problems.append(
                    f"vector {name!r} has dimension {params.size}, the model gives {dim}"
                )
            if params.distance != models.Distance.COSINE:
                problems.append(
                    f"vector {name!r} uses {params.distance.value} distance, not Cosine"
                )
    if problems:
        raise SchemaMismatchError(
            f"collection {collection_name!r} cannot hold this model's points: "
            + "; ".join(problems)
            + ". Use another --collection, or delete this one to recreate it"
        )


def recorded_model(client: QdrantClient, collection_name: str) -> str | None:
    """The model id or folder recorded with the collection's points (``xai_model``), when it
    looks loadable (an existing folder or a hub id); None otherwise."""
    if not client.collection_exists(collection_name):
        return None
    points, _ = client.scroll(collection_name, limit=1, with_payload=[PayloadKeys.MODEL])
    name = (points[0].payload or {}).get(PayloadKeys.MODEL) if points else None
    if isinstance(name, str) and (os.path.isdir(name) or ("/" in name and not os.path.isabs(name))):
        return name
    return None
