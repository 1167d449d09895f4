"""The package's exceptions.

Every error qdrant-xai raises on purpose derives from :class:`QdrantXaiError`, and each
message says what went wrong and what to do next::

    QdrantXaiError
    ├── ModelLoadError            a CLIP checkpoint could not be loaded
    │   ├── DeviceUnavailableError  the torch device asked for is not available here
    │   ├── UnsupportedModelError   a checkpoint of a model family qdrant-xai does not explain
    │   └── MissingDependencyError  (also an ImportError) a package it needs; names the extra
    ├── ImageLoadError            an image is unreadable, corrupt, too large or degenerate
    │   └── InlineImageError      a base64 / data-URI image that cannot be decoded (says why)
    ├── SourceNotAllowedError     an image source (path, URL) is outside what the user allowed
    ├── CollectionError           a collection is missing or cannot hold qdrant-xai points
    │   ├── SchemaMismatchError   an existing collection's vectors differ from what is needed
    │   │   └── DimensionMismatchError  (also a ModelMismatchError) vectors of another size
    │   └── PointNotFoundError    a point id that is not in the collection
    ├── QdrantUnavailableError    Qdrant did not answer (after retries), or its storage is locked
    │   └── StorageLockedError    an embedded storage folder is in use by another process
    ├── FeatureCodecError         stored features are corrupt, tampered with or unknown
    ├── FeaturesMissingError      a hit has no stored features and none can be recomputed
    ├── ModelMismatchError        features or vectors come from another model
    ├── StaleFeaturesError        stored features describe another version of the source
    ├── InputTooLargeError        one input is over a limit (also a ValueError); names it
    ├── DiskFullError             the disk filled up while writing (also an OSError)
    ├── PointIdError              a value that is not a Qdrant point id (also a ValueError)
    ├── UnknownMethodError        a method name that is not registered (also a ValueError)
    ├── UnsupportedMethodError    a method that does not apply to this model (also a ValueError)
    └── DatasetError              a retrieval dataset is malformed or incomplete

Library errors (Pillow, transformers, qdrant-client) are wrapped with ``raise ... from exc``
so the original traceback stays available.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "CollectionError",
    "DatasetError",
    "DeviceUnavailableError",
    "DimensionMismatchError",
    "DiskFullError",
    "FeatureCodecError",
    "FeaturesMissingError",
    "ImageLoadError",
    "InlineImageError",
    "InlineProblem",
    "InputTooLargeError",
    "MissingDependencyError",
    "ModelLoadError",
    "ModelMismatchError",
    "PointIdError",
    "PointNotFoundError",
    "QdrantUnavailableError",
    "QdrantXaiError",
    "SchemaMismatchError",
    "SourceNotAllowedError",
    "StaleFeaturesError",
    "StorageLockedError",
    "UnknownMethodError",
    "UnsupportedMethodError",
    "UnsupportedModelError",
    "brief_repr",
]


class QdrantXaiError(Exception):
    """Base class of every error raised by qdrant-xai."""


class ModelLoadError(QdrantXaiError):
    """A CLIP checkpoint could not be loaded (unknown id, missing files, not a CLIP model)."""


class DeviceUnavailableError(ModelLoadError):
    """The torch device asked for (``cuda``, ``mps``, ``cuda:3``) is not available with the
    torch installed here; the message names the devices that are."""


class UnsupportedModelError(ModelLoadError):
    """A checkpoint of a model type qdrant-xai does not explain; the message names the
    supported ones (``clip``, ``siglip``)."""


class MissingDependencyError(ModelLoadError, ImportError):
    """A checkpoint needs a package that is not installed (SigLIP's SentencePiece tokenizer:
    ``sentencepiece`` and ``protobuf``); the message names the extra that installs it."""


class ImageLoadError(QdrantXaiError):
    """An image could not be used: unreadable, truncated, a decompression bomb, degenerate.

    Attributes:
        source: the path, URL or label of the image.
        reason: what is wrong with it and what to do, without the source.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


InlineProblem = Literal["data_uri", "media_type", "not_base64", "too_large", "empty"]
"""What is wrong with an image given inline (see :class:`InlineImageError`)."""


