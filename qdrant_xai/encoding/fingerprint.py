"""Which CLIP produced a vector or a feature map: fingerprints, and the one "same model?" check.

Every point qdrant-xai writes carries the fingerprint of the model that encoded it, and every
explanation checks it, so features of two models are never mixed into one heatmap. Points
that carry no fingerprint (other tools' collections) are checked by what they store:

* :func:`check_dimension`: a vector of another size cannot come from this model;
* :func:`check_agreement`: a stored vector must agree with this model's re-encoding of the
  point (cosine >= :data:`MIN_AGREEMENT`).

The explainer, the searcher, :func:`~qdrant_xai.check_vectors` and the backfill all ask
through these two functions, so they refuse the same points with the same words.

**What the key covers.** :attr:`ModelFingerprint.key` (``"w2-<16 hex>:224x224:7x7:512"``)
hashes every parameter and buffer of both towers and both projections (everything that
produces an embedding or a feature map; ``logit_scale`` is left out: no vector depends on
it), in name order, floating-point tensors rounded to bfloat16, so fp32 and bf16 loads of
one checkpoint share it and a fine-tune of any layer (a merged LoRA) changes it. Keys
written before version 2 (:attr:`ModelFingerprint.legacy_key`, ``"<16 hex>:224x224:..."``)
hashed the two projection matrices only, which a change of the backbone left unchanged.
The model family (``"clip"``, ``"siglip"``; :mod:`.families`) is hashed too for every
family but CLIP (whose keys stay those written before families existed), so two families
never share a key even with equal weight names and values; SigLIP has no legacy key.

**Migration of collections written with the old key.** A point carrying this model's
legacy key is never current for :func:`~qdrant_xai.storage.payloads.is_current` (nor for a
sidecar entry): ``qdrant-xai index`` re-encodes it and ``qdrant-xai backfill`` rewrites its
features (after checking its stored vector against the re-encoding), both with the new key.
When explaining, such a point is neither refused nor trusted: it is treated like a point
that carries no fingerprint, so its stored vector must agree with this model's re-encoding
of its image or text (:func:`check_agreement`), and its features are recomputed, not read
back. An unchanged model thus goes on explaining old collections (image hits need their
image readable, ``--image-root``), a changed backbone is caught by the agreement check, and
a point carrying any other key raises :class:`~qdrant_xai.errors.ModelMismatchError`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from qdrant_xai.errors import DimensionMismatchError, ModelMismatchError, brief_repr

if TYPE_CHECKING:
    import torch

__all__ = [
    "KEY_VERSION",
    "MIN_AGREEMENT",
    "ModelFingerprint",
    "check_agreement",
    "check_dimension",
    "hash_weights",
    "is_versioned_key",
    "vector_agreement",
]

#: re-encoded vectors must agree this well with the stored ones (cosine); fp16/bf16
#: storage and another CPU/GPU kernel stay far above it, another model far below
MIN_AGREEMENT = 0.98

#: prefix of the keys that hash all weights; keys without it are legacy (projections only)
KEY_VERSION = "w2"
#: parameters that no embedding or feature depends on, left out of the hash
_UNUSED = frozenset({"logit_scale", "logit_bias"})


@dataclass(frozen=True)
class ModelFingerprint:
    """Identity of a CLIP checkpoint as far as stored features are concerned.

    Two loads of the same weights (a hub id and a local copy, fp32 and bf16) share a
    fingerprint; ``model_id`` is informative only and not part of the identity. Build it
    with :meth:`of_model`.

    Attributes:
        model_id: the hub id or directory the model was loaded from.
        image_size: (height, width) of the model's input.
        grid: (rows, cols) of the vision tower's patch grid.
        dim: dimension of the joint embedding space.
        weights_hash: 16 hex digits of SHA-256 over every parameter and buffer of both
            towers and both projections (bf16-rounded, in name order; see the module doc).
        legacy_hash: 16 hex digits of SHA-256 over the two projection matrices only (bf16),
            the identity written before key version 2; empty when unknown (and for SigLIP).
        family: the model family, ``"clip"`` or ``"siglip"`` (in ``weights_hash``).
    """

    model_id: str
    image_size: tuple[int, int]
    grid: tuple[int, int]
    dim: int
    weights_hash: str
    legacy_hash: str = ""
    family: str = "clip"

    @classmethod
    def of_model(
        cls,
        model: Any,
        *,
        model_id: str,
        image_size: tuple[int, int],
        grid: tuple[int, int],
        dim: int,
        family: str = "clip",
    ) -> ModelFingerprint:
        """The fingerprint of a ``transformers`` ``CLIPModel`` or ``SiglipModel`` (all
        weights hashed: about 0.5 s for ViT-B/32 on two CPU cores, milliseconds for tiny
        models)."""
        legacy = ""
        if family == "clip":
            legacy = cls.hash_arrays(
                bf16_bytes(model.visual_projection.weight), bf16_bytes(model.text_projection.weight)
            )
        return cls(
            model_id=model_id,
            image_size=image_size,
            grid=grid,
            dim=dim,
            weights_hash=hash_weights(model, family=family),
            legacy_hash=legacy,
            family=family,
        )

    @property
    def key(self) -> str:
        """Compact identity stored with every point, e.g. ``'w2-3f2a…:224x224:7x7:512'``."""
        return f"{KEY_VERSION}-{self.weights_hash}:{self._geometry}"

    @property
    def legacy_key(self) -> str | None:
        """The key this model's points carried before key version 2 (projections only),
        e.g. ``'3f2a…:224x224:7x7:512'``; None when the projection hash is unknown."""
        return f"{self.legacy_hash}:{self._geometry}" if self.legacy_hash else None

    @property
    def _geometry(self) -> str:
        (h, w), (gh, gw) = self.image_size, self.grid
        return f"{h}x{w}:{gh}x{gw}:{self.dim}"

    def is_legacy(self, stored_key: object) -> bool:
        """Whether ``stored_key`` is this model's key of before version 2: it vouches for
        the projections only, so the point is checked like one without a fingerprint."""
        return self.legacy_key is not None and stored_key == self.legacy_key

    def check(self, stored_key: object, *, what: str) -> bool:
        """Whether ``stored_key`` vouches for this model's vectors and features.

        Returns:
            True for this model's key; False for its legacy key (see the module doc: the
            point's stored vector must then be checked against its re-encoding with
            :func:`check_agreement`, and its stored features are not used).

        Raises:
            ModelMismatchError: any other key (another model wrote the point).
        """
        if stored_key == self.key:
            return True
        if self.is_legacy(stored_key):
            return False
        raise ModelMismatchError(
            f"{what} was written by another model (fingerprint {brief_repr(stored_key)}, this "
            f"encoder is {self.key!r}, {self.model_id}); explain with the model that "
            "indexed the collection, or re-index it with this one"
        )

    @staticmethod
    def hash_arrays(*arrays: bytes | memoryview) -> str:
        """16 hex digits of SHA-256 over ``arrays`` in order (the legacy projection hash)."""
        digest = hashlib.sha256()
        for data in arrays:
            digest.update(data)
        return digest.hexdigest()[:16]


def is_versioned_key(stored_key: object) -> bool:
    """Whether a stored key hashes all weights (version 2); False for legacy keys."""
    return isinstance(stored_key, str) and stored_key.startswith(f"{KEY_VERSION}-")


def hash_weights(model: Any, *, family: str = "clip") -> str:
    """16 hex digits identifying every weight of a CLIP or SigLIP model that produces
    embeddings or features, and its ``family`` (hashed for every family but ``"clip"``):
    each parameter and buffer but ``logit_scale``/``logit_bias``, in name order, each hashed
    as its name, dtype class, shape and bf16-rounded bytes (integer buffers as they are);
    the per-tensor SHA-256 digests are hashed in turn. Tensors are converted and hashed in
    a few threads (torch and hashlib release the GIL), a tensor at a time per thread, so
    memory grows by at most a few tensors' bf16 copies."""
    named = {
        name: tensor
        for name, tensor in (*model.named_parameters(), *model.named_buffers())
        if name.rsplit(".", 1)[-1] not in _UNUSED
    }
    names = sorted(named)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(lambda name: _tensor_digest(name, named[name]), names))
    return _combine(digests, family)


def _combine(digests: Iterable[bytes], family: str = "clip") -> str:
    # CLIP keys are hashed as before families existed: its collections stay current
    total = hashlib.sha256(KEY_VERSION.encode() + (b"" if family == "clip" else family.encode()))
    for digest in digests:
        total.update(digest)
    return total.hexdigest()[:16]


def _tensor_digest(name: str, tensor: torch.Tensor) -> bytes:
    floating = tensor.is_floating_point()
    header = f"{name}|{'float' if floating else tensor.dtype}|{tuple(tensor.shape)}|"
    digest = hashlib.sha256(header.encode())
    data = bf16_bytes(tensor) if floating else _raw_bytes(tensor)
    digest.update(data)
    return digest.digest()


def bf16_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor rounded to bfloat16 (round to nearest even, as a bf16 load rounds), as
    bytes: fp32 and bf16 loads of one checkpoint give the same bytes."""
    import torch

    rounded = tensor.detach().to(dtype=torch.bfloat16).to(device="cpu").contiguous()
    return rounded.view(torch.int16).numpy().reshape(-1).view("u1").data


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    array = tensor.detach().to(device="cpu").contiguous().numpy()
    return array.reshape(-1).view("u1").data


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
