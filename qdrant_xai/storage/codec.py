"""Compact feature maps in Qdrant payloads, validated on the way back.

A feature map (``[gh, gw, P]`` patch contributions, ``[n_words, P]`` word contributions) is
stored as a JSON object::

    {"v": 1, "codec": "fp16", "dtype": "float16", "shape": [7, 7, 512],
     "data": "<base64>", "fingerprint": "<model key>"}

``int8`` adds ``"scale"``: base64 of one float32 scale per row (per patch, per word), so
``x ≈ int8 * scale``.

``svd`` (version 3) stores a truncated SVD of the map's rows ``X [n, P] ≈ U_r S_r V_rᵀ``
(Eckart-Young: the best rank-``r`` approximation in Frobenius norm) as two factors ``A ≈ U_r
S_r`` [n, r] and ``B ≈ V_r`` [P, r], so ``X ≈ A Bᵀ``, each column of each factor with one
float32 scale::

    {"v": 3, "codec": "svd", "dtype": "int8+int6", "shape": [7, 7, 512], "rank": 20,
     "data": "<base64>", "scale": "<base64: float32 [2r]: A's column scales, then B's>", ...}

``data`` holds, in this order: ``A[:, 0]`` as int8 (``n`` bytes, values -127 to 127),
``B[:, 0]`` as int8 (``P`` bytes), then the 6-bit codes of ``A[:, 1:]`` (row-major) followed by
those of ``B[:, 1:]`` (row-major): value + 31 in [0, 62], four codes per three bytes (code ``k``
of a group at bits ``6k`` to ``6k + 5`` of a little-endian 24-bit word), the last group padded
with code 31. That is ``n + P + 3 * ceil((n + P) (r - 1) / 4)`` bytes of data and ``8 r``
bytes of scales. The leading component carries most of a map's energy and keeps 8 bits; the
others are smaller, and 6 bits each fit rank 20 under 12 KB per ViT-B/32 point where int8
factors fit rank 14: the truncation, not the quantisation, limited the worst heatmaps. Each point
is self-contained (no per-collection basis), so sidecars and reruns need nothing else. A map
with fewer rows than the rank (a short caption's words) is kept at rank ``min(rank, n, P)``.
The ``full`` profile's last-layer inputs are not low rank and stay int8
(:meth:`PayloadFeatureCodec.dense`).

Older objects stay readable: ``fp16`` and ``int8`` (version 1, still written as version 1)
and ``svd`` version 2 (``"dtype": "int8"``: ``data`` is int8 ``A [n, r]`` then int8 ``B [P,
r]``, row-major; ``scale`` is float32, ``n`` row scales of A then ``r`` column scales of B).

Payloads come back from a database other tools can write to, so
:meth:`PayloadFeatureCodec.decode` checks everything before allocating and raises
:class:`~qdrant_xai.FeatureCodecError`, never a crash or a silently wrong map.

Bytes per image point for ViT-B/32 (7x7x512): fp16 50,176 raw / 66,904 base64; int8
25,284 raw (with scales) / 33,716 base64; svd at rank 20 8,716 raw (561 int8, 7,995 packed
6-bit, 160 of scales) / 11,624 base64 (about 11,800 with its JSON keys, 12,100 with the
point's other keys: under 12 KB). The heatmap fidelity behind that rank and layout was
measured on the small trained models only (``python -m tests.benchmarks.codecs``).
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

__all__ = ["CODEC_VERSION", "DEFAULT_RANK", "Codec", "PayloadFeatureCodec"]

CODEC_VERSION = 3
Codec = Literal["fp16", "int8", "svd"]
#: the dtype of each (codec, version) this library reads
_DTYPE_OF: dict[tuple[str, int], str] = {
    ("fp16", 1): "float16",
    ("int8", 1): "int8",
    ("svd", 2): "int8",
    ("svd", 3): "int8+int6",
}
#: the version each codec writes (fp16 and int8 stay version 1, readable by older releases)
_VERSION_OF: dict[str, int] = {"fp16": 1, "int8": 1, "svd": 3}
#: rank of the ``svd`` codec: 20 keeps a ViT-B/32 image point under 12 KB
DEFAULT_RANK = 20
_MAX_RANK = 4096
#: the ``svd`` codec's 6-bit values are in [-_LEVELS6, _LEVELS6], stored as value + _LEVELS6
_LEVELS6 = 31

_brief = brief_repr


@dataclass(frozen=True)
class PayloadFeatureCodec:
    """Encodes float feature maps into payload objects and validates them back.

    Args:
        codec: ``"fp16"`` (half precision, exact to ~3 digits), ``"int8"`` (half the
            size again, one scale per row) or ``"svd"`` (rank-``rank`` factors, the first
            component in int8 and the others in 6 bits, about a third of int8 for ViT-B/32
            patch maps; lossy beyond quantisation).
        max_bytes: refuse maps whose decoded size exceeds this, before allocating.
        rank: the ``svd`` codec's rank (ignored by the others); decoding reads the rank
            each payload records, whatever this is.
    """

    codec: Codec = "fp16"
    max_bytes: int = 16 * 1024 * 1024
    rank: int = DEFAULT_RANK

    def __post_init__(self) -> None:
        if self.codec not in _VERSION_OF:
            raise ValueError(f"codec must be 'fp16', 'int8' or 'svd', got {self.codec!r}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int):
            raise ValueError(f"rank must be an integer, got {self.rank!r}")
        if not 1 <= self.rank <= _MAX_RANK:
            raise ValueError(f"rank must be between 1 and {_MAX_RANK}, got {self.rank}")

    def encode(self, features: np.ndarray, *, fingerprint: str) -> dict[str, Any]:
        """Payload object for ``features`` ([..., P] float array, at least 1-D)."""
        array = np.asarray(features, dtype=np.float32)
        if array.ndim == 0 or array.size == 0:
            raise ValueError(f"cannot encode an empty feature map of shape {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError("feature map contains NaN or infinite values")
        version = _VERSION_OF[self.codec]
        payload: dict[str, Any] = {
            "v": version,
            "codec": self.codec,
            "dtype": _DTYPE_OF[self.codec, version],
            "shape": list(array.shape),
            "fingerprint": fingerprint,
        }
        if self.codec == "fp16":
            data = np.clip(array, -65000.0, 65000.0).astype("<f2").tobytes()
        elif self.codec == "svd":
            rank, data, scale = _svd_factors(array.reshape(-1, array.shape[-1]), self.rank)
            payload["rank"] = rank
            payload["scale"] = _b64(scale)
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
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not 1 <= version <= CODEC_VERSION
        ):
            raise FeatureCodecError(
                f"{what}: unknown codec version {_brief(version)} (this library reads versions "
                f"1 to {CODEC_VERSION}); upgrade qdrant-xai or re-index the collection"
            )
        codec = payload.get("codec")
        if not isinstance(codec, str) or codec not in _VERSION_OF:  # a list: unhashable
            raise FeatureCodecError(
                f"{what}: unknown codec/dtype {_brief(codec)}/{_brief(payload.get('dtype'))}"
            )
        if (codec, version) not in _DTYPE_OF:
            known = [v for c, v in _DTYPE_OF if c == codec]
            raise FeatureCodecError(
                f"{what}: unknown codec version {version} for codec {codec!r} (this library "
                f"reads it at version{'s' if len(known) > 1 else ''} "
                f"{' and '.join(map(str, known))}); upgrade qdrant-xai or re-index the collection"
            )
        if payload.get("dtype") != _DTYPE_OF[codec, version]:
            raise FeatureCodecError(
                f"{what}: unknown codec/dtype {codec!r}/{_brief(payload.get('dtype'))} at "
                f"version {version}"
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
        if codec == "svd":
            array = _decode_svd(payload, dims, what, version)
        elif codec == "fp16":
            data = _unb64(payload.get("data"), count * itemsize, what, "data")
            array = np.frombuffer(data, dtype="<f2").astype(np.float32)
        else:
            data = _unb64(payload.get("data"), count * itemsize, what, "data")
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

    def dense(self) -> PayloadFeatureCodec:
        """The codec for maps that are far from low rank (the ``full`` profile's last-layer
        inputs, raw patch tokens): ``int8`` in place of ``svd`` (gradient heatmaps drawn from
        the rank-20 ``svd`` of the bundled model's last-layer inputs reach r = 0.995 on
        average but 0.956 at worst; int8 0.9997: ``BENCHMARKS.md``, *Compact features*),
        else this one."""
        return PayloadFeatureCodec("int8", self.max_bytes) if self.codec == "svd" else self

    def encoded_size(self, shape: tuple[int, ...]) -> int:
        """Characters of base64 (data plus scales) for a map of ``shape``."""
        count = math.prod(shape)
        if self.codec == "svd":
            rows, width = count // shape[-1], shape[-1]
            rank = min(self.rank, rows, width)
            data, scale = _svd_bytes(rows, width, rank)
            return 4 * math.ceil(data / 3) + 4 * math.ceil(scale / 3)
        raw = count * 2 if self.codec == "fp16" else count
        size = 4 * math.ceil(raw / 3)
        if self.codec == "int8":
            size += 4 * math.ceil(count // shape[-1] * 4 / 3)
        return size


def _svd_bytes(rows: int, width: int, rank: int, version: int = 3) -> tuple[int, int]:
    """``(data, scale)`` bytes of an ``svd`` payload of rank ``rank`` (version 2: int8
    factors, ``rows + rank`` scales; version 3: see the module docstring)."""
    if version == 2:
        return rank * (rows + width), 4 * (rows + rank)
    return rows + width + 3 * math.ceil((rows + width) * (rank - 1) / 4), 8 * rank


def top_factors(rows: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(A [n, r], B [P, r])``, float64, with ``A Bᵀ`` the best rank-``r`` approximation of
    ``rows`` [n, P] (``A = U_r S_r``, ``B = V_r``; ``r = min(rank, n, P)``).

    The top ``r`` singular triplets come from the eigenvectors of the smaller Gram matrix
    (``X Xᵀ`` or ``XᵀX``, in float64): a symmetric eigenproblem of at most ``min(n, P)``
    squared, about a millisecond for ViT-B/32, where a full LAPACK SVD can take hundreds of
    milliseconds under a multithreaded BLAS on a busy machine.
    """
    x = rows.astype(np.float64)
    n, width = x.shape
    r = min(rank, n, width)
    if n <= width:
        values, vectors = np.linalg.eigh(x @ x.T)  # ascending
        u = vectors[:, ::-1][:, :r]
        s = np.sqrt(np.maximum(values[::-1][:r], 0.0))
        a = u * s  # [n, r]
        kept = s > 1e-6 * max(float(s[0]), np.finfo(np.float64).tiny)
        b = np.zeros((width, r))
        b[:, kept] = (x.T @ u[:, kept]) / s[kept]  # unit columns: V_r
    else:
        values, vectors = np.linalg.eigh(x.T @ x)
        b = vectors[:, ::-1][:, :r]  # [P, r]
        a = x @ b  # U_r S_r
    return a, b


