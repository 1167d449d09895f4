"""Zero-shot rationales: which concepts explain why an image matched a query.

After ECOR: Rasekh et al., *ECOR: Explainable CLIP for Object Recognition*, 2024
(https://arxiv.org/abs/2404.12839), which models a category together with its rationales,
``P(c, r | I) = P(r | I) · P(c | r, I)``, and scores the conditional with the prompt
"This is a photo of a {c} because there is {r}". Without fine-tuning, the same prompt
scores candidate rationales for a retrieved image ``v`` and a query ``q``:

    score(r)   = cos(v, text("a photo of {q} because there is {r}"))   # ~ P(q | r, I)
    base       = cos(v, text("a photo of {q}"))                         # the match alone
    gain(r)    = score(r) − base
    concept(r) = cos(v, text("a photo of {r}"))                         # ~ P(r | I)
    support(r) = (concept(r) − median_ref(r)) / spread_ref(r)

A concept is listed only when both hold:

* **it raises the match**: ``gain(r) > 0``, the image matches "{q} because there is {r}"
  better than it matches "{q}" alone. Naming a concept that lowers the match explains
  nothing about why the image matched.
* **the image supports it**: ``support(r) > support_z`` (default 3.5). ``median_ref(r)``
  and ``spread_ref(r)`` (1.4826 × the median absolute deviation, floored at half the
  median spread over all concepts) are the concept's plain score over a *reference set* of
  image embeddings, with no labels: the collection's own image vectors
  (:meth:`RationaleScorer.calibrate`, or ``reference=``), else the distinct images of the
  call when there are at least ``min_reference`` of them. Assumption: each concept is
  absent from most reference images (fewer than half), so the median and its spread
  describe what the concept scores on images without it. Why 3.5: images holding
  something *like* the concept (the same colour, another shape) score about 3 robust
  deviations above the median on the shapes model (where this rule was developed), a
  mode of "images without it" that a lower bar lets through; 3.5 is also about the
  family-wise 5 % level, for normal scores, over a vocabulary of a hundred concepts. A
  concept present in most of the reference (e.g. the query's own object among the hits
  of that query) cannot pass, which errs towards saying nothing. Without a reference
  large enough, nothing is listed.

Listed concepts are ordered by ``score``, best first, at most ``top_k``; when none passes,
the pair's result is empty: "no rationale found". Cost: one batched text forward per
distinct query (len(concepts) + 1 prompts; the plain concept prompts are embedded once
per scorer), then matrix products for all hits and the reference (no image forward pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from qdrant_client import models

from qdrant_xai.encoding.fingerprint import check_dimension
from qdrant_xai.errors import brief_repr
from qdrant_xai.explain.base import unique_texts
from qdrant_xai.explain.words.occlusion import embed_variants
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.schema import PayloadKeys

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder
    from qdrant_xai.storage.layouts import CollectionLayout

__all__ = [
    "DEFAULT_CONCEPTS",
    "REFERENCE_SAMPLE",
    "ConceptCalibration",
    "Rationale",
    "RationaleScorer",
    "reference_images",
]

#: a general visual vocabulary (objects, parts, materials, colours, scenes, attributes)
DEFAULT_CONCEPTS: tuple[str, ...] = (
    # colours
    "red paint", "blue paint", "green leaves", "yellow light", "white snow", "black fur",
    "orange fur", "brown wood", "grey stone", "pink flowers", "purple flowers", "gold metal",
    # materials and textures
    "metal", "wood", "glass", "plastic", "fabric", "leather", "stone", "concrete", "water",
    "sand", "grass", "fur", "feathers", "scales", "stripes", "spots", "smoke", "fire",
    # parts
    "a wheel", "wheels", "a window", "a door", "a roof", "a face", "eyes", "a tail",
    "wings", "legs", "a beak", "paws", "a handle", "a screen", "a keyboard", "a sail",
    "an engine", "headlights", "a steering wheel", "a collar", "a hat", "a helmet",
    # objects and beings
    "a person", "a child", "a crowd", "a dog", "a cat", "a bird", "a horse", "a cow",
    "a fish", "a car", "a bus", "a bicycle", "a motorcycle", "a boat", "a plane", "a train",
    "a tree", "flowers", "a building", "a bridge", "a road", "a bench", "a table",
    "a chair", "a bed", "a ball", "a book", "a phone", "food", "a plate", "a cup",
    "a bottle", "a sign", "text", "a flag", "a kite", "an umbrella",
    # scenes and conditions
    "the sky", "clouds", "the sea", "a beach", "mountains", "a forest", "a field",
    "a street", "a city", "a park", "a room", "a kitchen", "snow", "rain", "night",
    "sunlight", "shadows", "reflections",
    # attributes
    "motion", "a smile", "a group of people", "something small", "something large",
)  # fmt: skip


@dataclass(frozen=True)
class Rationale:
    """One concept offered as the reason an image matched a query.

    Attributes:
        concept: the concept text.
        score: ``cos(image, "a photo of {query} because there is {concept}")``.
        concept_score: ``cos(image, "a photo of {concept}")``: is the concept visible?
        gain: ``score`` minus the image's score for the query prompt alone (> 0 when listed).
        support: ``concept_score`` in robust deviations above the concept's median over the
            reference images (> the scorer's ``support_z`` when listed).
    """

    concept: str
    score: float
    concept_score: float
    gain: float
    support: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "score": round(self.score, 6),
            "concept_score": round(self.concept_score, 6),
            "gain": round(self.gain, 6),
            "support": round(self.support, 4),
        }


@dataclass(frozen=True)
class ConceptCalibration:
    """What each concept scores on images at large: the yardstick of ``support``.

    Attributes:
        center: [n_concepts] the median plain concept score over the reference images.
        spread: [n_concepts] 1.4826 × the median absolute deviation (a standard deviation
            for normal scores), floored at half the median spread over all concepts so that
            a concept the reference barely varies on cannot pass on noise.
        n_reference: how many distinct reference images it was measured on.
    """

    center: np.ndarray
    spread: np.ndarray
    n_reference: int

    @classmethod
    def from_scores(cls, scores: np.ndarray) -> ConceptCalibration:
        """From [M, n_concepts] plain concept scores of M reference images."""
        center = np.median(scores, axis=0)
        spread = 1.4826 * np.median(np.abs(scores - center), axis=0)
        floor = max(0.5 * float(np.median(spread)), 1e-6)
        return cls(center, np.maximum(spread, floor), int(scores.shape[0]))

    def support(self, scores: np.ndarray) -> np.ndarray:
        """[N, n_concepts] robust z-scores of [N, n_concepts] plain concept scores."""
        return (scores - self.center) / self.spread


class RationaleScorer:
    """Lists the concepts of a vocabulary that explain (query text, image) matches.

    Setup::

        scorer = RationaleScorer(encoder, extra_concepts=["rust", "a spoiler"])
        scorer.calibrate(image_vectors)  # [M, P], e.g. a few hundred of the collection's

    Use::

        (reasons,) = scorer.rationales(["a red car"], encoder.embed_images([path]))
        print(", ".join(r.concept for r in reasons) or "no rationale found")

    A concept is listed when it raises the match and the image supports it (see the module
    docstring for both rules); an empty tuple means "no rationale found".

    Args:
        encoder: the CLIP encoder.
        concepts: the vocabulary; defaults to :data:`DEFAULT_CONCEPTS`.
        extra_concepts: appended to ``concepts`` (your domain's words).
        template: the conditional prompt, with ``{query}`` and ``{concept}``.
        query_template: the prompt of the query alone (the ``gain`` reference).
        concept_template: the plain concept prompt.
        top_k: at most this many rationales per pair.
        reference: [M, P] image embeddings to calibrate ``support`` on (the same as
            :meth:`calibrate`, done at first use).
        support_z: robust deviations above the reference median a concept's score must
            exceed on the image.
        min_reference: fewest distinct reference images a calibration may rest on; when no
            reference is set, the call's own images serve if there are this many.
    """

    def __init__(
        self,
        encoder: ClipEncoder,
        concepts: Sequence[str] | None = None,
        *,
        extra_concepts: Sequence[str] = (),
        template: str = "a photo of {query} because there is {concept}",
        query_template: str = "a photo of {query}",
        concept_template: str = "a photo of {concept}",
        top_k: int = 3,
        reference: np.ndarray | None = None,
        support_z: float = 3.5,
        min_reference: int = 8,
    ) -> None:
        vocabulary = list(dict.fromkeys([*(concepts or DEFAULT_CONCEPTS), *extra_concepts]))
        if not vocabulary:
            raise ValueError("the concept vocabulary is empty; pass concepts=[...]")
        for name, value, keys in (
            ("template", template, ("{query}", "{concept}")),
            ("query_template", query_template, ("{query}",)),
            ("concept_template", concept_template, ("{concept}",)),
        ):
            missing = [k for k in keys if k not in value]
            if missing:
                raise ValueError(f"{name} {brief_repr(value)} lacks {', '.join(missing)}")
        if not np.isfinite(support_z):
            raise ValueError(f"support_z must be a finite number, not {brief_repr(support_z)}")
        if min_reference < 2:
            raise ValueError(f"min_reference must be at least 2, not {brief_repr(min_reference)}")
        self.encoder = encoder
        self.concepts = tuple(vocabulary)
        self.template = template
        self.query_template = query_template
        self.concept_template = concept_template
        self.top_k = top_k
        self.support_z = float(support_z)
        self.min_reference = min_reference
        self.calibration: ConceptCalibration | None = None
        self._reference = None if reference is None else self._checked(reference, "reference")
        self._concept_embeddings: np.ndarray | None = None

    @property
    def concept_embeddings(self) -> np.ndarray:
        """[n_concepts, P] embeddings of the plain concept prompts (computed once)."""
        if self._concept_embeddings is None:
            (self._concept_embeddings,) = embed_variants(
                self.encoder, [[self.concept_template.format(concept=c) for c in self.concepts]]
            )
        return self._concept_embeddings

    def calibrate(self, reference: np.ndarray) -> ConceptCalibration:
        """Measures what each concept scores on ``reference`` and keeps it for later calls.

        Args:
            reference: [M, P] image embeddings without labels, e.g. a sample of the
                collection's image vectors (a few hundred is plenty; any norm).

        Raises:
            ValueError: fewer than ``min_reference`` distinct images.
            DimensionMismatchError: vectors of another size than the encoder's.
        """
        calibration = self._calibration_of(self._checked(reference, "reference"))
        if calibration is None:
            raise ValueError(
                f"the reference holds fewer than min_reference={self.min_reference} distinct "
                "images; pass more image vectors (a few hundred of the collection's)"
            )
        self.calibration = calibration
        self._reference = None
        return calibration

    def rationales(
        self,
        queries: Sequence[str],
        images: np.ndarray,
        *,
        top_k: int | None = None,
        reference: np.ndarray | None = None,
    ) -> list[tuple[Rationale, ...]]:
        """The rationales of each ``(queries[k], images[k])`` pair, best first; an empty
        tuple is "no rationale found".

        Args:
            queries: N query texts (repeats are embedded once).
            images: [N, P] normalised image embeddings.
            top_k: overrides the scorer's ``top_k``.
            reference: [M, P] image embeddings to calibrate on for this call only; else
                the scorer's calibration, else ``images`` themselves when they hold at
                least ``min_reference`` distinct images, else nothing is listed.
        """
        k_top = self.top_k if top_k is None else top_k
        images = self._checked(images, "images", normalise=False)
        if len(queries) != len(images):
            raise ValueError(f"{len(queries)} queries for {len(images)} images; pass one each")
        calibration = self._calibration_for(images, reference)
        if calibration is None or k_top <= 0 or not len(images):
            return [()] * len(images)
        distinct, index = unique_texts(queries)
        groups = [
            [
                self.query_template.format(query=q),
                *(self.template.format(query=q, concept=c) for c in self.concepts),
            ]
            for q in distinct
        ]
        prompts = np.stack(embed_variants(self.encoder, groups))  # [Q, 1 + n_concepts, P]
        sims = np.einsum("ncp,np->nc", prompts[np.asarray(index)], images)
        gains = sims[:, 1:] - sims[:, :1]  # [N, n_concepts]
        plain = images @ self.concept_embeddings.T  # [N, n_concepts]
        support = calibration.support(plain)
        listed = (gains > 0) & (support > self.support_z)
        ranked = np.where(listed, sims[:, 1:], -np.inf)
        results = []
        for row in range(len(images)):
            order = np.argsort(-ranked[row], kind="stable")[: min(k_top, int(listed[row].sum()))]
            results.append(
                tuple(
                    Rationale(
                        concept=self.concepts[j],
                        score=float(sims[row, 1 + j]),
                        concept_score=float(plain[row, j]),
                        gain=float(gains[row, j]),
                        support=float(support[row, j]),
                    )
                    for j in order
                )
            )
        return results

    # -- calibration ----------------------------------------------------------------------

    def _calibration_for(
        self, images: np.ndarray, reference: np.ndarray | None
    ) -> ConceptCalibration | None:
        if reference is not None:
            return self._calibration_of(self._checked(reference, "reference"))
        if self.calibration is None and self._reference is not None:
            self.calibration = self._calibration_of(self._reference)
            self._reference = None
        if self.calibration is not None:
            return self.calibration
        return self._calibration_of(images)

    def _calibration_of(self, reference: np.ndarray) -> ConceptCalibration | None:
        """The calibration on the distinct rows of ``reference`` (None: too few of them)."""
        distinct = np.unique(np.round(reference, 5), axis=0)
        if len(distinct) < self.min_reference:
            return None
        return ConceptCalibration.from_scores(distinct @ self.concept_embeddings.T)

    def _checked(self, vectors: np.ndarray, what: str, *, normalise: bool = True) -> np.ndarray:
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(
                f"{what} must be a [N, {self.encoder.dim}] array of image embeddings, "
                f"not of shape {brief_repr(array.shape)}"
            )
        check_dimension(
            array.shape[1], self.encoder.dim, what=f"the {what} vectors", model="this encoder"
        )
        if normalise:
            array = array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
        return array


#: image vectors sampled from a collection to calibrate rationale support on
REFERENCE_SAMPLE = 256


def reference_images(
    client: Any,
    collection_name: str,
    layout: CollectionLayout,
    *,
    limit: int = REFERENCE_SAMPLE,
    retry: RetryPolicy | None = None,
) -> np.ndarray | None:
    """Up to ``limit`` stored image vectors of a collection (one scroll, features excluded),
    a label-free reference for :class:`RationaleScorer` support; None when it holds none.
    Where images and texts share one vector, points the layout calls texts are left out."""
    records, _ = (retry or RetryPolicy()).call(
        client.scroll,
        collection_name,
        limit=limit,
        with_payload=models.PayloadSelectorExclude(exclude=list(PayloadKeys.HEAVY)),
        with_vectors=layout.vector_request(),
        what=f"scroll of {limit} image vectors of {collection_name!r} (rationale reference)",
    )
    shared = layout.image_vector == layout.text_vector
    vectors = [
        vector
        for record in records
        if not shared or layout.kind_of(record.payload or {}) == "image"
        if (vector := layout.vector_of(record.vector, "image")) is not None
    ]
    return np.asarray(vectors, dtype=np.float32) if vectors else None
