"""Indexing on Ray Data: the single-process indexer's batches, run by an actor pool.

Records (an image path and its captions) become a Ray Dataset; ``map_batches`` with
:class:`~.workers.BatchEncoder` (an actor pool of ``workers`` actors, one model load per
actor, a GPU each when the cluster has them) encodes each batch into the same points as
:class:`~qdrant_xai.storage.indexer.Indexer` (same ids, vectors and features); the points
are written in batches. Where they are written from depends on the connection:

* **a Qdrant server** (``url``): each actor opens its own client, skips the points that are
  current and writes its own batches (as ``ray-qdrant`` does);
* **an embedded folder** (or any client without ``url``): the folder is locked by the
  driver's client, so a first stage of tasks computes ids and file digests, the driver
  drops the records already current (one ``retrieve`` per batch) before any is encoded,
  the actors return the points and the driver writes them. A rerun encodes nothing.

Ids are deterministic and every write is an upsert, so a task Ray retries (an actor
killed mid-run is restarted, ``max_restarts``, and its batch redone, ``max_task_retries``)
or a rerun writes nothing twice; the summary adds up (indexed + unchanged + failed images
= images given), its failures collected from the workers. (Against a server, a batch
redone after its points were written finds them current and counts them as unchanged.)

Use::

    from qdrant_xai.storage.distributed import RayIndexer, start_ray
    start_ray(num_cpus=2)                         # or start_ray("ray://head:10001")
    indexer = RayIndexer(client, encoder, collection_name="photos", workers=2)
    print(indexer.index_folder("photos/", captions="photos/captions.csv"))
    dataset = indexer.pipeline(records)           # a ray.data.Dataset to extend
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import warnings
from collections.abc import Iterable
from typing import Any

from qdrant_client import QdrantClient

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.encoding.text_limits import TextLimits
from qdrant_xai.errors import QdrantXaiError
from qdrant_xai.images.load import ImageLimits
from qdrant_xai.progress import progress_bar
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.captions import list_folder
from qdrant_xai.storage.codec import Codec
from qdrant_xai.storage.distributed.workers import BatchEncoder, WorkerSettings, plan_batches
from qdrant_xai.storage.index_records import ImageRecord, IndexSummary
from qdrant_xai.storage.indexer import Indexer
from qdrant_xai.storage.schema import Profile, ensure_collection

__all__ = ["MISSING_RAY", "RayIndexer", "import_ray", "map_on_actor_pool", "start_ray"]

MISSING_RAY = "--engine ray needs the ray extra: pip install 'qdrant-xai[ray]' (Ray Data)"


def import_ray() -> Any:
    """The ``ray`` module (with ``ray.data``), or an error naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise QdrantXaiError(f"{MISSING_RAY}; missing: {exc.name}") from exc
    return ray


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Joins the Ray cluster at ``address``, or starts a local Ray with ``num_cpus``
    (``None``: every core), quietly (no dashboard, errors only, no worker logs on the
    driver, no Ray Data progress bars). Returns whether this call connected (False: Ray
    was already initialised in this process); the caller then ends it with
    ``ray.shutdown()``."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.ERROR,
        "log_to_driver": False,
    }
    if address is None:
        ray.init(num_cpus=num_cpus, **quiet)
    else:
        ray.init(address=address, **quiet)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    with warnings.catch_warnings():  # Ray Data's own defaults warn as they are set
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return True


