"""Zero-shot rationales: which concepts explain why an image matched a query.

After ECOR: Rasekh et al., *ECOR: Explainable CLIP for Object Recognition*, 2024
(https://arxiv.org/abs/2404.12839), which models a category together with its rationales,
``P(c, r | I) = P(r | I) · P(c | r, I)``, and scores the conditional with the prompt
"This is a photo of a {c} because there is {r}". Without fine-tuning, the same prompt
ranks candidate rationales for a retrieved image ``v`` and a query ``q``:

    score(r)   = cos(v, text("a photo of {q} because there is {r}"))   # ~ P(q | r, I)
    concept(r) = cos(v, text("a photo of {r}"))                         # ~ P(r | I)
    gain(r)    = score(r) − cos(v, text("a photo of {q}"))

The top rationales by ``score`` read as "matched because there is: red paint, wheel".
``concept`` is reported alongside: a rationale with a high ``score`` but a low ``concept``
is one the model links to the query rather than one it sees. Cost: one batched text
forward per distinct query (len(concepts) + 1 prompts; the plain concept prompts are
embedded once per scorer), then one matrix product for all hits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from qdrant_xai.explain.base import unique_texts
from qdrant_xai.explain.words.occlusion import embed_variants

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["DEFAULT_CONCEPTS", "Rationale", "RationaleScorer"]

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
        gain: ``score`` minus the image's score for the query prompt alone.
    """

    concept: str
    score: float
    concept_score: float
    gain: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "score": round(self.score, 6),
            "concept_score": round(self.concept_score, 6),
            "gain": round(self.gain, 6),
        }


class RationaleScorer:
    """Ranks a concept vocabulary as rationales for (query text, image) pairs.

    Args:
        encoder: the CLIP encoder.
        concepts: the vocabulary; defaults to :data:`DEFAULT_CONCEPTS`.
        extra_concepts: appended to ``concepts`` (your domain's words).
        template: the conditional prompt, with ``{query}`` and ``{concept}``.
        query_template: the prompt of the query alone (the ``gain`` reference).
        concept_template: the plain concept prompt.
        top_k: rationales kept per pair.
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
                raise ValueError(f"{name} {value!r} lacks {', '.join(missing)}")
        self.encoder = encoder
        self.concepts = tuple(vocabulary)
        self.template = template
        self.query_template = query_template
        self.concept_template = concept_template
        self.top_k = top_k
        self._concept_embeddings: np.ndarray | None = None

    @property
    def concept_embeddings(self) -> np.ndarray:
        """[n_concepts, P] embeddings of the plain concept prompts (computed once)."""
        if self._concept_embeddings is None:
            (self._concept_embeddings,) = embed_variants(
                self.encoder, [[self.concept_template.format(concept=c) for c in self.concepts]]
            )
        return self._concept_embeddings

    def rationales(
        self, queries: Sequence[str], images: np.ndarray, *, top_k: int | None = None
    ) -> list[tuple[Rationale, ...]]:
        """The top rationales of each ``(queries[k], images[k])`` pair.

        Args:
            queries: N query texts (repeats are embedded once).
            images: [N, P] normalised image embeddings.
            top_k: overrides the scorer's ``top_k``.
        """
        k_top = self.top_k if top_k is None else top_k
        images = np.asarray(images, dtype=np.float32)
        distinct, index = unique_texts(queries)
        groups = [
            [
                self.query_template.format(query=q),
                *(self.template.format(query=q, concept=c) for c in self.concepts),
            ]
            for q in distinct
        ]
        prompts = embed_variants(self.encoder, groups)
        plain = images @ self.concept_embeddings.T  # [N, n_concepts]
        results = []
        for row, (k, image) in enumerate(zip(index, images, strict=True)):
            sims = prompts[k] @ image  # [1 + n_concepts]
            order = np.argsort(-sims[1:], kind="stable")[:k_top]
            results.append(
                tuple(
                    Rationale(
                        concept=self.concepts[j],
                        score=float(sims[1 + j]),
                        concept_score=float(plain[row, j]),
                        gain=float(sims[1 + j] - sims[0]),
                    )
                    for j in order
                )
            )
        return results
