"""The candidate codecs of :mod:`tests.benchmarks.codecs` (issue 17): each encodes a map into
a payload object and decodes it back.

The candidates:

* ``fp16``, ``int8``: the codecs of :class:`~qdrant_xai.PayloadFeatureCodec` before issue 17;
* ``int4``: one float32 scale per row, two values per byte (a prototype here);
* ``svd-r``: the ``svd`` codec of :class:`~qdrant_xai.PayloadFeatureCodec` (version 3) at
  rank ``r``: per point truncated SVD, one scale per factor column, component 0 in int8 and
  the others in 6 bits;
* ``svd-v2-14``: the ``svd`` codec as version 2 wrote it (rank 14, both factors int8, one
  scale per row of A and per column of B), encoded here, decoded by the library;
* ``svd4-r``: the same factors in int4 (a prototype here);
* ``pca-f``: a per-collection basis (the top ``f * P`` right singular vectors of rows of
  other scenes' maps, fit once per model, stored once in fp16), each point keeping its
  coefficients in int8 with per-row scales and a key naming the basis (a prototype here).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdrant_xai.storage.codec import PayloadFeatureCodec, top_factors

__all__ = ["B32_KEY", "CANDIDATES", "Candidate", "fit_basis"]

#: a key as long as a real ViT-B/32 fingerprint (``w2-<16 hex>:224x224:7x7:512``)
B32_KEY = "w2-0123456789abcdef:224x224:7x7:512"


@dataclass(frozen=True)
class Candidate:
    """A codec under test: ``encode(map [..., P], basis) -> payload object``, ``decode``
    back; ``basis_rank(P)`` is the per-collection basis size (0: none)."""

    name: str
    rank: Callable[[int, int], int]  # (rows, P) -> rank kept (0: not a low-rank codec)
    encode: Callable[[np.ndarray, np.ndarray | None], dict[str, Any]]
    decode: Callable[[dict[str, Any], np.ndarray | None], np.ndarray]
    basis_rank: Callable[[int], int] = lambda width: 0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _library(codec: PayloadFeatureCodec) -> Candidate:
    def rank(rows: int, width: int) -> int:
        return min(codec.rank, rows, width) if codec.codec == "svd" else 0

    name = f"svd-{codec.rank}" if codec.codec == "svd" else codec.codec
    return Candidate(
        name,
        rank,
        lambda x, _basis: codec.encode(x, fingerprint=B32_KEY),
        lambda p, _basis: codec.decode(p),
    )


def _svd_v2(rank: int) -> Candidate:
    """The version 2 ``svd`` payload (what the library wrote before version 3)."""
    reader = PayloadFeatureCodec()

    def encode(x: np.ndarray, _basis: np.ndarray | None) -> dict[str, Any]:
        a, b = top_factors(x.reshape(-1, x.shape[-1]), rank)
        qa, a_scale = _quantise(a, 127, axis=1)
        qb, b_scale = _quantise(b, 127, axis=0)
        return {
            "v": 2,
            "codec": "svd",
            "dtype": "int8",
            "shape": list(x.shape),
            "rank": a.shape[1],
            "data": _b64(qa.tobytes() + qb.tobytes()),
            "scale": _b64(np.concatenate([a_scale.ravel(), b_scale.ravel()]).tobytes()),
            "fingerprint": B32_KEY,
        }

    return Candidate(
        f"svd-v2-{rank}",
        lambda rows, width: min(rank, rows, width),
        encode,
        lambda p, _basis: reader.decode(p),
    )


def _quantise(x: np.ndarray, levels: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantisation to ``[-levels, levels]`` with one float32 scale per slice."""
    scale = (np.abs(x).max(axis=axis, keepdims=True) / levels).astype(np.float32)
    scale[~(scale > 0)] = 1.0
    return np.clip(np.rint(x / scale), -levels, levels).astype(np.int8), scale


def _pack4(values: np.ndarray) -> bytes:
    flat = (values.reshape(-1) + 8).astype(np.uint8)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(8))
    return (flat[0::2] | (flat[1::2] << 4)).tobytes()


def _unpack4(data: bytes, count: int) -> np.ndarray:
    packed = np.frombuffer(data, np.uint8)
    flat = np.empty(packed.size * 2, np.int8)
    flat[0::2] = (packed & 15).astype(np.int8) - 8
    flat[1::2] = (packed >> 4).astype(np.int8) - 8
    return flat[:count].astype(np.float32)