class InlineImageError(ImageLoadError):
    """An image given inline, as raw base64 or a ``data:`` URI, that cannot be decoded.

    Attributes:
        problem: what is wrong, for callers that word it their own way: ``"data_uri"``
            a malformed data URI or one that is not base64, ``"media_type"`` a data URI of
            a type other than ``image/*``, ``"not_base64"`` not valid base64,
            ``"too_large"`` over the byte limit (judged from the length, before decoding),
            ``"empty"`` no bytes at all. An inline image that decodes but is not an image
            raises a plain :class:`~qdrant_xai.ImageLoadError`.
    """

    def __init__(self, source: str, reason: str, problem: InlineProblem) -> None:
        super().__init__(source, reason)
        self.problem: InlineProblem = problem


class SourceNotAllowedError(QdrantXaiError):
    """An image source points outside the roots or hosts the user allowed."""


class PointIdError(QdrantXaiError, ValueError):
    """A value that is not a Qdrant point id (an unsigned integer or a UUID)."""


class CollectionError(QdrantXaiError):
    """A collection is missing, or cannot be used as a qdrant-xai collection."""


class SchemaMismatchError(CollectionError):
    """An existing collection's vector configuration differs from the one qdrant-xai needs."""


class FeatureCodecError(QdrantXaiError):
    """Stored features failed validation: wrong length, shape, dtype, version or size."""


class FeaturesMissingError(QdrantXaiError):
    """A hit has no stored features and they cannot be recomputed from its image."""


class ModelMismatchError(QdrantXaiError):
    """Features or vectors were produced by a different model than the one explaining them."""


class StaleFeaturesError(QdrantXaiError):
    """A point's stored vector and features describe another version of its source: the
    image file was overwritten, or the text edited, since it was indexed. Index it again."""


class InputTooLargeError(QdrantXaiError, ValueError):
    """One input is over a limit that bounds the work (and memory) it may cost.

    Attributes:
        setting: the limit's name as a user sets it, e.g. ``"TextLimits.max_chars"``.
        limit: the limit's value.
        size: the input's size in the limit's unit.
    """

    def __init__(self, message: str, *, setting: str, limit: int, size: int) -> None:
        super().__init__(message)
        self.setting = setting
        self.limit = limit
        self.size = size


class DiskFullError(QdrantXaiError, OSError):
    """The disk filled up while writing (Qdrant's storage, a report, a feature sidecar).

    What was written before stays; free space and run the same command again (indexing and
    backfill resume where they stopped).
    """


class DimensionMismatchError(SchemaMismatchError, ModelMismatchError):
    """A vector's dimension is not the model's: the collection was built with another model.

    Both a schema mismatch (the collection's vectors cannot take this model's queries) and a
    model mismatch (its points cannot be explained with this model); catch either.
    """


class PointNotFoundError(CollectionError, KeyError):
    """A point id that is not in the collection.

    Attributes:
        ids: the missing ids, as given.
    """

    def __init__(self, message: str, ids: Sequence[object]) -> None:
        super().__init__(message)
        self.ids = ids

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class QdrantUnavailableError(QdrantXaiError):
    """Qdrant did not answer: a server that stayed down or timed out through every retry.

    The message names the server's URL (never its API key) and what to check.
    """


class StorageLockedError(QdrantUnavailableError):
    """An embedded (``path=``) Qdrant folder is already open in another process.

    Embedded mode allows one client per folder; use a Qdrant server for concurrent access.
    """


class UnknownMethodError(QdrantXaiError, ValueError):
    """A method name that is not registered; the message lists the known ones."""


class UnsupportedMethodError(QdrantXaiError, ValueError):
    """A method that cannot explain this model (``prefix`` needs a causal text tower, which
    SigLIP's is not); the message says why and names the methods that apply."""


class DatasetError(QdrantXaiError):
    """A retrieval dataset is malformed, incomplete, or not where it was looked for.

    Attributes:
        path: the file or folder at fault.
        line: 1-based line of ``path`` at fault, when there is one.
        problem: what is wrong and what to do, without the location.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str, *, line: int | None = None):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


_repr = reprlib.Repr()  # keyword arguments need Python 3.12
_repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict, _repr.maxlevel = 60, 60, 8, 8, 2


def brief_repr(value: object) -> str:
    """``repr`` of a payload value for an error message, cut short: a tampered field can be
    huge (a 100 MB string, a list of a million items, an integer of 10,000 digits)."""
    try:
        return _repr.repr(value)
    except ValueError:  # int too long to print (sys.set_int_max_str_digits)
        return f"<{type(value).__name__} too large to print>"