def _svd_factors(rows: np.ndarray, rank: int) -> tuple[int, bytes, bytes]:
    """``(r, data, scale)`` of the ``svd`` codec (version 3) for ``rows`` [n, P]: see the
    module docstring for the layout."""
    a, b = top_factors(rows, rank)
    r = a.shape[1]
    levels = np.full(r, _LEVELS6, dtype=np.float64)
    levels[0] = 127
    codes, scales = [], []
    for factor in (a, b):
        scale = (np.abs(factor).max(axis=0) / levels).astype(np.float32)
        scale[~(scale > 0)] = 1.0  # a null component (or one that is 0 in float32)
        codes.append(np.clip(np.rint(factor / scale), -levels, levels).astype(np.int8))
        scales.append(scale)
    qa, qb = codes
    rest = np.concatenate([qa[:, 1:].ravel(), qb[:, 1:].ravel()])
    data = qa[:, 0].tobytes() + qb[:, 0].tobytes() + _pack6(rest)
    return r, data, np.concatenate(scales).astype("<f4").tobytes()


def _pack6(values: np.ndarray) -> bytes:
    """Values in [-31, 31] as 6-bit codes (value + 31), four per three bytes."""
    codes = (values.astype(np.int32) + _LEVELS6).astype(np.uint32)
    codes = np.concatenate([codes, np.full(-codes.size % 4, _LEVELS6, np.uint32)])
    groups = codes.reshape(-1, 4)
    word = groups[:, 0] | groups[:, 1] << 6 | groups[:, 2] << 12 | groups[:, 3] << 18
    return np.stack([word & 255, word >> 8 & 255, word >> 16], axis=1).astype(np.uint8).tobytes()


