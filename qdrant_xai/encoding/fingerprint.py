"""Which CLIP produced a vector or a feature map: fingerprints, and the one "same model?" check.

Every point qdrant-xai writes carries the fingerprint of the model that encoded it, and every
explanation checks it, so features of two models are never mixed into one heatmap. Points
that carry no fingerprint (other tools' collections) are checked by what they store:

* :func:`check_dimension`: a vector of another size cannot come from this model;
* :func:`check_agreement`: a stored vector must agree with this model's re-encoding of the
  point (cosine >= :data:`MIN_AGREEMENT`).

The explainer, the searcher, :func:`~qdrant_xai.check_vectors` and the backfill all ask
through these two functions, so they refuse the same points with the same words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdrant_xai.errors import DimensionMismatchError, ModelMismatchError, brief_repr

__all__ = [
    "MIN_AGREEMENT",
    "ModelFingerprint",
    "check_agreement",
    "check_dimension",
    "vector_agreement",
]

#: re-encoded vectors must agree this well with the stored ones (cosine); fp16/bf16
#: storage and another CPU/GPU kernel stay far above it, another model far below
MIN_AGREEMENT = 0.98


@dataclass(frozen=True)
class ModelFingerprint:
    """Identity of a CLIP checkpoint as far as stored features are concerned.

    Two loads of the same weights (a hub id and a local copy, fp32 and bf16) share a
    fingerprint; ``model_id`` is informative only and not part of the identity.

    Attributes:
        model_id: the hub id or directory the model was loaded from.
        image_size: (height, width) of the model's input.
        grid: (rows, cols) of the vision tower's patch grid.
        dim: dimension of the joint embedding space.
        weights_hash: 16 hex digits of SHA-256 over both projection matrices (bf16).
    """

    model_id: str
    image_size: tuple[int, int]
    grid: tuple[int, int]
    dim: int
    weights_hash: str

    @property
    def key(self) -> str:
        """Compact identity stored with every point, e.g. ``'3f2a…:224x224:7x7:512'``."""
        (h, w), (gh, gw) = self.image_size, self.grid
        return f"{self.weights_hash}:{h}x{w}:{gh}x{gw}:{self.dim}"

    def check(self, stored_key: object, *, what: str) -> None:
        """Raise :class:`ModelMismatchError` unless ``stored_key`` is this model's key."""
        if stored_key != self.key:
            raise ModelMismatchError(
                f"{what} was written by another model (fingerprint {brief_repr(stored_key)}, this "
                f"encoder is {self.key!r}, {self.model_id}); explain with the model that "
                "indexed the collection, or re-index it with this one"
            )

    @staticmethod
    def hash_arrays(*arrays: bytes) -> str:
        digest = hashlib.sha256()
        for data in arrays:
            digest.update(data)
        return digest.hexdigest()[:16]


def check_dimension(size: object, dim: int, *, what: str, model: str) -> None:
    """Raise :class:`~qdrant_xai.errors.DimensionMismatchError` when a vector of ``size``
    cannot come from a model of dimension ``dim`` (``what`` names the vector)."""
    if isinstance(size, int) and size != dim:
        raise DimensionMismatchError(
            f"{what} has dimension {size}, {model} gives {dim}: the collection was built with "
            "another model; use that model (--model), or re-index the collection with this one"
        )


def vector_agreement(stored: Any, fresh: np.ndarray) -> float:
    """Cosine between a stored vector (any norm) and this model's normalised re-encoding."""
    array = np.asarray(stored, dtype=np.float32)
    return float(array @ fresh) / max(float(np.linalg.norm(array)), 1e-12)


def check_agreement(
    stored: Any, fresh: np.ndarray, *, what: str, model: str, reencoded: str | None = None
) -> float:
    """The agreement of ``stored`` with its re-encoding ``fresh``, or
    :class:`~qdrant_xai.errors.ModelMismatchError` when it is below :data:`MIN_AGREEMENT`.

    Args:
        stored: the vector Qdrant holds for the point (any norm).
        fresh: [P] this model's normalised embedding of the point's image or text.
        what: names the point, e.g. ``"point 42: its stored image vector"``.
        model: the model's id, for the message.
        reencoded: what was re-encoded, e.g. ``"its text 'a red car'"`` (untrusted values
            quoted briefly): the message then names both likely causes, another model or
            another input than the writing library embedded.
    """
    agreement = vector_agreement(stored, fresh)
    if agreement < MIN_AGREEMENT:
        if reencoded is None:
            cause = (
                "written by another model; use the model the collection was built with "
                "(check_vectors / qdrant-xai backfill check a sample)"
            )
        else:
            cause = (
                f"either the collection was built with another model (pass that model), or "
                f"the tool that wrote it embedded something else than {reencoded} (pass its "
                "layout: layout= / --layout, or the payload key of the embedded text)"
            )
        raise ModelMismatchError(
            f"{what} does not come from {model} (cosine {agreement:.3f} with the re-encoded "
            f"point, needs {MIN_AGREEMENT}): {cause}"
        )
    return agreement
