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

import uuid
from typing import Any, Literal

from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from qdrant_xai.encoding.checkpoints import DEFAULT_MODEL, is_loadable_name
from qdrant_xai.encoding.fingerprint import check_dimension
from qdrant_xai.errors import CollectionError, PointIdError, SchemaMismatchError, brief_repr
from qdrant_xai.retry import RetryPolicy

__all__ = [
    "IMAGE_VECTOR",
    "PROFILES",
    "TEXT_VECTOR",
    "PayloadKeys",
    "Profile",
    "arequire_collection",
    "check_query_dimension",
    "choose_model",
    "ensure_collection",
    "image_point_id",
    "parse_point_id",
    "recorded_model",
    "require_collection",
    "text_point_id",
    "vector_size",
    "without_features",
]

IMAGE_VECTOR = "image"
TEXT_VECTOR = "text"

#: what an image point stores: ``standard`` (patch contributions) or ``full`` (also the
#: input of the last vision layer, so gradient methods need no image read)
Profile = Literal["standard", "full"]
PROFILES: tuple[Profile, ...] = ("standard", "full")
_MAX_POINT_ID = 2**64 - 1
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
    #: (image points) hash of the image file's bytes when it was indexed
    CONTENT = "xai_content"
    #: (sidecar entries) the source point's stored vector the features belong to (fp16)
    SOURCE_VECTOR = "xai_source_vector"

    #: keys too large to return with search results; fetched only for explained hits
    HEAVY = (FEATURES, PATCH_TOKENS, LAST_LAYER)


def without_features(payload: dict[str, Any] | None) -> dict[str, Any]:
    """A point's payload without the stored feature maps (:attr:`PayloadKeys.HEAVY`), as
    searches return it and as outputs show it."""
    return {k: v for k, v in (payload or {}).items() if k not in PayloadKeys.HEAVY}


