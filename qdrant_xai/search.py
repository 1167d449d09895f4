"""Searching a collection by text or by image, and scoring given points as a search would.

Each search is one ``query_points(..., using=...)`` call; the stored feature maps are left
out of the response (they are fetched later, only for the hits that are explained).
:class:`Searcher` talks to a ``QdrantClient``, :class:`AsyncSearcher` to an
``AsyncQdrantClient`` (the query is encoded in a worker thread); both build the same
requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from qdrant_client import AsyncQdrantClient, QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder, ImageInput
from qdrant_xai.encoding.text_limits import TextLimits
from qdrant_xai.errors import CollectionError, PointNotFoundError, QdrantXaiError
from qdrant_xai.images.load import LoadedImage, load_image
from qdrant_xai.images.query import bounded_query_image
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.detect import aresolve_collection, resolve_collection
from qdrant_xai.storage.layouts import AUTO, CollectionLayout, LayoutSpec, layout_named
from qdrant_xai.storage.schema import PayloadKeys, check_query_dimension, parse_point_id

__all__ = ["AsyncSearcher", "Searcher", "light_payload"]

HitKind = Literal["image", "text"]
PointId = int | str  # as parse_point_id returns them


def light_payload() -> models.PayloadSelectorExclude:
    """Payload selector returning everything but the stored feature maps."""
    return models.PayloadSelectorExclude(exclude=list(PayloadKeys.HEAVY))


class _Requests:
    """What both searchers share: the collection, its layout, the encoder, and the
    arguments of every request they send."""

    def __init__(
        self,
        encoder: ClipEncoder,
        collection_name: str,
        layout: LayoutSpec,
        retry: RetryPolicy | None,
        text_limits: TextLimits | None,
    ) -> None:
        if isinstance(layout, str) and layout != AUTO:
            layout_named(layout)  # an unknown preset fails here, not at the first search
        self.encoder = encoder
        self.collection_name = collection_name
        #: the layout as given: a preset name, a layout, or "auto"/None (detected)
        self.layout = layout
        self.retry = retry or RetryPolicy()
        self.text_limits = text_limits or TextLimits()
        # the collection's info and resolved layout, read once per collection name
        self._collections: dict[str, tuple[models.CollectionInfo, CollectionLayout]] = {}

    def _check(self, query: str | ImageInput) -> None:
        """Refuses an empty or over-long text query, before any Qdrant call or model work."""
        if isinstance(query, str):
            if not query.strip():
                raise QdrantXaiError("the text query is empty; say what the hits should show")
            self.text_limits.check(query, what="the text query")

    def _vector(self, query: str | ImageInput) -> list[float]:
        self._check(query)
        if isinstance(query, str):
            return self.encoder.embed_texts([query])[0].tolist()
        # scaled down as the explainer scales it: search and explanation see the same query
        loaded = query if isinstance(query, LoadedImage) else load_image(query)
        return self.encoder.embed_images([bounded_query_image(loaded)])[0].tolist()

    def _using(
        self, info: models.CollectionInfo, layout: CollectionLayout, hit_kind: HitKind
    ) -> str | None:
        """The vector hits of ``hit_kind`` are searched with, checked against the model."""
        using = layout.using(hit_kind)
        check_query_dimension(
            info, self.collection_name, using, dim=self.encoder.dim, model=self.encoder.model_id
        )
        return using

    def _search_args(
        self,
        vector: list[float],
        using: str | None,
        *,
        limit: int,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
        search_params: models.SearchParams | None = None,
    ) -> dict[str, Any]:
        return {
            "what": f"search in collection {self.collection_name!r}",
            "query": vector,
            "using": using,
            "limit": limit,
            "query_filter": query_filter,
            "score_threshold": score_threshold,
            "search_params": search_params,
            "with_payload": light_payload(),
        }

    def _points_args(self, ids: list[PointId]) -> dict[str, Any]:
        return {
            "what": f"reading {len(ids)} points of {self.collection_name!r}",
            "ids": ids,
            "with_payload": light_payload(),
        }

    def _kinds(
        self,
        layout: CollectionLayout,
        ids: list[PointId],
        records: Sequence[models.Record],
        hit_kind: HitKind | None,
    ) -> dict[str, HitKind]:
        """The kind to score each point as, by id; missing ids raise."""
        by_id = {str(r.id): r for r in records}
        missing = [i for i in ids if str(i) not in by_id]
        if missing:
            raise PointNotFoundError(
                f"no point {', '.join(map(str, missing))} in collection "
                f"{self.collection_name!r}; use the id of a search result",
                missing,
            )
        return {
            key: hit_kind or layout.kind_of(record.payload or {}) for key, record in by_id.items()
        }

    def _ordered(
        self,
        layout: CollectionLayout,
        ids: list[PointId],
        kinds: dict[str, HitKind],
        found: Sequence[models.ScoredPoint],
    ) -> list[models.ScoredPoint]:
        by_id = {str(p.id): p for p in found}
        for i in ids:
            if str(i) not in by_id:
                using = layout.using(kinds[str(i)])
                raise CollectionError(
                    f"point {i} has no {using or '(unnamed)'!r} vector in collection "
                    f"{self.collection_name!r} to score it as {kinds[str(i)]!r}; is the layout "
                    f"({layout.name}) right?"
                )
        return [by_id[str(i)] for i in ids]

    def _score_args(
        self, vector: list[float], using: str | None, ids: list[PointId]
    ) -> dict[str, Any]:
        return {
            "what": f"scoring {len(ids)} points in {self.collection_name!r}",
            "query": vector,
            "using": using,
            "limit": len(ids),
            "query_filter": models.Filter(must=[models.HasIdCondition(has_id=list(ids))]),
            "with_payload": light_payload(),
        }


class Searcher(_Requests):
    """Text→image, image→text and image→image search over a collection.

    Setup::

        from qdrant_xai import ClipEncoder, Searcher
        searcher = Searcher(client, encoder, collection_name="photos")

    Use::

        hits = searcher.search_images("a red car", limit=5)      # text → image
        hits = searcher.search_texts(Path("car.jpg"), limit=5)   # image → text
        hits = searcher.score_points("a red car", [point_id])    # as a search would score it

    Results are plain ``ScoredPoint``s, as ``client.query_points`` returns them.

    Args:
        client: any ``QdrantClient``.
        encoder: the CLIP model the collection was built with.
        collection_name: the collection to search.
        layout: where the collection keeps its vectors: ``"auto"`` (default) detects the
            tool that wrote it; or a preset such as ``"langchain"``, or a
            :class:`~qdrant_xai.storage.layouts.CollectionLayout` (see
            :mod:`qdrant_xai.storage.layouts`). Resolved once per collection, at the first
            request.
        retry: how Qdrant calls are retried (default: :class:`RetryPolicy` defaults).
        text_limits: bounds on a text query (default :class:`TextLimits`); a longer one
            raises :class:`~qdrant_xai.errors.InputTooLargeError` before any model work.
    """

    def __init__(
        self,
        client: QdrantClient,
        encoder: ClipEncoder,
        *,
        collection_name: str,
        layout: LayoutSpec = AUTO,
        retry: RetryPolicy | None = None,
        text_limits: TextLimits | None = None,
    ) -> None:
        super().__init__(encoder, collection_name, layout, retry, text_limits)
        self.client = client

    def search_images(
        self,
        query: str | ImageInput,
        *,
        limit: int = 10,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[models.ScoredPoint]:
        """Image hits for a text query, or for an image query (image→image)."""
        return self.search(
            query,
            hit_kind="image",
            limit=limit,
            query_filter=query_filter,
            score_threshold=score_threshold,
        )

    def search_texts(
        self,
        query: str | ImageInput,
        *,
        limit: int = 10,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[models.ScoredPoint]:
        """Text hits for an image query (image→text), or for a text query."""
        return self.search(
            query,
            hit_kind="text",
            limit=limit,
            query_filter=query_filter,
            score_threshold=score_threshold,
        )

    def search(
        self,
        query: str | ImageInput,
        *,
        hit_kind: HitKind = "image",
        limit: int = 10,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
        search_params: models.SearchParams | None = None,
    ) -> list[models.ScoredPoint]:
        """Hits of kind ``hit_kind`` for a text or image query, best first."""
        self._check(query)
        using = self._using(*self._collection(), hit_kind)
        response = self.retry.call(
            self.client.query_points,
            self.collection_name,
            client=self.client,
            **self._search_args(
                self._vector(query),
                using,
                limit=limit,
                query_filter=query_filter,
                score_threshold=score_threshold,
                search_params=search_params,
            ),
        )
        return response.points

    def score_points(
        self,
        query: str | ImageInput,
        ids: Sequence[str | int],
        *,
        hit_kind: HitKind | None = None,
    ) -> list[models.ScoredPoint]:
        """The points ``ids`` scored against ``query`` exactly as a search would score
        them (Qdrant computes the scores), in the given order: any point can be explained,
        not only those a search returned.

        Args:
            hit_kind: score every point as an image or a text; default: each point's own
                kind (as qdrant-xai recorded it, or what its payload holds).

        Raises:
            PointIdError: an id that is not a Qdrant point id.
            PointNotFoundError: an id that is not in the collection.
        """
        self._check(query)
        point_ids = [parse_point_id(i) for i in ids]
        info, layout = self._collection()
        records = self.retry.call(
            self.client.retrieve,
            self.collection_name,
            client=self.client,
            **self._points_args(point_ids),
        )
        kinds = self._kinds(layout, point_ids, records, hit_kind)
        vector = self._vector(query)
        found: list[models.ScoredPoint] = []
        for kind in sorted(set(kinds.values())):
            group = [i for i in point_ids if kinds[str(i)] == kind]
            response = self.retry.call(
                self.client.query_points,
                self.collection_name,
                client=self.client,
                **self._score_args(vector, self._using(info, layout, kind), group),
            )
            found += response.points
        return self._ordered(layout, point_ids, kinds, found)

    def resolved_layout(self) -> CollectionLayout:
        """The collection's layout, resolved (detected for ``"auto"``) at the first call.

        Raises:
            CollectionError: the collection does not exist, or its writer was not
                recognised (pass ``layout=``).
        """
        return self._collection()[1]

    def _collection(self) -> tuple[models.CollectionInfo, CollectionLayout]:
        name = self.collection_name
        if name not in self._collections:
            self._collections[name] = resolve_collection(
                self.client, name, self.layout, retry=self.retry
            )
        return self._collections[name]


class AsyncSearcher(_Requests):
    """:class:`Searcher` for an ``AsyncQdrantClient``: the same methods, awaited; the query
    is encoded in a worker thread so the event loop keeps running.

    Setup::

        from qdrant_client import AsyncQdrantClient
        from qdrant_xai.search import AsyncSearcher
        searcher = AsyncSearcher(AsyncQdrantClient(url=...), encoder, collection_name="photos")

    Use::

        hits = await searcher.search_images("a red car", limit=5)
    """

    def __init__(
        self,
        client: AsyncQdrantClient,
        encoder: ClipEncoder,
        *,
        collection_name: str,
        layout: LayoutSpec = AUTO,
        retry: RetryPolicy | None = None,
        text_limits: TextLimits | None = None,
    ) -> None:
        super().__init__(encoder, collection_name, layout, retry, text_limits)
        self.client = client

    async def search_images(
        self,
        query: str | ImageInput,
        *,
        limit: int = 10,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[models.ScoredPoint]:
        """Image hits for a text query, or for an image query (image→image)."""
        return await self.search(
            query,
            hit_kind="image",
            limit=limit,
            query_filter=query_filter,
            score_threshold=score_threshold,
        )

    async def search_texts(
        self,
        query: str | ImageInput,
        *,
        limit: int = 10,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[models.ScoredPoint]:
        """Text hits for an image query (image→text), or for a text query."""
        return await self.search(
            query,
            hit_kind="text",
            limit=limit,
            query_filter=query_filter,
            score_threshold=score_threshold,
        )

    async def search(
        self,
        query: str | ImageInput,
        *,
        hit_kind: HitKind = "image",
        limit: int = 10,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
        search_params: models.SearchParams | None = None,
    ) -> list[models.ScoredPoint]:
        """Hits of kind ``hit_kind`` for a text or image query, best first."""
        self._check(query)
        (info, layout), vector = await asyncio.gather(
            self._collection(), asyncio.to_thread(self._vector, query)
        )
        response = await self.retry.acall(
            self.client.query_points,
            self.collection_name,
            client=self.client,
            **self._search_args(
                vector,
                self._using(info, layout, hit_kind),
                limit=limit,
                query_filter=query_filter,
                score_threshold=score_threshold,
                search_params=search_params,
            ),
        )
        return response.points

    async def score_points(
        self,
        query: str | ImageInput,
        ids: Sequence[str | int],
        *,
        hit_kind: HitKind | None = None,
    ) -> list[models.ScoredPoint]:
        """Async :meth:`Searcher.score_points`."""
        self._check(query)
        point_ids = [parse_point_id(i) for i in ids]
        (info, layout), vector = await asyncio.gather(
            self._collection(), asyncio.to_thread(self._vector, query)
        )
        records = await self.retry.acall(
            self.client.retrieve,
            self.collection_name,
            client=self.client,
            **self._points_args(point_ids),
        )
        kinds = self._kinds(layout, point_ids, records, hit_kind)
        found: list[models.ScoredPoint] = []
        for kind in sorted(set(kinds.values())):
            group = [i for i in point_ids if kinds[str(i)] == kind]
            response = await self.retry.acall(
                self.client.query_points,
                self.collection_name,
                client=self.client,
                **self._score_args(vector, self._using(info, layout, kind), group),
            )
            found += response.points
        return self._ordered(layout, point_ids, kinds, found)

    async def resolved_layout(self) -> CollectionLayout:
        """Async :meth:`Searcher.resolved_layout`."""
        return (await self._collection())[1]

    async def _collection(self) -> tuple[models.CollectionInfo, CollectionLayout]:
        name = self.collection_name
        if name not in self._collections:
            self._collections[name] = await aresolve_collection(
                self.client, name, self.layout, retry=self.retry
            )
        return self._collections[name]