class RayIndexer:
    """:class:`~qdrant_xai.storage.indexer.Indexer`'s work on a Ray Data actor pool.

    Setup::

        client = QdrantClient(path="./qdrant_data")  # the driver writes
        encoder = ClipEncoder.from_pretrained("openai/clip-vit-base-patch32")
        indexer = RayIndexer(client, encoder, collection_name="photos", workers=2)

    Use::

        summary = indexer.index_folder("photos/", captions="photos/captions.csv")

    Args:
        client: the driver's client: it creates or checks the collection and, without
            ``url``, checks current points and writes every point.
        encoder: the driver's encoder (its fingerprint decides what is current); each
            actor loads its own copy from ``encoder.model_id``.
        collection_name, codec, batch_size, profile, retry, image_limits, text_limits:
            as for :class:`~qdrant_xai.storage.indexer.Indexer`.
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
        codec: Codec = "fp16",
        batch_size: int = 16,
        profile: Profile = "standard",
        workers: int = 2,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        image_limits: ImageLimits | None = None,
        text_limits: TextLimits | None = None,
        device: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers!r}")
        self.workers = workers
        self.device = device
        self.url = url
        self.indexer = Indexer(
            client,
            encoder,
            collection_name=collection_name,
            codec=codec,
            batch_size=batch_size,
            profile=profile,
            retry=retry,
            image_limits=image_limits,
            text_limits=text_limits,
        )
        self.settings = WorkerSettings(
            model=encoder.model_id,
            collection_name=collection_name,
            codec=codec,
            profile=profile,
            batch_size=batch_size,
            dtype=str(encoder.dtype).removeprefix("torch."),
            attempts=self.indexer.retry.attempts,
            url=url,
            api_key=api_key,
            timeout=timeout,
            image_limits=self.indexer.image_limits,
            text_limits=self.indexer.text_limits,
        )

    @property
    def driver_writes(self) -> bool:
        """Whether the driver writes the points (no ``url``: an embedded folder)."""
        return self.url is None

    # -- entry points -------------------------------------------------------------------

    def index_folder(
        self,
        directory: str | os.PathLike[str],
        *,
        captions: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> IndexSummary:
        """Indexes every image under ``directory`` and its captions, as
        :meth:`Indexer.index_folder` does."""
        folder = list_folder(directory, captions=captions, text_limits=self.indexer.text_limits)
        records = [
            ImageRecord(source, tuple(folder.captions.get(source, ())))
            for _, source in folder.files
        ]
        summary = self.index(records, progress=progress)
        summary.failed += folder.failed
        return summary

    def index(self, records: Iterable[ImageRecord], *, progress: bool = True) -> IndexSummary:
        """Runs :meth:`pipeline` over ``records`` and writes its points; the summary of
        the run, with a progress bar in the driver."""
        records = list(records)
        summary = IndexSummary()
        bar = progress_bar(total=len(records), unit="img", desc="indexing", enabled=progress)
        try:
            dataset = self._pipeline(records, summary, bar)
            self.collect(dataset, summary, bar)
        finally:
            bar.close()
        return summary

    def pipeline(
        self, records: Iterable[ImageRecord], summary: IndexSummary | None = None, bar: Any = None
    ) -> Any:
        """The Ray Dataset of the run, to extend before :meth:`collect` consumes it: one
        row per batch of ``images`` records, with the counts, ``failed``, ``notes`` and
        ``stale`` as JSON lists and ``points`` (pickled ``PointStruct`` list; empty when the
        workers wrote them). Without ``url`` the ids and digests are computed and current
        records dropped here (counted in ``summary``, and in ``bar`` when given)."""
        return self._pipeline(list(records), summary or IndexSummary(), bar)

    def collect(self, dataset: Any, summary: IndexSummary, bar: Any = None) -> IndexSummary:
        """Consumes the rows of :meth:`pipeline`: adds them to ``summary`` and, when the
        driver writes, writes their points (upserts, in requests of bounded size)."""
        for row in dataset.iter_rows():
            points = row["points"]
            if points:
                self.indexer.write_points(pickle.loads(points), json.loads(row["stale"]))
            summary.indexed_images += int(row["indexed_images"])
            summary.indexed_texts += int(row["indexed_texts"])
            summary.unchanged += int(row["unchanged"])
            summary.failed += [(str(s), str(r)) for s, r in json.loads(row["failed"])]
            summary.notes += [(str(s), str(r)) for s, r in json.loads(row["notes"])]
            if bar is not None:
                bar.update(int(row["images"]))
        return summary

    # -- stages -------------------------------------------------------------------------

    def _pipeline(self, records: list[ImageRecord], summary: IndexSummary, bar: Any) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            start_ray()
        # created here, once, so that the workers never race to create it
        ensure_collection(
            self.indexer.client,
            self.indexer.collection_name,
            dim=self.indexer.encoder.dim,
            retry=self.indexer.retry,
        )
        items = [{"source": r.source, "captions": json.dumps(list(r.captions))} for r in records]
        if not self.driver_writes:
            return self._encode(ray, items)
        return self._encode(ray, self._pending_items(ray, items, summary, bar))

    def _pending_items(
        self, ray: Any, items: list[dict[str, str]], summary: IndexSummary, bar: Any
    ) -> list[dict[str, str]]:
        """Ids and digests computed by tasks, then the records not yet current (checked in
        the driver), with what the encoder needs of the check."""
        if not items:
            return []
        planned = ray.data.from_items(items).map_batches(
            plan_batches,
            fn_kwargs={"settings": self.settings},
            batch_size=self.indexer.batch_size,
            batch_format="numpy",
        )
        pending: list[dict[str, str]] = []
        for row in planned.iter_rows():
            plan = pickle.loads(row["plan"])
            failed = [(str(s), str(r)) for s, r in json.loads(row["failed"])]
            summary.failed += failed
            todo, stored = self.indexer.pending(plan, summary)
            for record in todo:
                point_id = plan.ids[record.source]
                pending.append(
                    {
                        "source": record.source,
                        "captions": json.dumps(list(record.captions)),
                        "digest": plan.digests.get(point_id) or "",
                        "stored_captions": json.dumps(stored.get(point_id, [])),
                    }
                )
            if bar is not None:
                bar.update(int(row["images"]) - len(todo))
        return pending

    def _encode(self, ray: Any, items: list[dict[str, str]]) -> Any:
        return map_on_actor_pool(
            ray,
            items,
            BatchEncoder,
            self.settings,
            batch_size=self.indexer.batch_size,
            workers=self.workers,
            device=self.device,
        )


def map_on_actor_pool(
    ray: Any,
    items: list[dict[str, Any]],
    actor: type,
    settings: Any,
    *,
    batch_size: int,
    workers: int,
    device: str | None,
) -> Any:
    """``items`` as a Ray Dataset mapped by ``actor(settings)`` in batches of
    ``batch_size`` on a pool of ``workers`` actors (one model load each): ``device`` for
    every actor, or (None) ``"cuda"`` with one GPU per actor when the cluster has GPUs, else
    ``"cpu"`` with one CPU each. ``settings`` is a dataclass with a ``device`` field."""
    if not items:
        return ray.data.from_items([])
    gpu = device is None and ray.cluster_resources().get("GPU", 0) >= 1
    settings = dataclasses.replace(settings, device=device or ("cuda" if gpu else "cpu"))
    resources: dict[str, Any] = {"num_gpus": 1} if gpu else {"num_cpus": 1}
    # a block per batch (up to 1,000), so that every actor of the pool gets work and a
    # killed actor's retried block is small
    blocks = min(-(-len(items) // batch_size), 1000)
    # Ray Data's actor pools restart a killed actor and retry its tasks by default
    # (max_restarts=-1, max_task_retries=-1); its batch is redone, its rows come once
    return ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        actor,
        fn_constructor_kwargs={"settings": settings},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)),
        **resources,
    )