def check_write_options(*, batch_size: int, profile: str) -> None:
    """Raise ``ValueError`` for a batch size below 1 or an unknown feature profile (the
    options every writer of points takes)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")


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
        if not 0 <= value <= _MAX_POINT_ID:
            raise PointIdError(
                f"point id {brief_repr(value)} is not an unsigned 64-bit integer (Qdrant ids "
                "are 0 to 2**64 - 1, or UUIDs)"
            )
        return value
    text = str(value).strip()
    if text.isascii() and text.isdigit():  # "²".isdigit() is True, int("²") fails
        return parse_point_id(int(text))
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise PointIdError(
            f"{brief_repr(value)} is not a Qdrant point id (an unsigned integer or a UUID); "
            "use the id of a search result"
        ) from None


def require_collection(
    client: QdrantClient, collection_name: str, *, retry: RetryPolicy | None = None
) -> models.CollectionInfo:
    """The collection's info, or a :class:`CollectionError` that says how to create it.

    Raises:
        QdrantUnavailableError: Qdrant did not answer through ``retry`` (default policy).
    """
    retry = retry or RetryPolicy()
    what = f"reading collection {collection_name!r}"
    try:
        if not retry.call(client.collection_exists, collection_name, what=what, client=client):
            raise _missing(collection_name)
        return retry.call(client.get_collection, collection_name, what=what, client=client)
    except UnexpectedResponse as exc:
        raise CollectionError(f"cannot read collection {collection_name!r}: {exc}") from exc


async def arequire_collection(
    client: AsyncQdrantClient, collection_name: str, *, retry: RetryPolicy | None = None
) -> models.CollectionInfo:
    """Async :func:`require_collection`, for an ``AsyncQdrantClient``."""
    retry = retry or RetryPolicy()
    what = f"reading collection {collection_name!r}"
    try:
        if not await retry.acall(client.collection_exists, collection_name, what=what):
            raise _missing(collection_name)
        return await retry.acall(client.get_collection, collection_name, what=what)
    except UnexpectedResponse as exc:
        raise CollectionError(f"cannot read collection {collection_name!r}: {exc}") from exc


def _missing(collection_name: str) -> CollectionError:
    return CollectionError(
        f"collection {collection_name!r} does not exist; index images into it first "
        "(qdrant-xai index DIR --collection NAME) or pass the right collection name"
    )


def ensure_collection(
    client: QdrantClient, collection_name: str, *, dim: int, retry: RetryPolicy | None = None
) -> None:
    """Creates the collection when missing; checks its vectors when it exists.

    Raises:
        SchemaMismatchError: the existing collection lacks a named vector, or has another
            size or distance; the message lists every difference.
        QdrantUnavailableError: Qdrant did not answer through ``retry`` (default policy).
    """
    retry = retry or RetryPolicy()
    what = f"reading collection {collection_name!r}"
    if not retry.call(client.collection_exists, collection_name, what=what, client=client):
        created = retry.call(
            _create,
            client,
            collection_name,
            dim,
            what=f"creating collection {collection_name!r}",
            client=client,
        )
        if created:
            return
    info = retry.call(client.get_collection, collection_name, what=what, client=client)
    check_schema(info, collection_name, dim=dim)


def _create(client: QdrantClient, collection_name: str, dim: int) -> bool:
    """Creates the collection; False when it exists already.

    Idempotent, so it can be retried: a creation whose answer was lost, or one another
    client won, finds the collection there ("already exists", 409) and the caller checks
    its schema.
    """
    try:
        client.create_collection(
            collection_name,
            vectors_config={
                name: models.VectorParams(size=dim, distance=models.Distance.COSINE)
                for name in (IMAGE_VECTOR, TEXT_VECTOR)
            },
        )
    except UnexpectedResponse as exc:
        if exc.status_code != 409:
            raise
        return False
    except ValueError as exc:  # embedded mode
        if "already exists" not in str(exc):
            raise
        return False
    return True


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


def vector_size(info: models.CollectionInfo, vector_name: str | None) -> int | None:
    """The size of the collection's vector ``vector_name`` (``None`` or ``""``: the unnamed
    one), or None when it has no such vector."""
    vectors: Any = info.config.params.vectors
    params = vectors.get(vector_name or "") if isinstance(vectors, dict) else vectors
    size = getattr(params, "size", None)
    return size if isinstance(size, int) else None


def check_query_dimension(
    info: models.CollectionInfo,
    collection_name: str,
    vector_name: str | None,
    *,
    dim: int,
    model: str,
) -> None:
    """Raise :class:`~qdrant_xai.errors.DimensionMismatchError` when the vector a query
    searches (``None``: the unnamed one) has another dimension than the model's: the
    collection was built with another model, and Qdrant would refuse the query (or embedded
    mode crash on it)."""
    check_dimension(
        vector_size(info, vector_name),
        dim,
        what=f"vector {vector_name or '(unnamed)'!r} of collection {collection_name!r}",
        model=model,
    )


def choose_model(
    model: str | None,
    client: QdrantClient | None = None,
    collection_name: str | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> str:
    """The model to work with: ``model`` when given, else the one recorded in the collection
    (with a client and a collection), else :data:`~qdrant_xai.DEFAULT_MODEL`."""
    if model is None and client is not None and collection_name is not None:
        model = recorded_model(client, collection_name, retry=retry)
    return model if model is not None else DEFAULT_MODEL


def recorded_model(
    client: QdrantClient, collection_name: str, *, retry: RetryPolicy | None = None
) -> str | None:
    """The model id or folder recorded with the collection's points (``xai_model``), when it
    looks loadable (a bundled model's name, an existing folder or a hub id); None otherwise."""
    retry = retry or RetryPolicy()
    what = f"reading the model recorded in collection {collection_name!r}"
    if not retry.call(client.collection_exists, collection_name, what=what, client=client):
        return None
    points, _ = retry.call(
        client.scroll,
        collection_name,
        limit=1,
        with_payload=[PayloadKeys.MODEL],
        what=what,
        client=client,
    )
    name = (points[0].payload or {}).get(PayloadKeys.MODEL) if points else None
    return name if is_loadable_name(name) else None