def _head(x: np.ndarray, codec: str) -> dict[str, Any]:
    return {"v": 2, "codec": codec, "dtype": "int4", "shape": list(x.shape)}


def _int4() -> Candidate:
    def encode(x: np.ndarray, _basis: np.ndarray | None) -> dict[str, Any]:
        rows = x.reshape(-1, x.shape[-1])
        values, scale = _quantise(rows, 7, axis=1)
        return {
            **_head(x, "int4"),
            "data": _b64(_pack4(values)),
            "scale": _b64(scale.astype("<f4").tobytes()),
            "fingerprint": B32_KEY,
        }

    def decode(p: dict[str, Any], _basis: np.ndarray | None) -> np.ndarray:
        shape = tuple(p["shape"])
        width = shape[-1]
        values = _unpack4(_unb64(p["data"]), math.prod(shape)).reshape(-1, width)
        scale = np.frombuffer(_unb64(p["scale"]), "<f4")
        return (values * scale[:, None]).reshape(shape)

    return Candidate("int4", lambda rows, width: 0, encode, decode)


def _svd4(rank: int) -> Candidate:
    def encode(x: np.ndarray, _basis: np.ndarray | None) -> dict[str, Any]:
        rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
        u, s, vt = np.linalg.svd(rows, full_matrices=False)
        r = min(rank, s.size)
        a, a_scale = _quantise(u[:, :r] * s[:r], 7, axis=1)
        b, b_scale = _quantise(vt[:r].T, 7, axis=0)
        scales = np.concatenate([a_scale.ravel(), b_scale.ravel()]).astype("<f4")
        return {
            **_head(x, "svd4"),
            "rank": r,
            "data": _b64(_pack4(np.concatenate([a.ravel(), b.ravel()]))),
            "scale": _b64(scales.tobytes()),
            "fingerprint": B32_KEY,
        }

    def decode(p: dict[str, Any], _basis: np.ndarray | None) -> np.ndarray:
        shape, r = tuple(p["shape"]), p["rank"]
        width = shape[-1]
        rows = math.prod(shape) // width
        values = _unpack4(_unb64(p["data"]), r * (rows + width))
        scale = np.frombuffer(_unb64(p["scale"]), "<f4")
        a = values[: rows * r].reshape(rows, r) * scale[:rows, None]
        b = values[rows * r :].reshape(width, r) * scale[None, rows:]
        return (a @ b.T).reshape(shape)

    return Candidate(f"svd4-{rank}", lambda rows, width: min(rank, rows, width), encode, decode)


def _pca(fraction: float) -> Candidate:
    def encode(x: np.ndarray, basis: np.ndarray | None) -> dict[str, Any]:
        assert basis is not None
        coefficients = x.reshape(-1, x.shape[-1]) @ basis  # [n, k]
        values, scale = _quantise(coefficients, 127, axis=1)
        return {
            "v": 2,
            "codec": "pca",
            "dtype": "int8",
            "shape": list(x.shape),
            "basis": "0123456789abcdef",  # the basis point's id, stored once per collection
            "data": _b64(values.tobytes()),
            "scale": _b64(scale.astype("<f4").tobytes()),
            "fingerprint": B32_KEY,
        }

    def decode(p: dict[str, Any], basis: np.ndarray | None) -> np.ndarray:
        assert basis is not None
        shape = tuple(p["shape"])
        k = basis.shape[1]
        values = np.frombuffer(_unb64(p["data"]), np.int8).reshape(-1, k).astype(np.float32)
        scale = np.frombuffer(_unb64(p["scale"]), "<f4")
        return ((values * scale[:, None]) @ basis.T).reshape(shape)

    def size(width: int) -> int:
        return max(1, round(fraction * width))

    return Candidate(f"pca-{fraction:g}P", lambda rows, width: 0, encode, decode, size)


CANDIDATES: tuple[Candidate, ...] = (
    _library(PayloadFeatureCodec("fp16")),
    _library(PayloadFeatureCodec("int8")),
    _int4(),
    _svd_v2(14),
    *(_library(PayloadFeatureCodec("svd", rank=r)) for r in (14, 16, 20)),
    *(_svd4(r) for r in (16, 24)),
    _pca(1 / 8),
    _pca(1 / 4),
)


def fit_basis(rows: np.ndarray, k: int) -> np.ndarray:
    """[P, k] float32 (fp16-rounded, as it would be stored) top right singular vectors."""
    _, _, vt = np.linalg.svd(rows.astype(np.float64), full_matrices=False)
    return vt[:k].T.astype(np.float16).astype(np.float32)
