"""What :func:`~qdrant_xai.storage.detect.inspect_collection` finds, as a typed report.

:class:`CollectionReport` says which tool wrote a collection, its vectors, where images and
texts sit in a sample of its points, whether the stored vectors come from the configured
model (per modality), and what can be explained; ``str(report)`` is the text ``qdrant-xai
inspect`` prints, :meth:`CollectionReport.to_dict` its ``--json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qdrant_xai.encoding.fingerprint import MIN_AGREEMENT
from qdrant_xai.storage.layouts import CollectionLayout
from qdrant_xai.storage.writers import WRITERS

__all__ = ["Agreement", "CandidateMatch", "CollectionReport", "Explainable", "VectorInfo"]


def _vector(name: str) -> str:
    if name == "*":
        return "(not known: name it with --vector)"
    return repr(name) if name else "(unnamed)"


@dataclass(frozen=True)
class VectorInfo:
    """One dense vector of a collection: its name (``""``: unnamed), size and distance."""

    name: str
    size: int | None
    distance: str | None
    multivector: bool = False

    def __str__(self) -> str:
        kind = ", multivector" if self.multivector else ""
        return f"{_vector(self.name)}: {self.size} dims, {self.distance}{kind}"


@dataclass(frozen=True)
class Agreement:
    """Cosines between stored vectors of one modality and the model's re-encodings.

    Attributes:
        checked: points re-encoded and compared.
        minimum, median: of their cosines (None when none was checked).
        skipped: sampled points of this modality that could not be re-encoded.
        reason: why (the first reason), or why nothing was compared.
    """

    checked: int = 0
    minimum: float | None = None
    median: float | None = None
    skipped: int = 0
    reason: str | None = None

    @property
    def ok(self) -> bool | None:
        """Whether every checked vector agrees (cosine >= 0.98); None when none was checked."""
        return None if self.minimum is None else self.minimum >= MIN_AGREEMENT

    def __str__(self) -> str:
        if self.minimum is None or self.median is None:
            return f"not checked ({self.reason or 'no point of this kind in the sample'})"
        verdict = "agree" if self.ok else f"DISAGREE (needs {MIN_AGREEMENT})"
        text = (
            f"{self.checked} checked, cosine min {self.minimum:.3f}, median "
            f"{self.median:.3f}: {verdict}"
        )
        if self.skipped:
            text += f"; {self.skipped} skipped ({self.reason})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "min": self.minimum,
            "median": self.median,
            "skipped": self.skipped,
            "reason": self.reason,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class Explainable:
    """How the sampled hits of one kind can be explained.

    Attributes:
        sampled: sampled points of this kind.
        explainable: how many of them can be (a route below, and no vector disagreeing).
        stored: with current features stored in the collection itself.
        sidecar: with current features in the sidecar collection.
        on_demand: whose features can be computed now (the image read, or the text
            re-encoded).
        reason: why others cannot (the first reason), if any.
    """

    sampled: int = 0
    explainable: int = 0
    stored: int = 0
    sidecar: int = 0
    on_demand: int = 0
    reason: str | None = None

    def describe(self, kind: str, sidecar_name: str | None) -> str:
        if not self.sampled:
            return "none in the sample"
        routes = []
        if self.stored:
            routes.append(f"{self.stored} from stored features")
        if self.sidecar:
            routes.append(f"{self.sidecar} from the sidecar {sidecar_name!r}")
        how = "reading the image" if kind == "image" else "re-encoding the text"
        routes.append(f"{self.on_demand} on demand by {how}")
        text = f"{self.explainable} of {self.sampled} sampled ({'; '.join(routes)})"
        return text + (f"; not: {self.reason}" if self.reason else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "sampled": self.sampled,
            "explainable": self.explainable,
            "stored_features": self.stored,
            "sidecar": self.sidecar,
            "on_demand": self.on_demand,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class CandidateMatch:
    """How well one candidate model reproduces a collection's stored vectors
    (``qdrant-xai inspect --candidate``): the sampled images and texts re-encoded by it.

    Attributes:
        model: the candidate as named (hub id or folder).
        family: its model family (``"clip"``, ``"siglip"``); None when it did not load.
        dim: its embedding dimension; None when it did not load.
        image, text: its re-encodings against the stored vectors, per modality.
        checked: vectors compared, both modalities.
        cosine: median cosine over them (None: none compared); ``minimum`` the lowest.
        error: why it could not be compared (did not load), if so.
    """

    model: str
    family: str | None = None
    dim: int | None = None
    image: Agreement = field(default_factory=Agreement)
    text: Agreement = field(default_factory=Agreement)
    checked: int = 0
    cosine: float | None = None
    minimum: float | None = None
    error: str | None = None

    @property
    def matches(self) -> bool:
        """Whether it reproduces the stored vectors: median cosine >= 0.98."""
        return self.cosine is not None and self.cosine >= MIN_AGREEMENT

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.model}: not compared ({self.error})"
        head = f"{self.model} ({self.family}, {self.dim} dims)"
        if self.cosine is None or self.minimum is None:
            reason = self.image.reason or self.text.reason or "nothing to re-encode"
            return f"{head}: not compared ({reason})"
        verdict = "MATCHES" if self.matches else "no match"
        return (
            f"{head}: {self.checked} vectors, cosine median {self.cosine:.3f}, min "
            f"{self.minimum:.3f}: {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "family": self.family,
            "dim": self.dim,
            "checked": self.checked,
            "cosine": self.cosine,
            "min": self.minimum,
            "matches": self.matches,
            "image": self.image.to_dict(),
            "text": self.text.to_dict(),
            "error": self.error,
        }


@dataclass(frozen=True)
class CollectionReport:
    """What a collection holds and what of it can be explained (from a sample of points).

    Attributes:
        collection_name: the collection.
        writer: the tool that wrote it (``"qdrant-xai"``, ``"langchain"``, ``"llamaindex"``,
            ``"fastembed"``, ``"qdrant-tutorial"``, ``"unknown"``), or the layout given.
        detected: whether ``layout`` was detected (not given).
        layout: the layout its hits are read with.
        points: the collection's point count.
        vectors: its dense vectors; ``sparse_vectors`` the names of its sparse ones.
        sampled: points looked at.
        images, texts, both, neither: sampled points holding an image source only, a text
            only, both, or neither (under ``layout``).
        image_keys, text_keys: ``(payload path, count)`` where they were found; an image
            path carries its form (``"page_content [base64]"``).
        not_images: ``(payload path, count, example)`` of file keys whose values are not
            images (a CSV loader's ``metadata.source``): those points are texts.
        model: the model the vectors were compared with (None: none was).
        image_agreement, text_agreement: stored vectors against re-encodings.
        image_hits, text_hits: what can be explained.
        sidecar: the sidecar collection's name when it exists.
        candidates: the candidate models compared (``inspect --candidate``), in the
            order given; :attr:`best_candidate` the one that reproduces the vectors.
        notes: anything else worth knowing.
    """

    collection_name: str
    writer: str
    detected: bool
    layout: CollectionLayout
    points: int | None
    vectors: tuple[VectorInfo, ...]
    sparse_vectors: tuple[str, ...] = ()
    sampled: int = 0
    images: int = 0
    texts: int = 0
    both: int = 0
    neither: int = 0
    image_keys: tuple[tuple[str, int], ...] = ()
    text_keys: tuple[tuple[str, int], ...] = ()
    not_images: tuple[tuple[str, int, str], ...] = ()
    model: str | None = None
    image_agreement: Agreement = field(default_factory=Agreement)
    text_agreement: Agreement = field(default_factory=Agreement)
    image_hits: Explainable = field(default_factory=Explainable)
    text_hits: Explainable = field(default_factory=Explainable)
    sidecar: str | None = None
    candidates: tuple[CandidateMatch, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def best_candidate(self) -> CandidateMatch | None:
        """The candidate with the highest median cosine, when it matches (>= 0.98)."""
        compared = [c for c in self.candidates if c.cosine is not None]
        best = max(compared, key=lambda c: c.cosine or 0.0, default=None)
        return best if best is not None and best.matches else None

    @property
    def writer_title(self) -> str:
        """The writer as people call it (``"LlamaIndex (QdrantVectorStore)"``)."""
        return WRITERS.get(self.writer, self.writer)

    def __str__(self) -> str:
        how = "detected" if self.detected else "layout given"
        points = "?" if self.points is None else str(self.points)
        layout = self.layout
        lines = [
            f"collection {self.collection_name!r}: {points} points",
            f"written by: {self.writer_title} ({how})",
            "vectors:",
            *(f"  {v}" for v in self.vectors),
        ]
        if self.sparse_vectors:
            lines.append(f"  sparse: {', '.join(self.sparse_vectors)}")
        lines.append(
            f"layout {layout.name!r}: image hits searched with {_vector(layout.image_vector)}, "
            f"text hits with {_vector(layout.text_vector)}"
        )
        lines += [
            f"sample of {self.sampled} points:",
            f"  images: {self.images}{_where(self.image_keys)}",
            f"  texts: {self.texts}{_where(self.text_keys)}",
        ]
        if self.both:
            lines.append(f"  both an image and a text: {self.both}")
        if self.neither:
            lines.append(f"  neither: {self.neither}")
        for key, count, example in self.not_images:
            lines.append(f"  not images: {key} on {count} points (e.g. {example}): texts")
        if self.model is None:
            how = "with the candidate models below" if self.candidates else "not compared"
            lines.append(f"stored vectors: {how} (no model)")
        else:
            lines += [
                f"stored vectors against {self.model}:",
                f"  image vectors: {self.image_agreement}",
                f"  text vectors: {self.text_agreement}",
            ]
        lines += [
            "explainable:",
            f"  image hits: {self.image_hits.describe('image', self.sidecar)}",
            f"  text hits: {self.text_hits.describe('text', self.sidecar)}",
        ]
        if self.candidates:
            lines += [
                f"candidate models (sampled points re-encoded; a match needs median cosine "
                f">= {MIN_AGREEMENT}):",
                *(f"  {candidate}" for candidate in self.candidates),
                f"  {self._best_line()}",
            ]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def _best_line(self) -> str:
        best = self.best_candidate
        if best is not None:
            return f"best: {best.model} ({best.family})"
        compared = [c for c in self.candidates if c.cosine is not None]
        closest = max(compared, key=lambda c: c.cosine or 0.0, default=None)
        near = "" if closest is None else f" (closest: {closest.model}, {closest.cosine:.3f})"
        return f"none matches: no candidate reproduces the stored vectors{near}"

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``qdrant-xai inspect --json``)."""
        layout = self.layout
        return {
            "collection_name": self.collection_name,
            "writer": self.writer,
            "detected": self.detected,
            "points": self.points,
            "vectors": [
                {"name": v.name, "size": v.size, "distance": v.distance}
                | {"multivector": v.multivector}
                for v in self.vectors
            ],
            "sparse_vectors": list(self.sparse_vectors),
            "layout": {
                "name": layout.name,
                "image_vector": layout.image_vector,
                "text_vector": layout.text_vector,
                "image_keys": list(layout.image_keys),
                "file_keys": list(layout.file_keys),
                "text_keys": list(layout.text_keys),
            },
            "sample": {
                "points": self.sampled,
                "images": self.images,
                "texts": self.texts,
                "both": self.both,
                "neither": self.neither,
                "image_keys": dict(self.image_keys),
                "text_keys": dict(self.text_keys),
                "not_images": [{"key": k, "count": n, "example": e} for k, n, e in self.not_images],
            },
            "model": self.model,
            "agreement": {
                "image": self.image_agreement.to_dict(),
                "text": self.text_agreement.to_dict(),
            },
            "explainable": {
                "image_hits": self.image_hits.to_dict(),
                "text_hits": self.text_hits.to_dict(),
            },
            "sidecar": self.sidecar,
            "candidates": [c.to_dict() for c in self.candidates],
            "best_candidate": None if self.best_candidate is None else self.best_candidate.model,
            "notes": list(self.notes),
        }


def _where(keys: tuple[tuple[str, int], ...]) -> str:
    return f" ({', '.join(f'{k}: {n}' for k, n in keys)})" if keys else ""
