"""Retrieval evaluation: Recall@K, mAP and median rank, and proof that explaining changes nothing.

Indexes a dataset read by :mod:`qdrant_xai.eval.datasets` (or reuses a collection that
already holds it) and measures text→image and image→text retrieval through Qdrant the way
the paper this project follows reports it (its Table III: Recall@1/5/10 on the Flickr8k test
split). Then it runs every query again with the :class:`~qdrant_xai.Explainer` in the loop
(the top hits of each query are explained before the next search) and checks that every
ranking is identical, ids and scores bit for bit (:mod:`qdrant_xai.eval.invariance`).

Use::

    from qdrant_xai.eval import evaluate, read_dataset
    dataset = read_dataset("Flickr8k/", split="test")
    report = evaluate(client, encoder, dataset, collection_name="eval_flickr8k")
    print(report.format_table())

Ranks are counted up to ``cap`` (default 1000) hits per query: a relevant item ranked
beyond the cap counts as a miss for Recall@K, adds nothing to average precision, and a
query whose first relevant item lies beyond it gets rank ``cap + 1`` for the median. When a
direction has at most ``cap`` candidates every rank is exact.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import DatasetError, ImageLoadError
from qdrant_xai.eval.datasets import DEFAULT_CAP, RetrievalDataset
from qdrant_xai.eval.invariance import Invariance, PassResult, ranking_key
from qdrant_xai.eval.queries import (
    DIRECTION_LABELS,
    Direction,
    DirectionPlan,
    indexed_sources,
    plan_directions,
)
from qdrant_xai.eval.report import EvaluationReport
from qdrant_xai.images.load import LoadedImage, load_image
from qdrant_xai.progress import progress_bar
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.codec import Codec
from qdrant_xai.storage.indexer import ImageRecord, Indexer
from qdrant_xai.storage.schema import Profile, image_point_id, text_point_id

__all__ = [
    "DEFAULT_KS",
    "DirectionMetrics",
    "average_precision",
    "evaluate",
    "summarize_ranks",
]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


# -- metrics ----------------------------------------------------------------------------


def average_precision(positions: Sequence[int], n_relevant: int) -> float:
    """Average precision of one ranking.

    Args:
        positions: 1-based ranks of the relevant items that were retrieved, ascending.
            Relevant items not retrieved (beyond the cap) are simply absent.
        n_relevant: how many relevant items exist (the denominator).

    Returns:
        ``sum(i / positions[i-1]) / n_relevant``: precision at each relevant item's rank,
        averaged over all relevant items (missing ones count 0).
    """
    if n_relevant < 1:
        raise ValueError("n_relevant must be at least 1")
    ranks = sorted(positions)
    return sum((i + 1) / rank for i, rank in enumerate(ranks)) / n_relevant


@dataclass(frozen=True)
class DirectionMetrics:
    """Retrieval quality in one direction.

    Attributes:
        direction: ``"text_to_image"`` or ``"image_to_text"``.
        queries: how many queries were run.
        candidates: how many points each query ranks (images, or captions).
        cap: ranks counted per query (``min(cap, candidates)`` hits were requested).
        recall: Recall@K by K: share of queries with a relevant item in the top K.
        mean_ap: mean average precision (all relevant items of a query count).
        median_rank: median rank of each query's first relevant item (``cap + 1`` when
            none is within the cap).
        misses: queries with no relevant item within the cap.
    """

    direction: str
    queries: int
    candidates: int
    cap: int
    recall: dict[int, float]
    mean_ap: float
    median_rank: float
    misses: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recall"] = {f"R@{k}": v for k, v in self.recall.items()}
        return data


def summarize_ranks(
    positions: Sequence[Sequence[int]],
    n_relevant: Sequence[int],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    cap: int,
    direction: str = "",
    candidates: int | None = None,
) -> DirectionMetrics:
    """Recall@K, mAP and median rank from the ranks of each query's relevant items.

    Args:
        positions: per query, the 1-based ranks (``<= cap``) of its relevant items found.
        n_relevant: per query, how many relevant items it has.
        ks: the K of Recall@K.
        cap: ranks were counted up to ``cap``; a query without a relevant item within it
            ranks ``cap + 1`` for the median.
        direction, candidates: recorded in the result.
    """
    if len(positions) != len(n_relevant):
        raise ValueError("positions and n_relevant must have one entry per query")
    if not positions:
        raise ValueError("no queries")
    firsts = np.array([min(p) if p else cap + 1 for p in positions], dtype=np.float64)
    recall = {k: float(np.mean(firsts <= k)) for k in ks}
    aps = [average_precision(p, n) for p, n in zip(positions, n_relevant, strict=True)]
    return DirectionMetrics(
        direction=direction,
        queries=len(positions),
        candidates=candidates if candidates is not None else cap,
        cap=cap,
        recall=recall,
        mean_ap=float(np.mean(aps)),
        median_rank=float(np.median(firsts)),
        misses=int(np.sum(firsts > cap)),
    )


# -- the evaluation ---------------------------------------------------------------------


def evaluate(
    client: QdrantClient,
    encoder: ClipEncoder,
    dataset: RetrievalDataset,
    *,
    collection_name: str,
    reuse: bool = True,
    explain: bool = True,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 32,
    cap: int = DEFAULT_CAP,
    explain_top: int = 10,
    heatmap_method: str = "decomposition",
    word_method: str | None = None,
    codec: Codec = "fp16",
    profile: Profile = "standard",
    exact: bool = True,
    progress: bool = False,
    retry: RetryPolicy | None = None,
) -> EvaluationReport:
    """Indexes ``dataset`` and measures text→image and image→text retrieval through Qdrant.

    Every caption is a text→image query whose relevant image is its own; every image is an
    image→text query whose relevant items are its captions. Queries are embedded in chunks
    of ``batch_size`` and sent with ``query_batch_points``. With ``explain``, the same
    queries run again, and after each chunk's search the top ``explain_top`` hits of each
    query are explained (the explainer reads stored features, runs the encoder and reads
    Qdrant) before the next chunk is searched; every ranking must come back identical (see
    :class:`Invariance`).

    Memory: the scores of every query are kept for the comparison, 8 bytes per query and
    rank (``min(cap, candidates)`` ranks).

    Args:
        client: any ``QdrantClient``.
        encoder: the CLIP model to evaluate.
        dataset: from :func:`read_dataset`.
        collection_name: where the dataset is indexed. Points of other images in it are
            filtered out of the rankings.
        reuse: keep points already indexed with this model (only new ones are encoded);
            False deletes the dataset's points first and indexes them again (other points
            of the collection are left alone).
        explain: run the explained pass and the invariance check.
        ks: the K of Recall@K.
        batch_size: images per indexing batch, and queries per search batch.
        cap: ranks counted per query (see the module docstring).
        explain_top: hits explained per query.
        heatmap_method, word_method: the explanation methods (``word_method=None``: the
            model's default, ``prefix`` for CLIP, ``tokens`` for SigLIP).
        codec, profile: how features are stored when indexing (see :class:`Indexer`).
        exact: exact (brute force) search, so that the metrics are the model's; False
            searches through the HNSW index as a deployment would.
        progress: show progress bars.
        retry: how Qdrant calls are retried on transient failures (default
            :class:`~qdrant_xai.RetryPolicy`); every call here is a read or an idempotent
            write.

    Raises:
        DatasetError: no image of the dataset could be indexed.
    """
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1:
        raise ValueError("ks must be positive integers")
    if cap < ks[-1]:
        raise ValueError(f"cap ({cap}) must be at least the largest K ({ks[-1]})")
    if batch_size < 1 or explain_top < 1:
        raise ValueError("batch_size and explain_top must be at least 1")

    retry = retry or RetryPolicy()
    word_method = word_method or encoder.family.default_word_method
    started = time.perf_counter()
    exists = retry.call(
        client.collection_exists, collection_name, what="checking the collection", client=client
    )
    if not reuse and exists:
        ids = [image_point_id(str(item.path)) for item in dataset.items] + [
            text_point_id(c, str(item.path)) for item in dataset.items for c in item.captions
        ]
        for chunk in _chunks(ids, 1000):
            retry.call(
                client.delete,
                collection_name,
                what=f"deleting {len(chunk)} points before re-indexing",
                client=client,
                points_selector=models.PointIdsList(points=list(chunk)),
            )
    indexer = Indexer(
        client,
        encoder,
        collection_name=collection_name,
        codec=codec,
        batch_size=batch_size,
        profile=profile,
        retry=retry,
    )
    summary = indexer.index(
        (ImageRecord(str(item.path), item.captions) for item in dataset.items),
        total=dataset.n_images,
        progress=progress,
    )
    index_s = time.perf_counter() - started

    sources = [str(i.path) for i in dataset.items]
    present = indexed_sources(client, collection_name, sources, retry)
    failed = dict(summary.failed)
    items = [item for item in dataset.items if str(item.path) in present]
    excluded = [
        (item.name, failed.get(str(item.path), "not in the collection after indexing"))
        for item in dataset.items
        if str(item.path) not in present
    ]
    if not items:
        raise DatasetError(
            dataset.path,
            f"none of the {dataset.n_images} images could be indexed (first failure: "
            f"{excluded[0][1] if excluded else 'unknown'})",
        )
    plans = plan_directions(client, collection_name, items, retry)
    search_params = models.SearchParams(exact=True) if exact else None
    invariance = Invariance(heatmap_method=heatmap_method, word_method=word_method, top=explain_top)

    def search(plan: DirectionPlan, vectors: np.ndarray) -> list[list[models.ScoredPoint]]:
        requests = [
            models.QueryRequest(
                query=vector.tolist(),
                using=plan.using,
                limit=min(cap, plan.candidates),
                filter=plan.filter,
                params=search_params,
                with_payload=False,
                with_vector=False,
            )
            for vector in vectors
        ]
        with warnings.catch_warnings():
            # the embedded backend always searches exactly and says so for every request
            warnings.filterwarnings("ignore", message="Local mode performs exact")
            responses = retry.call(
                client.query_batch_points,
                collection_name,
                what=f"a batch of {len(requests)} searches",
                client=client,
                requests=requests,
            )
        return [response.points for response in responses]

    def run_pass(plan: DirectionPlan, explainer: Any) -> tuple[PassResult, float]:
        result = PassResult()
        explain_s = 0.0
        label = f"{DIRECTION_LABELS[plan.direction]}{', explained' if explainer else ''}"
        bar = progress_bar(total=len(plan.queries), unit="query", desc=label, enabled=progress)
        for number, chunk in enumerate(_chunks(plan.queries, batch_size)):
            loaded: list[LoadedImage] = []
            if plan.direction == "text_to_image":
                vectors = encoder.embed_texts([q.text or "" for q in chunk])
            else:
                loaded = [_load(q.image) for q in chunk]
                vectors = encoder.embed_images(loaded)
            result.record_vectors(vectors)
            rankings = search(plan, vectors)
            if explainer is None and number == 0:  # the control: the same searches again
                invariance.backend_repeatable &= [ranking_key(r) for r in rankings] == [
                    ranking_key(r) for r in search(plan, vectors)
                ]
            for query, points in zip(chunk, rankings, strict=True):
                result.record(query, points)
            if explainer is not None:
                tick = time.perf_counter()
                kind: Literal["image", "text"] = (
                    "image" if plan.direction == "text_to_image" else "text"
                )
                for row, (query, points) in enumerate(zip(chunk, rankings, strict=True)):
                    hits = points[:explain_top]
                    before = ranking_key(hits)
                    explanations = explainer.explain(
                        query.text if query.text is not None else loaded[row], hits, hit_kind=kind
                    )
                    invariance.explained_queries += 1
                    invariance.explained_hits += len(explanations)
                    if not (
                        ranking_key(hits) == before
                        and ranking_key([e.hit for e in explanations]) == before
                    ):
                        invariance.hits_untouched = False
                explain_s += time.perf_counter() - tick
            bar.update(len(chunk))
        bar.close()
        return result, explain_s

    tick = time.perf_counter()
    baseline = {plan.direction: run_pass(plan, None)[0] for plan in plans}
    timing = {"index_s": index_s, "search_s": time.perf_counter() - tick}
    metrics = _metrics(baseline, plans, ks, cap)

    explained_metrics: dict[str, DirectionMetrics] | None = None
    if explain:
        from qdrant_xai.explain import Explainer

        explainer = Explainer(
            encoder,
            client,
            collection_name=collection_name,
            image_roots=[dataset.image_root],
            heatmap_method=heatmap_method,
            word_method=word_method,
            retry=retry,
        )
        tick = time.perf_counter()
        explained: dict[Direction, PassResult] = {}
        explain_s = 0.0
        for plan in plans:
            explained[plan.direction], seconds = run_pass(plan, explainer)
            explain_s += seconds
        timing["explained_pass_s"] = time.perf_counter() - tick
        timing["explain_s"] = explain_s
        explained_metrics = _metrics(explained, plans, ks, cap)
        for plan in plans:
            invariance.compare(plan, baseline[plan.direction], explained[plan.direction])
    return EvaluationReport(
        dataset=dataset,
        collection=collection_name,
        model=encoder.model_id,
        fingerprint=encoder.fingerprint.key,
        ks=ks,
        metrics=metrics,
        explained_metrics=explained_metrics,
        invariance=invariance if explain else None,
        indexing={
            "indexed_images": summary.indexed_images,
            "indexed_texts": summary.indexed_texts,
            "unchanged": summary.unchanged,
            "failed": [list(pair) for pair in summary.failed],
        },
        timing=timing,
        settings={
            "ks": list(ks),
            "cap": cap,
            "exact": exact,
            "batch_size": batch_size,
            "explain": explain,
            "explain_top": explain_top,
            "heatmap_method": heatmap_method,
            "word_method": word_method,
            "codec": codec,
            "profile": profile,
            "filtered": {plan.direction: plan.filter is not None for plan in plans},
            "machine": _machine(encoder),
        },
        excluded=excluded,
    )


def _metrics(
    results: dict[Direction, PassResult],
    plans: list[DirectionPlan],
    ks: tuple[int, ...],
    cap: int,
) -> dict[str, DirectionMetrics]:
    return {
        plan.direction: summarize_ranks(
            results[plan.direction].positions,
            [len(q.relevant) for q in plan.queries],
            ks=ks,
            cap=min(cap, plan.candidates),
            direction=plan.direction,
            candidates=plan.candidates,
        )
        for plan in plans
    }


def _load(path: Path | None) -> LoadedImage:
    if path is None:  # pragma: no cover - image queries always have a path
        raise ValueError("image query without a path")
    try:
        return load_image(path)
    except ImageLoadError as exc:  # pragma: no cover - it was indexed a moment ago
        raise DatasetError(path, f"cannot read the query image: {exc.reason}") from exc


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _machine(encoder: ClipEncoder) -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(encoder.device),
        "dtype": str(encoder.dtype).removeprefix("torch."),
    }
