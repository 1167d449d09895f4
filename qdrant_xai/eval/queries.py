"""The queries of a retrieval evaluation, and which points of the collection they rank.

Every caption is a text→image query whose relevant image is its own; every image is an
image→text query whose relevant items are its captions. A collection may hold points of
other images too: each direction then gets a filter that keeps its rankings to the
dataset's points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qdrant_client import QdrantClient, models

from qdrant_xai.eval.datasets import EvalItem
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.schema import (
    IMAGE_VECTOR,
    TEXT_VECTOR,
    PayloadKeys,
    image_point_id,
    text_point_id,
)

__all__ = [
    "DIRECTION_LABELS",
    "Direction",
    "DirectionPlan",
    "EvalQuery",
    "indexed_sources",
    "plan_directions",
]

Direction = Literal["text_to_image", "image_to_text"]
DIRECTION_LABELS: dict[str, str] = {
    "text_to_image": "text -> image",
    "image_to_text": "image -> text",
}

_PAGE = 1000  # points per retrieve / scroll call


@dataclass
class EvalQuery:
    """One query: a caption (text→image) or an image (image→text), and the ids of the
    points that are relevant to it."""

    text: str | None
    image: Path | None
    relevant: frozenset[str]

    def describe(self) -> str:
        return self.text if self.text is not None else str(self.image)


@dataclass
class DirectionPlan:
    """The queries of one direction and how to search them.

    Attributes:
        direction: ``"text_to_image"`` or ``"image_to_text"``.
        queries: every query of that direction.
        using: the named vector searched (images, or captions).
        candidates: how many of the dataset's points each query ranks.
        filter: keeps the rankings to the dataset's points (None: the collection holds
            nothing else).
    """

    direction: Direction
    queries: list[EvalQuery]
    using: str
    candidates: int
    filter: models.Filter | None


def plan_directions(
    client: QdrantClient, collection: str, items: Sequence[EvalItem], retry: RetryPolicy
) -> list[DirectionPlan]:
    """The queries of both directions, restricted to the points of ``items``."""
    image_ids = {str(item.path): image_point_id(str(item.path)) for item in items}
    text_queries = [
        EvalQuery(text=c, image=None, relevant=frozenset({image_ids[str(item.path)]}))
        for item in items
        for c in item.captions
    ]
    image_queries = [
        EvalQuery(
            text=None,
            image=item.path,
            relevant=frozenset(text_point_id(c, str(item.path)) for c in item.captions),
        )
        for item in items
    ]
    text_ids = {pid for query in image_queries for pid in query.relevant}
    filters = _candidate_filters(client, collection, set(image_ids.values()), text_ids, retry)
    return [
        DirectionPlan(
            "text_to_image", text_queries, IMAGE_VECTOR, len(image_ids), filters["text_to_image"]
        ),
        DirectionPlan(
            "image_to_text", image_queries, TEXT_VECTOR, len(text_ids), filters["image_to_text"]
        ),
    ]


def indexed_sources(
    client: QdrantClient, collection: str, sources: list[str], retry: RetryPolicy
) -> set[str]:
    """The sources among ``sources`` whose image point is in the collection."""
    by_id = {image_point_id(s): s for s in sources}
    ids = list(by_id)
    present: set[str] = set()
    for start in range(0, len(ids), _PAGE):
        chunk = ids[start : start + _PAGE]
        records = retry.call(
            client.retrieve,
            collection,
            what=f"reading {len(chunk)} points",
            client=client,
            ids=chunk,
            with_payload=False,
        )
        for record in records:
            present.add(by_id[str(record.id)])
    return present


def _candidate_filters(
    client: QdrantClient,
    collection: str,
    image_ids: set[str],
    text_ids: set[str],
    retry: RetryPolicy,
) -> dict[Direction, models.Filter | None]:
    """Per direction, a filter keeping the rankings to the dataset's points, or None when
    the collection holds nothing else."""
    total = retry.call(
        client.count, collection, what="counting points", client=client, exact=True
    ).count
    if total == len(image_ids) + len(text_ids):
        return {"text_to_image": None, "image_to_text": None}
    extra: dict[str, list[str]] = {"image": [], "text": []}
    offset: Any = None
    while True:
        records, offset = retry.call(
            client.scroll,
            collection,
            what="listing the collection's points",
            client=client,
            limit=_PAGE,
            offset=offset,
            with_payload=[PayloadKeys.KIND],
        )
        for record in records:
            pid = str(record.id)
            if pid not in image_ids and pid not in text_ids:
                kind = (record.payload or {}).get(PayloadKeys.KIND)
                extra["text" if kind == "text" else "image"].append(pid)
        if offset is None:
            break

    def keep(ours: set[str], others: list[str]) -> models.Filter | None:
        if not others:
            return None
        if len(others) <= len(ours):
            return models.Filter(must_not=[models.HasIdCondition(has_id=list(others))])
        return models.Filter(must=[models.HasIdCondition(has_id=sorted(ours))])

    return {
        "text_to_image": keep(image_ids, extra["image"]),
        "image_to_text": keep(text_ids, extra["text"]),
    }
