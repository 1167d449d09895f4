"""What runs inside Ray workers: the stages of :class:`~.pipeline.RayIndexer`.

Every stage reuses the single-process :class:`~qdrant_xai.storage.indexer.Indexer`'s batch
logic (:meth:`~Indexer.plan_batch`, :meth:`~Indexer.pending`, :meth:`~Indexer.batch_points`,
:meth:`~Indexer.write_points`), so ids, vectors, features and the current check are the
same as ``--engine local``'s. A stage never raises on a batch: whatever goes wrong in one
is listed as that batch's failures and the run goes on.

Rows cross the stages as Ray Data batches (``dict`` of numpy arrays). The result of a
batch is one row of :data:`RESULT_COLUMNS`: the counts, ``failed``/``notes``/``stale`` as
JSON lists, and ``points`` (the pickled ``PointStruct`` list the driver writes; empty when
the worker wrote them itself).
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdrant_xai.encoding.text_limits import TextLimits
from qdrant_xai.images.load import ImageLimits
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.codec import Codec
from qdrant_xai.storage.index_records import BatchPlan, ImageRecord, IndexSummary
from qdrant_xai.storage.indexer import Indexer
from qdrant_xai.storage.schema import Profile, image_point_id, text_point_id

__all__ = [
    "RESULT_COLUMNS",
    "BatchEncoder",
    "WorkerSettings",
    "object_column",
    "open_actor",
    "plan_batches",
    "records_of",
]

Batch = dict[str, np.ndarray]

RESULT_COLUMNS = (
    "images",
    "indexed_images",
    "indexed_texts",
    "unchanged",
    "failed",
    "notes",
    "points",
    "stale",
)


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to rebuild the driver's indexer: the model (hub id, folder or
    ``"shapes"``, loaded once per actor), the collection and feature options, and, when the
    workers write, the server (``url``; the API key travels with the task, never logged)."""

    model: str
    collection_name: str
    codec: Codec = "fp16"
    profile: Profile = "standard"
    batch_size: int = 16
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    attempts: int = 5
    url: str | None = None
    api_key: str | None = None
    timeout: float | None = None
    image_limits: ImageLimits | None = None
    text_limits: TextLimits | None = None

    def indexer(self, client: Any, encoder: Any) -> Indexer:
        return Indexer(
            client,
            encoder,
            collection_name=self.collection_name,
            codec=self.codec,
            batch_size=self.batch_size,
            profile=self.profile,
            retry=RetryPolicy(attempts=self.attempts),
            image_limits=self.image_limits,
            text_limits=self.text_limits,
        )


def open_actor(settings: Any) -> tuple[Any, Any]:
    """What an actor opens once: its own model (``settings.model`` on ``settings.device``
    in ``settings.dtype``, one torch thread) and, with ``settings.url``, its own client
    (None without: the driver writes)."""
    from qdrant_xai.connection import open_client
    from qdrant_xai.encoding.encoder import ClipEncoder

    encoder = ClipEncoder.from_pretrained(
        settings.model, device=settings.device, dtype=settings.dtype, num_threads=1
    )
    client = None
    if settings.url is not None:
        client = open_client(settings.url, api_key=settings.api_key, timeout=settings.timeout)
    return encoder, client


def records_of(batch: Batch) -> list[ImageRecord]:
    """The records of a batch with columns ``source`` and ``captions`` (a JSON list)."""
    return [
        ImageRecord(str(source), tuple(json.loads(str(captions))))
        for source, captions in zip(batch["source"], batch["captions"], strict=True)
    ]


def plan_batches(batch: Batch, settings: WorkerSettings) -> Batch:
    """First stage (tasks): names and captions checked, ids and file digests computed
    (:meth:`Indexer.plan_batch`, no model, no Qdrant); one row per batch: ``images``
    (records given), ``plan`` (pickled :class:`BatchPlan`) and ``failed`` (JSON)."""
    summary = IndexSummary()
    # plan_batch reads only the limits: no client, no model in this stage
    plan = settings.indexer(None, None).plan_batch(records_of(batch), summary)
    return {
        "images": np.array([len(batch["source"])], dtype=np.int64),
        "plan": object_column(pickle.dumps(plan)),
        "failed": object_column(json.dumps(summary.failed)),
    }


class BatchEncoder:
    """Second stage (an actor pool, one model load per actor): a batch encoded into its
    points. With ``settings.url`` the actor opens its own client and does the whole
    per-batch logic of the indexer (skipping current points, writing its points);
    without, it returns the points for the driver to write (an embedded folder is locked
    by the driver's client) and the driver has already dropped current records."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        encoder, client = open_actor(settings)
        self.writes = client is not None
        self.indexer = settings.indexer(client, encoder)
        self.pid = os.getpid()

    def __call__(self, batch: Batch) -> Batch:
        records = records_of(batch)
        summary = IndexSummary()
        points: list[Any] = []
        stale: list[str] = []
        try:
            if self.writes:
                self.indexer.index_batch(records, summary)
            else:
                plan = _plan_of(records, batch)
                stored = {
                    plan.ids[r.source]: json.loads(str(s))
                    for r, s in zip(records, batch["stored_captions"], strict=True)
                }
                for chunk, old in self.indexer.batch_points(records, plan, stored, summary):
                    points += chunk
                    stale += old
        except Exception as exc:  # one batch's fault is that batch's failure, not the run's
            reason = f"the batch failed in a Ray worker ({type(exc).__name__}: {exc})"
            summary = IndexSummary(failed=[(r.source, reason) for r in records])
            points, stale = [], []
        return result_row(len(records), summary, points, stale)


def result_row(images: int, summary: IndexSummary, points: list[Any], stale: list[str]) -> Batch:
    """One result row (:data:`RESULT_COLUMNS`) for a batch of ``images`` records."""
    return {
        "images": np.array([images], dtype=np.int64),
        "indexed_images": np.array([summary.indexed_images], dtype=np.int64),
        "indexed_texts": np.array([summary.indexed_texts], dtype=np.int64),
        "unchanged": np.array([summary.unchanged], dtype=np.int64),
        "failed": object_column(json.dumps(summary.failed)),
        "notes": object_column(json.dumps(summary.notes)),
        "points": object_column(pickle.dumps(points) if points else b""),
        "stale": object_column(json.dumps(stale)),
    }


def _plan_of(records: list[ImageRecord], batch: Batch) -> BatchPlan:
    """The plan of records the driver checked: ids recomputed, digests as it checked them."""
    ids = {r.source: image_point_id(r.source) for r in records}
    digests = {
        ids[r.source]: (str(d) or None) for r, d in zip(records, batch["digest"], strict=True)
    }
    caption_ids = {
        r.source: [text_point_id(c, r.source) for c in r.captions if c.strip()] for r in records
    }
    return BatchPlan(records, ids, caption_ids, digests)


def object_column(value: Any) -> np.ndarray:
    """A one-row column holding ``value`` as it is (bytes, a JSON string)."""
    column = np.empty(1, dtype=object)
    column[0] = value
    return column
