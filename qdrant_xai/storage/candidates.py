"""Which of the models a user names wrote a collection's vectors (``qdrant-xai inspect
--candidate``).

A collection written by another tool seldom says which model embedded it, and a CLIP and a
SigLIP of the same width give vectors of the same size. Each candidate re-encodes what the
sampled points hold (their image, read under the image-source policy, or their text) and
is compared with the stored vectors, exactly as ``inspect`` compares the configured model
(:class:`~qdrant_xai.storage.survey.Survey`); the one whose median cosine reaches
:data:`~qdrant_xai.encoding.fingerprint.MIN_AGREEMENT` reproduces them. Nothing is written.
Candidates are loaded one at a time and let go before the next, so two large models never
sit in memory together.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from qdrant_client import models

from qdrant_xai.errors import QdrantXaiError
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.storage.layouts import CollectionLayout
from qdrant_xai.storage.report import CandidateMatch
from qdrant_xai.storage.survey import Survey

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["match_candidates"]


def _load_default(name: str) -> ClipEncoder:
    from qdrant_xai.encoding.encoder import ClipEncoder

    return ClipEncoder.from_pretrained(name)


def match_candidates(
    candidates: Sequence[ClipEncoder | str],
    records: Sequence[models.Record],
    *,
    layout: CollectionLayout,
    info: models.CollectionInfo,
    collection_name: str,
    sources: ImageSourcePolicy,
    load: Callable[[str], ClipEncoder] | None = None,
) -> tuple[CandidateMatch, ...]:
    """How well each candidate reproduces the stored vectors of ``records`` (a sample read
    with their vectors), in the order given.

    Args:
        candidates: encoders, or names loaded with ``load`` (default
            ``ClipEncoder.from_pretrained``); a name that fails to load is reported with
            its error, not raised.
        records: the sampled points, with vectors and payloads.
        layout: where their vectors, images and texts are (resolved against ``info``).
        sources: which images may be read.
    """
    load = load or _load_default
    matches = []
    for candidate in candidates:
        if isinstance(candidate, str):
            try:
                encoder = load(candidate)
            except QdrantXaiError as exc:
                matches.append(CandidateMatch(model=candidate, error=str(exc)))
                continue
            name = candidate
        else:
            encoder, name = candidate, candidate.model_id
        matches.append(_match(name, encoder, records, layout, info, collection_name, sources))
        del encoder  # a loaded candidate goes before the next one loads
    return tuple(matches)


def _match(
    name: str,
    encoder: ClipEncoder,
    records: Sequence[models.Record],
    layout: CollectionLayout,
    info: models.CollectionInfo,
    collection_name: str,
    sources: ImageSourcePolicy,
) -> CandidateMatch:
    survey = Survey(layout, sources, encoder)
    for record in records:
        survey.add(record, None)
    survey.compare(info, collection_name)
    cosines = [c for point in survey.points for c in point.cosine.values()]
    return CandidateMatch(
        model=name,
        family=encoder.family.name,
        dim=encoder.dim,
        image=survey.agreement("image"),
        text=survey.agreement("text"),
        checked=len(cosines),
        cosine=statistics.median(cosines) if cosines else None,
        minimum=min(cosines) if cosines else None,
    )
