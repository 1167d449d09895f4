"""The sample survey behind :func:`~qdrant_xai.storage.detect.inspect_collection`: where
images and texts sit, which images can be read, how stored vectors agree with the model's
re-encodings, and what can be explained."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

from qdrant_client import models

from qdrant_xai.encoding.fingerprint import MIN_AGREEMENT, vector_agreement
from qdrant_xai.errors import QdrantXaiError, brief_repr
from qdrant_xai.images.load import LoadedImage
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.images.sniff import looks_like_base64_image
from qdrant_xai.storage.layouts import CollectionLayout, payload_value
from qdrant_xai.storage.report import Agreement, Explainable
from qdrant_xai.storage.schema import PayloadKeys, vector_size
from qdrant_xai.storage.sidecar import current_entry

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["Survey"]

_BATCH = 16
Kind = Literal["image", "text"]


class _Point:
    """What the survey learnt about one sampled point."""

    def __init__(self, record: models.Record) -> None:
        self.record = record
        self.payload: dict[str, Any] = record.payload or {}
        self.image_key: str | None = None  # where its image source is, and in which form
        self.image: LoadedImage | None = None
        self.image_error: str | None = None
        self.text_key: str | None = None
        self.text: str | None = None
        self.stored: set[Kind] = set()
        self.sidecar: set[Kind] = set()
        self.cosine: dict[Kind, float] = {}
        self.kinds: set[Kind] = set()  # the hit kinds it counts as
        self.undecided = False  # an image and a text on one vector: the vector decides

    @property
    def has_image(self) -> bool:
        return self.image_key is not None


class Survey:
    """Image reads, vector comparisons and counts over the sampled points: :meth:`add` each
    point, then :meth:`compare`, then read the counts and :meth:`agreement`,
    :meth:`explainable`."""

    def __init__(
        self, layout: CollectionLayout, sources: ImageSourcePolicy, encoder: ClipEncoder | None
    ) -> None:
        self.layout, self.sources, self.encoder = layout, sources, encoder
        self.points: list[_Point] = []
        self.counts: Counter[str] = Counter()
        self.image_keys: Counter[str] = Counter()
        self.text_keys: Counter[str] = Counter()
        self.not_images: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.reasons: dict[Kind, str] = {}
        self.skipped: Counter[Kind] = Counter()

    def add(self, record: models.Record, sidecar: dict[str, dict[str, Any]] | None) -> None:
        """Looks at one point: where its image and text are, reads its image, and notes
        the features stored for it (in place or in the ``sidecar`` entries given)."""
        point = _Point(record)
        payload, layout = point.payload, self.layout
        image = layout.image_entry(payload, sources=self.sources)
        text = layout.text_entry(payload)
        if image is not None:
            point.image_key = f"{image[0]} [{_form(image[1])}]"
            try:
                point.image = self.sources.open(image[1])
            except QdrantXaiError as exc:
                point.image_error = str(exc)
        if text is not None:
            point.text_key, point.text = text
        for key in layout.file_keys:
            value = payload_value(payload, key)
            if not (isinstance(value, str) and value.strip()) or (image and image[0] == key):
                continue
            if not self.sources.is_image_source(value):
                self.not_images[key] += 1
                self.examples.setdefault(key, brief_repr(value))
        self._decide(point)
        fingerprint = self.encoder.fingerprint.key if self.encoder is not None else None
        recorded = payload.get(PayloadKeys.FINGERPRINT)
        if recorded is not None and (fingerprint is None or recorded == fingerprint):
            point.stored |= point.kinds
        for kind, entry in (sidecar or {}).items():
            if kind not in ("image", "text"):
                continue
            vector = layout.vector_of(record.vector, kind)  # type: ignore[arg-type]
            if fingerprint is None or current_entry(
                entry, fingerprint=fingerprint, stored_vector=vector
            ):
                point.sidecar.add(kind)  # type: ignore[arg-type]
        self.points.append(point)

    def _decide(self, point: _Point) -> None:
        """The hit kinds a point counts as: what the writer recorded, else what it holds
        (both, on a layout with a vector each), else, holding both on one vector, the kind
        its stored vector agrees with (:meth:`compare`)."""
        layout = self.layout
        recorded = layout.recorded_kind(point.payload)
        if point.has_image and point.text is not None:
            if layout.image_vector != layout.text_vector:
                point.kinds = {"image", "text"}  # one vector each (Qdrant's tutorial)
            elif recorded is not None:
                point.kinds = {recorded}
            else:
                point.kinds = {layout.kind_of(point.payload, sources=self.sources)}
                point.undecided = True
        elif point.has_image:
            point.kinds = {"image"}
        elif point.text is not None:
            point.kinds = {"text"}

    def compare(self, info: models.CollectionInfo, collection_name: str) -> None:
        """Re-encodes the sampled images and texts (with the encoder) and compares them
        with the stored vectors, then counts the points by kind."""
        if self.encoder is not None:
            self._compare(self.encoder, info, collection_name)
        else:
            self.reasons = {"image": "no model", "text": "no model"}
        for point in self.points:
            kinds = point.kinds
            self.counts[
                "both" if len(kinds) == 2 else next(iter(kinds)) if kinds else "neither"
            ] += 1
            if "image" in kinds and point.image_key is not None:
                self.image_keys[point.image_key] += 1
            if "text" in kinds and point.text_key is not None:
                self.text_keys[point.text_key] += 1

    def _compare(self, encoder: ClipEncoder, info: models.CollectionInfo, name: str) -> None:
        layout = self.layout
        kinds: tuple[Kind, Kind] = ("image", "text")
        wrong = {}
        for kind in kinds:
            size = vector_size(info, layout.using(kind))
            if size is not None and size != encoder.dim:
                wrong[kind] = size
                self.reasons[kind] = (
                    f"vector {layout.using(kind) or '(unnamed)'!r} of {name!r} has {size} "
                    f"dims, {encoder.model_id} gives {encoder.dim}: another model"
                )

        def wanted(point: _Point, kind: Kind) -> bool:
            return kind not in wrong and (kind in point.kinds or point.undecided)

        images = [p for p in self.points if p.image is not None and wanted(p, "image")]
        texts = [p for p in self.points if p.text is not None and wanted(p, "text")]
        for chunk in _chunks(images):
            fresh = encoder.embed_images([p.image for p in chunk])
            for point, vector in zip(chunk, fresh, strict=True):
                self._agree(point, "image", vector)
        for chunk in _chunks(texts):
            fresh = encoder.embed_texts([p.text or "" for p in chunk])
            for point, vector in zip(chunk, fresh, strict=True):
                self._agree(point, "text", vector)
        for point in self.points:
            agreeing = [k for k, c in point.cosine.items() if c >= MIN_AGREEMENT]
            if point.undecided and agreeing:
                # the vector says which of the two was embedded; else the default stays
                point.kinds = {max(agreeing, key=lambda k: point.cosine[k])}
            point.cosine = {k: c for k, c in point.cosine.items() if k in point.kinds}
            for kind in kinds:
                if kind in point.kinds and kind not in point.cosine and kind not in wrong:
                    self.skipped[kind] += 1
                    why = point.image_error if kind == "image" else None
                    self.reasons.setdefault(kind, why or f"no stored {kind} vector")

    def _agree(self, point: _Point, kind: Kind, fresh: Any) -> None:
        stored = self.layout.vector_of(point.record.vector, kind)
        if stored is not None:
            point.cosine[kind] = vector_agreement(stored, fresh)

    def agreement(self, kind: Kind) -> Agreement:
        """How the stored vectors of ``kind`` agree with their re-encodings."""
        cosines = [p.cosine[kind] for p in self.points if kind in p.cosine]
        if not cosines:
            return Agreement(skipped=self.skipped[kind], reason=self.reasons.get(kind))
        return Agreement(
            checked=len(cosines),
            minimum=min(cosines),
            median=statistics.median(cosines),
            skipped=self.skipped[kind],
            reason=self.reasons.get(kind),
        )

    def explainable(self) -> tuple[Explainable, Explainable]:
        """What can be explained of the sampled image hits, and of the text hits."""
        return self._explainable("image"), self._explainable("text")

    def _explainable(self, kind: Kind) -> Explainable:
        points = [p for p in self.points if kind in p.kinds]
        stored = sum(kind in p.stored for p in points)
        sidecar = sum(kind in p.sidecar and kind not in p.stored for p in points)
        on_demand = sum(
            (p.image is not None) if kind == "image" else (p.text is not None) for p in points
        )
        explainable, reason = 0, None
        for p in points:
            cosine = p.cosine.get(kind)
            route = kind in p.stored or kind in p.sidecar
            route = route or (p.image is not None if kind == "image" else p.text is not None)
            if cosine is not None and cosine < MIN_AGREEMENT and kind not in p.stored:
                reason = reason or (
                    f"stored {kind} vectors disagree with the re-encoded {kind} (cosine "
                    f"{cosine:.3f}): another model, or another {kind} than the writer embedded"
                )
            elif not route:
                reason = reason or f"its image cannot be read ({p.image_error})"
            else:
                explainable += 1
        return Explainable(len(points), explainable, stored, sidecar, on_demand, reason)


def _form(source: str) -> str:
    """How an image source is given: base64, data URI, URL or path."""
    head = source[:16].lower()
    if head.startswith("data:"):
        return "data URI"
    if looks_like_base64_image(source):
        return "base64"
    if head.startswith(("http://", "https://")):
        return "URL"
    return "path"


def _chunks(points: list[_Point]) -> list[list[_Point]]:
    return [points[i : i + _BATCH] for i in range(0, len(points), _BATCH)]