def _unpack6(data: bytes, count: int, what: str) -> np.ndarray:
    """The ``count`` values ([count] int8) of :func:`_pack6`'s ``data``, codes checked."""
    triples = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.uint32)
    word = triples[:, 0] | triples[:, 1] << 8 | triples[:, 2] << 16
    codes = np.stack([word >> shift & 63 for shift in (0, 6, 12, 18)], axis=1).reshape(-1)
    if (codes == 63).any():  # the encoder writes codes 0 to 62
        raise FeatureCodecError(f"{what}: 6-bit code 63 out of range (tampered payload)")
    if (codes[count:] != _LEVELS6).any():
        raise FeatureCodecError(f"{what}: 6-bit padding is not code 31 (tampered payload)")
    return (codes[:count].astype(np.int16) - _LEVELS6).astype(np.int8)


def _decode_svd(
    payload: Mapping[str, Any], dims: tuple[int, ...], what: str, version: int
) -> np.ndarray:
    """The ``[n * P]`` float32 map of a validated-so-far ``svd`` payload (version 2 or 3)."""
    width = dims[-1]
    rows = math.prod(dims) // width
    rank = payload.get("rank")
    if (
        not isinstance(rank, int)
        or isinstance(rank, bool)
        or not 1 <= rank <= min(rows, width, _MAX_RANK)
    ):
        raise FeatureCodecError(
            f"{what}: svd rank {_brief(rank)} is not an integer between 1 and "
            f"{min(rows, width, _MAX_RANK)} for shape {list(dims)} (tampered payload)"
        )
    data_bytes, scale_bytes = _svd_bytes(rows, width, rank, version)
    data = _unb64(payload.get("data"), data_bytes, what, "data")
    scale = np.frombuffer(_unb64(payload.get("scale"), scale_bytes, what, "scale"), "<f4")
    if not (np.isfinite(scale) & (scale > 0)).all():
        raise FeatureCodecError(f"{what}: non-finite svd scales, or scales <= 0 (tampered payload)")
    # the int8 values: all of version 2's data, version 3's leading component
    lead = np.frombuffer(data, np.int8, count=data_bytes if version == 2 else rows + width)
    if (lead == -128).any():  # the encoder clips to [-127, 127]
        raise FeatureCodecError(f"{what}: int8 value -128 out of range (tampered payload)")
    if version == 2:  # A [n, r] one scale per row, B [P, r] one per column
        a = lead[: rows * rank].reshape(rows, rank).astype(np.float32)
        b = lead[rows * rank :].reshape(width, rank).astype(np.float32)
        a_scale, b_scale = scale[:rows, None], scale[None, rows:]
    else:  # component 0 in int8, the others in 6 bits; one scale per column of each
        rest = _unpack6(data[rows + width :], (rows + width) * (rank - 1), what)
        a = np.empty((rows, rank), np.float32)
        b = np.empty((width, rank), np.float32)
        a[:, 0], b[:, 0] = lead[:rows], lead[rows:]
        a[:, 1:] = rest[: rows * (rank - 1)].reshape(rows, rank - 1)
        b[:, 1:] = rest[rows * (rank - 1) :].reshape(width, rank - 1)
        a_scale, b_scale = scale[None, :rank], scale[None, rank:]
    with np.errstate(over="ignore", invalid="ignore"):  # huge tampered scales: refused after
        return ((a * a_scale) @ (b * b_scale).T).reshape(-1)


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
