"""Proof that explaining hits changes no ranking: the plain and the explained pass compared.

:func:`qdrant_xai.eval.retrieval.evaluate` runs every query twice, once as plain searches and
once with the top hits of each query explained between searches; :class:`PassResult` is what
one pass records (ranks, and digests of the ids, scores and query vectors), and
:class:`Invariance` is the verdict of comparing the two.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from qdrant_client import models

from qdrant_xai.eval.queries import DIRECTION_LABELS, DirectionPlan, EvalQuery

__all__ = ["SCORE_NOISE", "Invariance", "PassResult", "ranking_key"]

SCORE_NOISE = 1e-6
"""Largest score difference still counted as backend noise (see :class:`Invariance`)."""


@dataclass
class PassResult:
    """What one pass over one direction's queries returned, in query order.

    Attributes:
        positions: per query, the 1-based ranks of its relevant points.
        id_digests: per query, a hash of the ranking's ids in order.
        scores: per query, the ranking's scores.
        vector_digests: per chunk of queries, a hash of their embeddings' bytes.
    """

    positions: list[list[int]] = field(default_factory=list)
    id_digests: list[bytes] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    vector_digests: list[bytes] = field(default_factory=list)

    def record_vectors(self, vectors: np.ndarray) -> None:
        """Records the embeddings of a chunk of queries (bit for bit)."""
        self.vector_digests.append(hashlib.blake2b(vectors.tobytes()).digest())

    def record(self, query: EvalQuery, points: Sequence[models.ScoredPoint]) -> None:
        """Records the ranking ``points`` that ``query`` returned."""
        self.positions.append([r + 1 for r, p in enumerate(points) if str(p.id) in query.relevant])
        self.id_digests.append(
            hashlib.blake2b("\n".join(str(p.id) for p in points).encode()).digest()
        )
        self.scores.append(np.array([p.score for p in points], dtype=np.float64))


@dataclass
class Invariance:
    """Whether explaining the hits changed any ranking.

    The same queries run twice: once as plain searches, once with the top hits of each
    query explained between searches. A ranking is *identical* when the ids and the scores
    come back bit for bit. A Qdrant server is bit-reproducible; the embedded backend
    (qdrant-client's local mode) is not, because every cosine search re-normalises the
    stored vectors in place and some flip between two neighbouring floats. So the same
    chunk of queries is also searched twice in a row, with nothing in between, as a
    control: when even that differs, scores that differ in the last bits are the backend's
    noise, and the verdict is *identical up to backend noise* provided every id is in the
    same place and no score moved by more than :data:`SCORE_NOISE`.

    Attributes:
        queries_compared: queries run both without and with the explainer in the loop.
        bit_identical: of those, how many returned the same ids and scores, bit for bit.
        same_ids: how many returned the same ids in the same order.
        max_score_difference: the largest score difference between the two runs.
        query_vectors_identical: the encoder embedded every query bit-identically in both
            runs (explaining did not change the model).
        hits_untouched: ``explain`` left every hit list it was given as it was (ids, scores
            and order, bit for bit), and its explanations carry those hits in that order.
        backend_repeatable: the control (the same searches twice in a row) was bit-identical.
        explained_queries, explained_hits: how much was explained.
        heatmap_method, word_method, top: what was explained (the top ``top`` hits).
        differences: the first few queries whose rankings differed.
    """

    queries_compared: int = 0
    bit_identical: int = 0
    same_ids: int = 0
    max_score_difference: float = 0.0
    query_vectors_identical: bool = True
    hits_untouched: bool = True
    backend_repeatable: bool = True
    explained_queries: int = 0
    explained_hits: int = 0
    heatmap_method: str = ""
    word_method: str = ""
    top: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def rankings_identical(self) -> bool:
        """Every ranking came back bit for bit, and the explainer left its hits alone."""
        return (
            self.queries_compared > 0
            and self.bit_identical == self.queries_compared
            and self.hits_untouched
            and self.query_vectors_identical
        )

    @property
    def verdict(self) -> Literal["identical", "identical up to backend noise", "changed"]:
        if self.rankings_identical:
            return "identical"
        if (
            self.queries_compared > 0
            and self.same_ids == self.queries_compared
            and self.hits_untouched
            and self.query_vectors_identical
            and not self.backend_repeatable
            and self.max_score_difference <= SCORE_NOISE
        ):
            return "identical up to backend noise"
        return "changed"

    @property
    def invariant(self) -> bool:
        """Explaining changed no ranking (bit for bit, or up to the backend's own noise)."""
        return self.verdict != "changed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rankings_identical": self.rankings_identical,
            "verdict": self.verdict,
            "invariant": self.invariant,
            **asdict(self),
        }

    def line(self) -> str:
        n = self.queries_compared
        what = (
            f"top {self.top} hits of each query explained with {self.heatmap_method} + "
            f"{self.word_method} between searches, {self.explained_hits} hits"
        )
        if self.verdict == "identical":
            return (
                f"Ranking invariance: IDENTICAL for {self.bit_identical} of {n} queries, ids "
                f"and scores bit for bit ({what})"
            )
        if self.verdict == "identical up to backend noise":
            return (
                f"Ranking invariance: IDENTICAL up to backend noise: same ids in the same "
                f"order for {self.same_ids} of {n} queries, scores bit-identical for "
                f"{self.bit_identical} and within {self.max_score_difference:.1e} for the "
                "rest; the same searches twice in a row already differ on this backend "
                "(embedded Qdrant re-normalises stored vectors on every cosine search), so "
                "use a Qdrant server (--url) for the bit-for-bit check. Query vectors were "
                f"bit-identical and the explainer left its hits untouched ({what})"
            )
        problems = []
        if self.same_ids < n:
            problems.append(f"{n - self.same_ids} of {n} queries returned other ids or order")
        if self.bit_identical < n:
            problems.append(
                f"{n - self.bit_identical} of {n} queries other scores (max difference "
                f"{self.max_score_difference:.1e})"
            )
        if not self.query_vectors_identical:
            problems.append("query vectors changed (the model changed while explaining)")
        if not self.hits_untouched:
            problems.append("the explainer altered the hits it was given")
        text = f"Ranking invariance: CHANGED: {'; '.join(problems)} ({what})"
        if self.differences:
            text += "\n  first: " + self.differences[0]
        return text

    def compare(self, plan: DirectionPlan, before: PassResult, after: PassResult) -> None:
        """Adds one direction's comparison of the plain and the explained pass."""
        if before.vector_digests != after.vector_digests:
            self.query_vectors_identical = False
        for i, query in enumerate(plan.queries):
            self.queries_compared += 1
            a, b = before.scores[i], after.scores[i]
            same_ids = before.id_digests[i] == after.id_digests[i]
            self.same_ids += same_ids
            if same_ids and a.tobytes() == b.tobytes():
                self.bit_identical += 1
                continue
            delta = float(np.max(np.abs(a - b), initial=0.0)) if a.shape == b.shape else math.inf
            self.max_score_difference = max(self.max_score_difference, delta)
            if len(self.differences) < 5:
                self.differences.append(
                    f"{DIRECTION_LABELS[plan.direction]} query {i} ({query.describe()!r}): "
                    f"{'same ids' if same_ids else 'other ids or order'}, largest score "
                    f"difference {delta:.3g}"
                )


def ranking_key(points: Sequence[models.ScoredPoint]) -> list[tuple[str, bytes]]:
    """A ranking's ids and the exact bits of its scores, in order."""
    return [(str(p.id), struct.pack("<d", p.score)) for p in points]
