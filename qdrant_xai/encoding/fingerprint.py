"""Model fingerprints: which CLIP produced a vector or a feature map.

Every point qdrant-xai writes carries the fingerprint of the model that encoded it, and every
explanation checks it, so features of two models are never mixed into one heatmap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from qdrant_xai.errors import ModelMismatchError, brief_repr

__all__ = ["MIN_AGREEMENT", "ModelFingerprint"]

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

    def to_payload(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model_id": self.model_id,
            "image_size": list(self.image_size),
            "grid": list(self.grid),
            "dim": self.dim,
        }

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
