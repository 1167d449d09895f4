"""Features of a collection qdrant-xai did not write, kept beside it: the *sidecar*.

A collection written by LangChain, LlamaIndex, FastEmbed or your own code is never written
to (unless you ask, ``Backfiller(in_place=True)``). The features its hits need live in a
companion collection, by default ``"<collection>__xai"``, under the same point ids::

    {"image": {xai_kind, xai_fingerprint, xai_features, crop_box, ..., xai_source_vector},
     "text":  {xai_kind, xai_fingerprint, words, xai_features, xai_source_vector}}

one entry per kind (a point of Qdrant's tutorial layout holds both). Each entry records
the model fingerprint and a compact copy of the source point's stored vector of that kind
(float16, 1 KB for 512 dimensions): an entry is used only while the fingerprint is this
model's and the point's vector is still that one (cosine at least
:data:`SAME_VECTOR`), so a point re-written in the source collection (another image,
another text, another model) is seen as stale and recomputed, never explained from old
features. (A copy, not a hash: embedded Qdrant may hand back a vector one float32 ulp
apart after a search, which an exact hash would take for a re-written point.) The
sidecar has no vectors (Qdrant keeps payload-only points): it is read by id, never
searched. ``BENCHMARKS.md`` compares this storage with
multivectors.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.payloads import is_current
from qdrant_xai.storage.schema import PayloadKeys, Profile

__all__ = [
    "SAME_VECTOR",
    "SIDECAR_SUFFIX",
    "Sidecar",
    "SidecarEntry",
    "current_entry",
    "same_vector",
    "sidecar_name",
    "vector_stamp",
]

#: the default sidecar of collection ``c`` is ``c + SIDECAR_SUFFIX``
SIDECAR_SUFFIX = "__xai"

Kind = Literal["image", "text"]


def sidecar_name(collection_name: str) -> str:
    """The default sidecar collection of ``collection_name``."""
    return f"{collection_name}{SIDECAR_SUFFIX}"


#: cosine above which a source point's vector is the one an entry was computed for (fp16
#: copies agree to ~1e-6; a different image or text is far below)
SAME_VECTOR = 0.9999


def vector_stamp(vector: Sequence[float] | np.ndarray) -> str:
    """A compact copy of a stored vector (normalised, float16, base64), tying sidecar
    features to the vector the source point had when they were computed."""
    array = np.asarray(vector, dtype=np.float32)
    unit = array / max(float(np.linalg.norm(array)), 1e-12)
    return base64.b64encode(unit.astype("<f2").tobytes()).decode("ascii")


def same_vector(stamp: object, vector: Sequence[float] | np.ndarray) -> bool:
    """Whether ``vector`` is (up to float noise) the one ``stamp`` copied."""
    if not isinstance(stamp, str):
        return False
    try:
        copy = np.frombuffer(base64.b64decode(stamp, validate=True), dtype="<f2")
    except (binascii.Error, ValueError):
        return False
    array = np.asarray(vector, dtype=np.float32)
    if copy.shape != array.shape or not np.isfinite(copy).all():
        return False
    norm = float(np.linalg.norm(array)) * float(np.linalg.norm(copy.astype(np.float32)))
    return norm > 0 and float(copy.astype(np.float32) @ array) / norm >= SAME_VECTOR


@dataclass(frozen=True)
class SidecarEntry:
    """Features of one kind of one source point, to write to the sidecar."""

    point_id: models.ExtendedPointId
    kind: Kind
    payload: dict[str, Any]  # what image_/text_features_payload produced
    vector: Sequence[float] | np.ndarray  # the source point's stored vector of that kind


class Sidecar:
    """The sidecar collection of one source collection.

    Args:
        client: the client of the source collection (the sidecar lives beside it).
        collection_name: the source collection.
        name: the sidecar's name (default :func:`sidecar_name`).
        retry: how Qdrant calls are retried.
    """

    def __init__(
        self,
        client: QdrantClient,
        collection_name: str,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.client = client
        self.source = collection_name
        self.name = name or sidecar_name(collection_name)
        if self.name == collection_name:
            raise ValueError("the sidecar must be another collection than its source")
        self.retry = retry or RetryPolicy()
        self._exists: bool | None = None

    def exists(self) -> bool:
        """Whether the sidecar collection exists (asked once, then remembered)."""
        if self._exists is None:
            self._exists = bool(
                self.retry.call(
                    self.client.collection_exists,
                    self.name,
                    what=f"checking for the sidecar collection {self.name!r}",
                    client=self.client,
                )
            )
        return self._exists

    def read(
        self, ids: Iterable[models.ExtendedPointId], kinds: Iterable[Kind] = ("image", "text")
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """The stored entries of ``ids``: ``{str(point id): {kind: payload}}`` (points or
        kinds without an entry are absent). Nothing is read when the sidecar does not exist.
        """
        ids = list(dict.fromkeys(ids))
        if not ids or not self.exists():
            return {}
        records = self.retry.call(
            self.client.retrieve,
            self.name,
            what=f"reading {len(ids)} entries of the sidecar {self.name!r}",
            client=self.client,
            ids=ids,
            with_payload=list(kinds),
            with_vectors=False,
        )
        return {
            str(r.id): {k: v for k, v in (r.payload or {}).items() if isinstance(v, dict)}
            for r in records
        }

    def write(self, entries: Sequence[SidecarEntry]) -> int:
        """Writes entries (creating the sidecar on first use); an entry replaces the
        point's earlier entry of the same kind and keeps its other kind. Returns the number
        of entries written."""
        if not entries:
            return 0
        self.create()
        existing = {
            str(r.id)
            for r in self.retry.call(
                self.client.retrieve,
                self.name,
                what=f"reading {len(entries)} entries of the sidecar {self.name!r}",
                client=self.client,
                ids=list(dict.fromkeys(e.point_id for e in entries)),
                with_payload=False,
                with_vectors=False,
            )
        }
        by_point: dict[str, tuple[models.ExtendedPointId, dict[str, Any]]] = {}
        for entry in entries:
            payload = {**entry.payload, PayloadKeys.SOURCE_VECTOR: vector_stamp(entry.vector)}
            by_point.setdefault(str(entry.point_id), (entry.point_id, {}))[1][entry.kind] = payload
        operations: list[models.UpdateOperation] = []
        new_points = [
            models.PointStruct(id=pid, vector={}, payload=payload)
            for key, (pid, payload) in by_point.items()
            if key not in existing
        ]
        if new_points:
            operations.append(models.UpsertOperation(upsert=models.PointsList(points=new_points)))
        operations += [
            models.SetPayloadOperation(set_payload=models.SetPayload(payload=payload, points=[pid]))
            for key, (pid, payload) in by_point.items()
            if key in existing
        ]
        self.retry.call(
            self.client.batch_update_points,
            self.name,
            operations,
            what=f"writing {len(entries)} entries to the sidecar {self.name!r}",
            client=self.client,
            wait=True,
        )
        return len(entries)

    def create(self) -> None:
        """Creates the sidecar collection unless it exists (an embedded Qdrant's race with
        another client creating it meanwhile is no error)."""
        if self.exists():
            return
        try:
            self.retry.call(
                self.client.create_collection,
                self.name,
                what=f"creating the sidecar collection {self.name!r}",
                client=self.client,
                vectors_config={},
            )
        except ValueError:  # local mode: created meanwhile by another explainer
            if not self.client.collection_exists(self.name):
                raise
        self._exists = True


def current_entry(
    entry: Mapping[str, Any] | None,
    *,
    fingerprint: str,
    stored_vector: Sequence[float] | np.ndarray | None,
    profile: Profile = "standard",
) -> bool:
    """Whether a sidecar entry still holds for its source point: this model's fingerprint,
    the source's stored vector unchanged since, and (image entries) at least ``profile``.
    The rule of :func:`~qdrant_xai.storage.payloads.is_current` plus the vector: an entry
    written under the model's legacy key (projections only) is recomputed, never used."""
    if not entry or stored_vector is None:
        return False
    image = entry.get(PayloadKeys.KIND) == "image"
    return is_current(dict(entry), fingerprint, profile, image=image) and same_vector(
        entry.get(PayloadKeys.SOURCE_VECTOR), stored_vector
    )
