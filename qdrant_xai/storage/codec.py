"""Compact feature maps in Qdrant payloads, validated on the way back.

A feature map (``[gh, gw, P]`` patch contributions, ``[n_words, P]`` word contributions) is
stored as a JSON object::

    {"v": 1, "codec": "fp16", "dtype": "float16", "shape": [7, 7, 512],
     "data": "<base64>", "fingerprint": "<model key>"}

``int8`` adds ``"scale"``: base64 of one float32 scale per row (per patch, per word), so
``x ≈ int8 * scale``. Payloads come back from a database other tools can write to, so
:meth:`PayloadFeatureCodec.decode` checks everything before allocating and raises
:class:`~qdrant_xai.FeatureCodecError`, never a crash or a silently wrong map.

Bytes per image point for ViT-B/32 (7x7x512): fp16 50,176 raw / 66,904 base64; int8
25,284 raw (with scales) / 33,716 base64.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from qdrant_xai.encoding.fingerprint import is_versioned_key
from qdrant_xai.errors import FeatureCodecError, ModelMismatchError, brief_repr

__all__ = ["CODEC_VERSION", "Codec", "PayloadFeatureCodec"]

CODEC_VERSION = 1
Codec = Literal["fp16", "int8"]
_DTYPE_OF: dict[str, str] = {"fp16": "float16", "int8": "int8"}

_brief = brief_repr


@dataclass(frozen=True)
class PayloadFeatureCodec:
    """Encodes float feature maps into payload objects and validates them back.

    Args:
        codec: ``"fp16"`` (half precision, exact to ~3 digits) or ``"int8"`` (half the
            size again, one scale per row).
        max_bytes: refuse maps whose decoded size exceeds this, before allocating.
    """

    codec: Codec = "fp16"
    max_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.codec not in _DTYPE_OF:
            raise ValueError(f"codec must be 'fp16' or 'int8', got {self.codec!r}")

    def encode(self, features: np.ndarray, *, fingerprint: str) -> dict[str, Any]:
        """Payload object for ``features`` ([..., P] float array, at least 1-D)."""
        array = np.asarray(features, dtype=np.float32)
        if array.ndim == 0 or array.size == 0:
            raise ValueError(f"cannot encode an empty feature map of shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError("feature map contains NaN or infinite values")
        payload: dict[str, Any] = {
            "v": CODEC_VERSION,
            "codec": self.codec,
            "dtype": _DTYPE_OF[self.codec],
            "shape": list(array.shape),
            "fingerprint": fingerprint,
        }
        if self.codec == "fp16":
            data = np.clip(array, -65000.0, 65000.0).astype("<f2").tobytes()
        else:
            rows = array.reshape(-1, array.shape[-1])
            scale = np.abs(rows).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            quantised = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
            data = quantised.tobytes()
            payload["scale"] = _b64(scale.astype("<f4").tobytes())
        payload["data"] = _b64(data)
        return payload

    def decode(
        self,
        payload: object,
        *,
        fingerprint: str | None = None,
        shape: tuple[int | None, ...] | None = None,
        what: str = "features",
    ) -> np.ndarray:
        """Validated float32 array from a payload object.

        Args:
            payload: the stored object (any codec and version this library wrote).
            fingerprint: expected model key; a different one raises ModelMismatchError,
                also this model's legacy key (maps written before key version 2 are
                never current: index or backfill again).
            shape: expected shape, ``None`` entries match any size.
            what: how to name the object in error messages (e.g. ``"point 42 features"``).

        Raises:
            FeatureCodecError: missing fields, unknown version or codec, bad base64,
                byte length not matching shape and dtype, over the size cap, non-finite.
            ModelMismatchError: written by another model.
        """
        if not isinstance(payload, Mapping):
            raise FeatureCodecError(f"{what}: expected an object, got {type(payload).__name__}")
        version = payload.get("v")
        if version != CODEC_VERSION:
            raise FeatureCodecError(
                f"{what}: unknown codec version {_brief(version)} (this library reads version "
                f"{CODEC_VERSION}); upgrade qdrant-xai or re-index the collection"
            )
        codec = payload.get("codec")
        if (
            not isinstance(codec, str)  # a list or dict here is unhashable: refuse, not crash
            or codec not in _DTYPE_OF
            or payload.get("dtype") != _DTYPE_OF[codec]
        ):
            raise FeatureCodecError(
                f"{what}: unknown codec/dtype {_brief(codec)}/{_brief(payload.get('dtype'))}"
            )
        dims = _shape(payload.get("shape"), what)
        if shape is not None and (
            len(shape) != len(dims)
            or any(e is not None and e != d for e, d in zip(shape, dims, strict=True))
        ):
            raise FeatureCodecError(f"{what}: shape {list(dims)} where {list(shape)} was expected")
        stored_key = payload.get("fingerprint")
        if fingerprint is not None and stored_key != fingerprint:
            if is_versioned_key(fingerprint) and not is_versioned_key(stored_key):
                raise ModelMismatchError(
                    f"{what} were computed under an earlier model fingerprint "
                    f"({_brief(stored_key)}, before key version 2, which hashed the "
                    f"projections only; this model is {fingerprint!r}): they are not used "
                    "as current; run `qdrant-xai index` or `qdrant-xai backfill` again"
                )
            raise ModelMismatchError(
                f"{what} were computed by another model (fingerprint "
                f"{_brief(stored_key)}, expected {fingerprint!r}); explain with "
                "the model that indexed the collection, or re-index or backfill with this one"
            )
        count = math.prod(dims)
        itemsize = 2 if codec == "fp16" else 1
        if count * 4 > self.max_bytes:
            raise FeatureCodecError(
                f"{what}: {count} values exceed the {self.max_bytes}-byte decode limit"
            )
        data = _unb64(payload.get("data"), count * itemsize, what, "data")
        if codec == "fp16":
            array = np.frombuffer(data, dtype="<f2").astype(np.float32)
        else:
            rows = count // dims[-1]
            scale = np.frombuffer(_unb64(payload.get("scale"), rows * 4, what, "scale"), "<f4")
            if not (np.isfinite(scale) & (scale > 0)).all():
                raise FeatureCodecError(
                    f"{what}: non-finite int8 scales, or scales <= 0 (tampered payload)"
                )
            values = np.frombuffer(data, dtype=np.int8).reshape(rows, dims[-1])
            if (values == -128).any():  # the encoder clips to [-127, 127]
                raise FeatureCodecError(f"{what}: int8 value -128 out of range (tampered payload)")
            with np.errstate(over="ignore"):  # huge tampered scales: refused just below
                array = (values.astype(np.float32) * scale[:, None]).reshape(-1)
        if not np.isfinite(array).all():
            raise FeatureCodecError(f"{what}: contains NaN or infinite values")
        return array.reshape(dims)

    def encoded_size(self, shape: tuple[int, ...]) -> int:
        """Characters of base64 (data plus scales) for a map of ``shape``."""
        count = math.prod(shape)
        raw = count * 2 if self.codec == "fp16" else count
        size = 4 * math.ceil(raw / 3)
        if self.codec == "int8":
            size += 4 * math.ceil(count // shape[-1] * 4 / 3)
        return size


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, expected: int, what: str, field: str) -> bytes:
    if not isinstance(text, str):
        raise FeatureCodecError(f"{what}: field {field!r} is missing or not a string")
    # base64 length is known from the shape: refuse before decoding anything larger
    if len(text) != 4 * math.ceil(expected / 3):
        raise FeatureCodecError(
            f"{what}: {field} has {len(text)} base64 characters, {4 * math.ceil(expected / 3)} "
            "expected for its shape and dtype (truncated or tampered payload)"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FeatureCodecError(f"{what}: {field} is not valid base64") from exc
    if len(data) != expected:
        raise FeatureCodecError(
            f"{what}: {field} decodes to {len(data)} bytes, {expected} expected for its shape"
        )
    return data


def _shape(value: object, what: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list | tuple)
        or not 1 <= len(value) <= 4
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20 for d in value
        )
    ):
        raise FeatureCodecError(
            f"{what}: invalid shape {_brief(value)} (1 to 4 positive integer sizes expected)"
        )
    return tuple(value)


# Re-exported for callers that catch both kinds of decode failure.
DecodeErrors = (FeatureCodecError, ModelMismatchError)
