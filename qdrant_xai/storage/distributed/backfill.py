"""Backfill on Ray Data: :class:`~qdrant_xai.storage.backfill.Backfiller`'s pages, their
model work done by an actor pool.

The driver resolves the layout, checks the vectors' size, scrolls the collection and drops
the points that are current (:meth:`Backfiller.pending`: no image decoded, nothing encoded,
so a rerun encodes nothing); the pending points (id, kind, image source or text, stored
vector: small, picklable rows) become a Ray Dataset, and ``map_batches`` with
:class:`BackfillActor` (``workers`` actors, one model load each, a GPU each when the
cluster has them) runs the single-process per-page compute (:meth:`Backfiller.compute`:
images loaded under the same :class:`~qdrant_xai.images.policy.ImageSourcePolicy`, encoded,
stored vectors verified, writes built). Where the writes go from depends on the connection:

* **an embedded folder** (no ``url``; the folder is locked by the driver's client): the
  actors return the writes and the driver writes them (:meth:`Backfiller.write`);
* **a Qdrant server** (``url``): each actor opens its own client and writes its batches.

The sidecar, when the features go there, is created by the driver before any actor runs,
so the actors never race to create it. Every write is idempotent (the same ``set_payload``
on the same point, or the same sidecar entry by the same id), so a batch Ray redoes (an
actor killed mid-run is restarted and its batch retried; its result row comes once) or a
rerun writes nothing twice. The summary adds up: updated + unchanged + failed = points
seen, its unchanged and layout failures counted by the driver, the rest collected from the
workers' rows.

Use::

    from qdrant_xai.storage.distributed import RayBackfiller, start_ray
    start_ray(num_cpus=2)                         # or start_ray("ray://head:10001")
    backfiller = RayBackfiller(client, encoder, collection_name="docs", workers=2,
                               sources=ImageSourcePolicy.from_roots(["/data/images"]))
    print(backfiller.run())
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import brief_repr
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.progress import progress_bar
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.backfill import Backfiller, BackfillSummary, FeatureWrite, PendingPoint
from qdrant_xai.storage.codec import Codec
from qdrant_xai.storage.distributed.pipeline import import_ray, map_on_actor_pool, start_ray
from qdrant_xai.storage.distributed.workers import Batch, object_column, open_actor
from qdrant_xai.storage.layouts import AUTO, LayoutSpec
from qdrant_xai.storage.schema import Profile

__all__ = ["BACKFILL_COLUMNS", "BackfillActor", "BackfillSettings", "RayBackfiller"]

#: the columns of a result row (one per batch): ``points`` (given), ``updated`` (written
#: by the actor), ``failed`` (JSON ``[[id, reason], ...]``), ``writes`` (pickled
#: :class:`FeatureWrite` list for the driver to write; empty when the actor wrote them)
BACKFILL_COLUMNS = ("points", "updated", "failed", "writes")


@dataclass(frozen=True)
class BackfillSettings:
    """What an actor needs to rebuild the driver's backfiller: the model (loaded once per
    actor), the feature options, where the features go (``in_place`` or the ``sidecar``
    named), and, when the actors write, the server (``url``; the API key travels with the
    task, never logged)."""

    model: str
    collection_name: str
    in_place: bool
    sidecar: str | None = None
    sources: ImageSourcePolicy | None = None
    codec: Codec = "fp16"
    profile: Profile = "standard"
    verify: bool = True
    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    attempts: int = 5
    url: str | None = None
    api_key: str | None = None
    timeout: float | None = None

    def backfiller(self, client: Any, encoder: Any) -> Backfiller:
        """A backfiller bound to the driver's target, for :meth:`Backfiller.compute`
        (and, with a client, :meth:`Backfiller.write`)."""
        backfiller = Backfiller(
            client,
            encoder,
            collection_name=self.collection_name,
            sources=self.sources,
            codec=self.codec,
            profile=self.profile,
            batch_size=self.batch_size,
            verify=self.verify,
            retry=RetryPolicy(attempts=self.attempts),
            sidecar=self.sidecar,
            in_place=self.in_place,
        )
        backfiller.bind(in_place=self.in_place)
        return backfiller


class BackfillActor:
    """An actor of the pool (one model load): a batch of pending points computed into its
    writes, which it writes itself with ``settings.url`` or returns for the driver. It
    never raises on a batch: whatever goes wrong is that batch's points' failure."""

    def __init__(self, settings: BackfillSettings) -> None:
        encoder, client = open_actor(settings)
        self.writes = client is not None
        self.backfiller = settings.backfiller(client, encoder)

    def __call__(self, batch: Batch) -> Batch:
        points: list[PendingPoint] = [pickle.loads(p) for p in batch["point"]]
        summary = BackfillSummary()
        writes: list[FeatureWrite] = []
        try:
            writes = self.backfiller.compute(points, summary)
            if self.writes:
                summary.updated += self.backfiller.write(writes)
                writes = []
        except Exception as exc:  # one batch's fault is that batch's failure, not the run's
            reason = (
                f"the batch failed in a Ray worker ({type(exc).__name__}: {brief_repr(str(exc))})"
            )
            summary = BackfillSummary(failed=[(str(p.point_id), reason) for p in points])
            writes = []
        return {
            "points": np.array([len(points)], dtype=np.int64),
            "updated": np.array([summary.updated], dtype=np.int64),
            "failed": object_column(json.dumps(summary.failed)),
            "writes": object_column(pickle.dumps(writes) if writes else b""),
        }


class RayBackfiller:
    """:class:`~qdrant_xai.storage.backfill.Backfiller`'s work on a Ray Data actor pool.

    Setup::

        client = QdrantClient(path="./qdrant_data")  # the driver writes
        encoder = ClipEncoder.from_pretrained("openai/clip-vit-base-patch32")
        backfiller = RayBackfiller(
            client, encoder, collection_name="products", layout="langchain",
            sources=ImageSourcePolicy.from_roots(["/data/images"]), workers=2,
        )

    Use::

        print(backfiller.run())   # resumable: a rerun encodes and writes nothing

    Args:
        client: the driver's client: it reads the collection and decides what is current
            and, without ``url``, writes every feature.
        encoder: the driver's encoder (its fingerprint decides what is current); each
            actor loads its own copy from ``encoder.model_id``.
        collection_name, layout, sources, codec, profile, batch_size, verify, retry,
            repair, sidecar, in_place: as for :class:`~qdrant_xai.storage.backfill.
            Backfiller` (``batch_size``: points per scroll page and per actor batch).
        workers: actors in the pool (one model each).
        url, api_key, timeout: a Qdrant server the actors write to themselves.
        device: the actors' torch device; ``None``: ``"cuda"`` with one GPU per actor when
            the cluster has GPUs, else ``"cpu"`` (one CPU and one torch thread per actor).
    """

    def __init__(
        self,
        client: QdrantClient,
        encoder: ClipEncoder,
        *,
        collection_name: str,
        layout: LayoutSpec = AUTO,
        sources: ImageSourcePolicy | None = None,
        codec: Codec = "fp16",
        profile: Profile = "standard",
        batch_size: int = 32,
        verify: bool = True,
        retry: RetryPolicy | None = None,
        repair: bool = False,
        sidecar: str | None = None,
        in_place: bool = False,
        workers: int = 2,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        device: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers!r}")
        self.backfiller = Backfiller(
            client,
            encoder,
            collection_name=collection_name,
            layout=layout,
            sources=sources,
            codec=codec,
            profile=profile,
            batch_size=batch_size,
            verify=verify,
            retry=retry,
            repair=repair,
            sidecar=sidecar,
            in_place=in_place,
        )
        self.workers = workers
        self.url = url
        self.api_key = api_key
        self.timeout = timeout
        self.device = device

    @property
    def driver_writes(self) -> bool:
        """Whether the driver writes the features (no ``url``: an embedded folder)."""
        return self.url is None

    def run(self, *, progress: bool = True, max_points: int | None = None) -> BackfillSummary:
        """Backfills every point (or the first ``max_points``), as :meth:`Backfiller.run`
        does; the summary of the run, with a progress bar in the driver."""
        summary = BackfillSummary()
        total = self.backfiller.count()
        total = total if max_points is None else min(total, max_points)
        bar = progress_bar(total=total, unit="pt", desc="backfilling", enabled=progress)
        try:
            self.collect(self.pipeline(summary, bar, max_points=max_points), summary, bar)
        finally:
            bar.close()
        return summary

    def pipeline(
        self, summary: BackfillSummary, bar: Any = None, *, max_points: int | None = None
    ) -> Any:
        """The Ray Dataset of the run, to extend before :meth:`collect` consumes it: one
        row per batch (:data:`BACKFILL_COLUMNS`). The collection is read and the points
        that need nothing are counted in ``summary`` (and ``bar``) here, in the driver."""
        ray = import_ray()
        if not ray.is_initialized():
            start_ray()
        driver = self.backfiller
        layout = driver.prepare()
        items: list[dict[str, bytes]] = []
        for page in driver.pages(layout, max_points=max_points):
            pending = driver.pending(page, layout, summary)
            items += [{"point": pickle.dumps(point)} for point in pending]
            if bar is not None:
                bar.update(len(page) - len(pending))
        sidecar = driver.sidecar
        if items and sidecar is not None:
            sidecar.create()  # here, once, so that the actors never race to create it
        settings = BackfillSettings(
            model=driver.encoder.model_id,
            collection_name=driver.collection_name,
            in_place=sidecar is None,
            sidecar=sidecar.name if sidecar is not None else None,
            sources=driver.sources,
            codec=driver.codec.codec,
            profile=driver.profile,
            verify=driver.verify,
            batch_size=driver.batch_size,
            dtype=str(driver.encoder.dtype).removeprefix("torch."),
            attempts=driver.retry.attempts,
            url=self.url,
            api_key=self.api_key,
            timeout=self.timeout,
        )
        return map_on_actor_pool(
            ray,
            items,
            BackfillActor,
            settings,
            batch_size=driver.batch_size,
            workers=self.workers,
            device=self.device,
        )

    def collect(self, dataset: Any, summary: BackfillSummary, bar: Any = None) -> BackfillSummary:
        """Consumes the rows of :meth:`pipeline`: adds them to ``summary`` and, when the
        driver writes, writes their features."""
        for row in dataset.iter_rows():
            writes = row["writes"]
            if writes:
                summary.updated += self.backfiller.write(pickle.loads(writes))
            summary.updated += int(row["updated"])
            summary.failed += [(str(i), str(r)) for i, r in json.loads(row["failed"])]
            if bar is not None:
                bar.update(int(row["points"]))
        return summary
