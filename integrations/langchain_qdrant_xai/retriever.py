"""A LangChain retriever over a qdrant-xai collection that explains every hit it returns.

Thin over the core: :class:`~qdrant_xai.search.Searcher` / :class:`~qdrant_xai.search.AsyncSearcher`
search and score points, :class:`~qdrant_xai.Explainer` explains them (from records this
module reads with the async client, when there is one), and
:class:`~langchain_qdrant_xai.documents.DocumentShaper` turns both into Documents.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr, model_validator
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from langchain_qdrant_xai.collection import CollectionParts
from langchain_qdrant_xai.documents import (
    caption_ids,
    caption_request,
    caption_texts,
)
from qdrant_xai import (
    ClipEncoder,
    CollectionLayout,
    Explainer,
    ImageLimits,
    LoadedImage,
    PayloadKeys,
    TextLimits,
)
from qdrant_xai.explain import HEATMAP_METHODS, WORD_METHODS
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.images.query import load_query_image
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.detect import aresolve_layout, resolve_layout
from qdrant_xai.storage.layouts import layout_named

__all__ = ["QdrantXaiRetriever"]

HitKind = Literal["image", "text"]
QueryKind = Literal["text", "image"]
Query = str | LoadedImage  # a text query, or a decoded image query

_CALL_OPTIONS = frozenset({"k", "filter", "query_filter", "score_threshold", "search_params"})
#: the query side of each searched kind: texts find images, images find texts
_QUERY_KIND: dict[HitKind, QueryKind] = {"image": "text", "text": "image"}


class QdrantXaiRetriever(BaseRetriever):
    """Retrieves from a Qdrant collection, with an explanation of every hit in its
    metadata: images by text (or texts by image) from a collection qdrant-xai wrote, and
    the documents of a collection langchain-qdrant, LlamaIndex or FastEmbed wrote.

    Setup::

        from qdrant_client import QdrantClient
        from qdrant_xai import ClipEncoder
        from langchain_qdrant_xai import QdrantXaiRetriever

        retriever = QdrantXaiRetriever(
            client=QdrantClient(path="./qdrant_data"),
            encoder=ClipEncoder.from_pretrained("openai/clip-vit-base-patch32"),
            collection_name="photos",
            k=4,
            image_roots=["photos/"],     # lets include_image / include_overlay read the hits
            include_image=True,          # the hit image as a data URI, for multimodal models
        )

        # a drop-in for QdrantVectorStore(client, "docs", embeddings).as_retriever()
        # on a collection langchain-qdrant wrote with these CLIP embeddings
        docs_retriever = QdrantXaiRetriever(client=client, encoder=encoder,
                                            collection_name="docs", image_roots=["photos/"])

    Use::

        docs = retriever.invoke("a red car")            # or: await retriever.ainvoke(...)
        for doc in docs:
            why = doc.metadata["explanation"]
            print(doc.metadata["score"], doc.page_content, why["top_words"], why["peak"])

        retriever.invoke("a red car", k=10)             # per-call k, filter, score_threshold

        texts = QdrantXaiRetriever(client=client, encoder=encoder, collection_name="photos",
                                   hit_kind="text")
        texts.invoke("data:image/png;base64,...")       # or a local path, or raw base64

        retriever.explain_points([point_id], "a red car")   # any point, not only hits

    Each hit becomes one :class:`~langchain_core.documents.Document`, in Qdrant's order,
    with Qdrant's scores. On a collection another tool wrote, it is the Document that
    tool's retriever returns (langchain-qdrant: the same ``page_content`` and ``metadata``),
    with the keys below added beside the stored ones (a stored key of the same name is
    kept; ours then goes under ``xai_<key>``). On a qdrant-xai collection ``page_content``
    is the hit's text; for an image hit its first caption, else its source.

    ``metadata`` holds ``_id`` and ``_collection_name`` (as langchain-qdrant names them),
    ``score`` (Qdrant's), ``rank`` (0-based), ``kind`` (``"image"`` or ``"text"``), on
    qdrant-xai collections ``source``, ``caption`` (image hits) and ``image_id`` (captions),
    and for the explained hits ``explanation`` (``peak`` is 0-based)::

        {"status": "ok", "error": None,
         "top_words": [[word, score], ...], "words": [[word, score, [start, end]], ...],
         "text": the attributed text, "words_side": "query" | "hit", "word_method": ...,
         "heatmap": [[...], ...] (rows x cols, signed), "heatmap_side": "hit" | "query",
         "heatmap_method": ..., "grid": [rows, cols], "peak": [row, col],
         "crop_box": [x0, y0, x1, y1], "overlay": "data:image/png;base64,..." (include_overlay),
         "grounding": {...} (grounding=True), "rationales": [...] (rationales=True)}

    A hit that cannot be explained (its image may not be read, ...) is still returned, with
    ``{"status": "failed", "error": {"type": ..., "message": why}}`` as its explanation
    (``errors="raise"``: the first such reason is raised instead).

    ``metadata["image"]`` carries the hit image as a PNG data URI when ``include_image``
    is set (image hits). An image that cannot be read for the overlay or ``image`` is
    skipped with its reason under ``metadata["image_error"]``; retrieval goes on.

    Args:
        client: a ``QdrantClient`` for :meth:`invoke`.
        async_client: an ``AsyncQdrantClient`` for :meth:`ainvoke` (search and fetch are
            awaited, the CPU work runs in a thread). Without it, ``ainvoke`` runs the
            sync path in a thread.
        encoder: the CLIP encoder the collection was indexed with.
        collection_name: the collection to search.
        layout: which tool wrote the collection and where it keeps vectors, images and
            texts: ``"auto"`` (default) detects it on first use; a preset name
            (``"qdrant-xai"``, ``"langchain"``, ``"llamaindex"``, ``"fastembed"``,
            ``"qdrant-tutorial"``) or a :class:`~qdrant_xai.CollectionLayout` says it.
        hit_kind: what is searched: ``"image"`` hits for a text query, or ``"text"`` hits
            (captions) for an image query given as a data URI, raw base64 or a path (on a
            collection with one vector for both, it only says what the query is).
        k: number of hits.
        explain: attach explanations.
        explain_top_n: explain only the first n hits (``None``: all).
        include_overlay: add the heatmap drawn over its image as a PNG data URI.
        include_image: add the image hit itself as a PNG data URI (``metadata["image"]``).
        image_max_side: images and overlays put in metadata are shrunk to this many pixels
            on their long side (``None``: full size).
        image_roots: folders the hits' images may be read from (payload sources are not
            trusted); needed by ``include_image``/``include_overlay``, by methods that read
            pixels and by image hits without stored features.
        query_image_roots: folders an image query given as a path may be read from.
            ``None`` (default) reads any local path: the query is the application's own
            input. Give a list (possibly empty) when queries come from users or models.
        image_limits: decoding bounds for every image read.
        text_limits: bounds on a text query (:class:`~qdrant_xai.TextLimits`); a longer one
            raises :class:`~qdrant_xai.InputTooLargeError` before any search or model work.
        heatmap_method, word_method: explanation methods by name (see ``qdrant_xai.explain``;
            ``word_method=None``: the model's default, ``prefix`` for CLIP, ``tokens`` for
            SigLIP).
        grounding, rationales: add word-to-region grounding / rationales to explanations.
        top_words: how many words ``top_words`` lists.
        sidecar, write_sidecar: where the features of a collection another tool wrote are
            kept (``"auto"``: ``<collection>__xai``; a name; ``False``: none) and whether
            explaining stores them there, as :class:`~qdrant_xai.Explainer` takes them.
        errors: ``"report"`` (default) puts a failed hit's reason in its metadata;
            ``"raise"`` raises the first one (as :meth:`~qdrant_xai.Explainer.explain`).
        query_filter, score_threshold, search_params: passed to ``query_points``.
        retry: how Qdrant calls (sync and async) are retried on transient failures
            (default: :class:`~qdrant_xai.RetryPolicy` defaults); a server that stays down
            raises one :class:`~qdrant_xai.QdrantUnavailableError` naming its URL.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    client: QdrantClient | None = None
    async_client: AsyncQdrantClient | None = None
    encoder: ClipEncoder
    collection_name: str
    layout: str | CollectionLayout | None = "auto"
    hit_kind: HitKind = "image"
    k: int = Field(default=4, ge=1)
    explain: bool = True
    explain_top_n: int | None = Field(default=None, ge=0)
    include_overlay: bool = False
    include_image: bool = False
    image_max_side: int | None = Field(default=512, ge=8)
    image_roots: list[str | Path] = Field(default_factory=list)
    query_image_roots: list[str | Path] | None = None
    image_limits: ImageLimits = Field(default_factory=ImageLimits)
    text_limits: TextLimits = Field(default_factory=TextLimits)
    heatmap_method: str = "decomposition"
    word_method: str | None = None
    grounding: bool = False
    rationales: bool = False
    top_words: int = Field(default=3, ge=0)
    sidecar: str | bool = "auto"
    write_sidecar: bool = True
    errors: Literal["report", "raise"] = "report"
    query_filter: models.Filter | None = None
    score_threshold: float | None = None
    search_params: models.SearchParams | None = None
    retry: RetryPolicy | None = None

    _retry: RetryPolicy = PrivateAttr()
    _images: ImageSourcePolicy = PrivateAttr()
    _parts: CollectionParts | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _configure(self) -> QdrantXaiRetriever:
        if self.client is None and self.async_client is None:
            raise ValueError(
                "QdrantXaiRetriever needs a Qdrant client: pass client=QdrantClient(...) "
                "and/or async_client=AsyncQdrantClient(...)"
            )
        if (
            (self.include_image or self.include_overlay)
            and self.hit_kind == "image"
            and not self.image_roots
        ):
            raise ValueError(
                "include_image and include_overlay read the hits' images: pass "
                "image_roots=[folder, ...] with the folders they were indexed from"
            )
        # unknown method and preset names raise here (both are ValueErrors)
        HEATMAP_METHODS.create(self.heatmap_method)
        if self.word_method is not None:
            WORD_METHODS.create(self.word_method)
        if self.layout is not None and self.layout != "auto":
            layout_named(self.layout)
        self._retry = self.retry or RetryPolicy()
        self._images = ImageSourcePolicy.from_roots(self.image_roots, limits=self.image_limits)
        return self

    # -- LangChain entry points -----------------------------------------------------------

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        parts = self._sync_parts()
        searcher = parts.searcher
        assert searcher is not None
        options = self._search_options(kwargs)
        parsed = self._parse_query(query, _QUERY_KIND[self.hit_kind])
        hits = searcher.search(parsed, hit_kind=self.hit_kind, **options)
        explained = hits[: self._n_explained(len(hits))]
        return self._documents(parts, parsed, hits, explained, self.hit_kind)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.async_client is None:
            return await asyncio.to_thread(
                self._get_relevant_documents, query, run_manager=run_manager.get_sync(), **kwargs
            )
        parts = await self._async_parts()
        searcher = parts.asearcher
        assert searcher is not None
        options = self._search_options(kwargs)
        parsed = await asyncio.to_thread(self._parse_query, query, _QUERY_KIND[self.hit_kind])
        hits = await searcher.search(parsed, hit_kind=self.hit_kind, **options)
        explained = hits[: self._n_explained(len(hits))]
        return await self._adocuments(parts, parsed, hits, explained, self.hit_kind)

    # -- explaining given points ----------------------------------------------------------

    def explain_points(
        self,
        ids: Sequence[str | int],
        query: str,
        *,
        query_kind: QueryKind | None = None,
    ) -> list[Document]:
        """Documents explaining why the points ``ids`` match ``query``, in the given order.

        ``score`` is the point's score for the query exactly as a search would give it;
        ``rank`` is the position in ``ids``. Unlike a search, any point of the collection
        can be explained (an image by an image, a caption by a text).

        Args:
            query_kind: ``"text"`` or ``"image"`` (a data URI, raw base64 or a path); default:
                the query side of this retriever's ``hit_kind``.

        Raises:
            PointNotFoundError: an id that is not in the collection.
            PointIdError: an id that is not a Qdrant point id (also a ``ValueError``).
        """
        parts = self._sync_parts()
        assert parts.searcher is not None
        parsed = self._parse_query(query, query_kind or _QUERY_KIND[self.hit_kind])
        hits = parts.searcher.score_points(parsed, ids)
        return self._documents(parts, parsed, hits, hits, None)

    async def aexplain_points(
        self,
        ids: Sequence[str | int],
        query: str,
        *,
        query_kind: QueryKind | None = None,
    ) -> list[Document]:
        """Async :meth:`explain_points` (on ``async_client``, else in a thread)."""
        if self.async_client is None:
            return await asyncio.to_thread(self.explain_points, ids, query, query_kind=query_kind)
        parts = await self._async_parts()
        assert parts.asearcher is not None
        kind = query_kind or _QUERY_KIND[self.hit_kind]
        parsed = await asyncio.to_thread(self._parse_query, query, kind)
        hits = await parts.asearcher.score_points(parsed, ids)
        return await self._adocuments(parts, parsed, hits, hits, None)

    # -- the collection's layout ----------------------------------------------------------

    def _sync_parts(self) -> CollectionParts:
        if self.client is None:
            raise ValueError(
                "this QdrantXaiRetriever has only an async_client: use ainvoke, or pass "
                "client=QdrantClient(...) as well"
            )
        with self._lock:  # batch() calls invoke from several threads
            if self._parts is None:
                layout = resolve_layout(
                    self.client, self.collection_name, self.layout, retry=self._retry
                )
                self._parts = CollectionParts.build(
                    self, layout, images=self._images, retry=self._retry
                )
            return self._parts

    async def _async_parts(self) -> CollectionParts:
        """The parts, the layout resolved on the async client (called with one only)."""
        if self._parts is None:
            assert self.async_client is not None
            layout = await aresolve_layout(
                self.async_client, self.collection_name, self.layout, retry=self._retry
            )
            if self._parts is None:  # another call may have resolved it meanwhile
                self._parts = CollectionParts.build(
                    self, layout, images=self._images, retry=self._retry
                )
        return self._parts

    # -- steps ----------------------------------------------------------------------------

    def _documents(
        self,
        parts: CollectionParts,
        query: Query,
        hits: list[models.ScoredPoint],
        explained: list[models.ScoredPoint],
        hit_kind: HitKind | None,
    ) -> list[Document]:
        """The hits as Documents, the first ones (``explained``) explained, on the sync
        client; ``hit_kind`` is the kind searched (``None``: each point's own)."""
        self._check_models(hits)
        assert self.client is not None
        ids = caption_ids(hits)
        captions = (
            self._retry.call(
                self.client.retrieve,
                self.collection_name,
                **caption_request(self.collection_name, ids),
            )
            if ids
            else []
        )
        return self._explained(parts, query, hits, captions, explained, None, hit_kind)

    async def _adocuments(
        self,
        parts: CollectionParts,
        query: Query,
        hits: list[models.ScoredPoint],
        explained: list[models.ScoredPoint],
        hit_kind: HitKind | None,
    ) -> list[Document]:
        """:meth:`_documents` on the async client: the captions and what explaining needs
        are read at once, then the explainer runs in a thread on those records."""
        self._check_models(hits)
        captions, records = await asyncio.gather(
            self._aread_captions(hits), self._aread_evidence(parts.explainer, explained)
        )
        return await asyncio.to_thread(
            self._explained, parts, query, hits, captions, explained, records, hit_kind
        )

    async def _aread_captions(self, hits: list[models.ScoredPoint]) -> list[models.Record]:
        ids = caption_ids(hits)
        if not ids or self.async_client is None:
            return []
        return await self._retry.acall(
            self.async_client.retrieve,
            self.collection_name,
            **caption_request(self.collection_name, ids),
        )

    async def _aread_evidence(
        self, explainer: Explainer, explained: list[models.ScoredPoint]
    ) -> list[models.Record]:
        if not explained or self.async_client is None:
            return []
        request = explainer.fetch_request(explained)
        return await self._retry.acall(
            self.async_client.retrieve,
            request.collection_name,
            what=f"reading the features of {len(explained)} hits from {self.collection_name!r}",
            **request.kwargs(),
        )

    def _explained(
        self,
        parts: CollectionParts,
        query: Query,
        hits: list[models.ScoredPoint],
        captions: Sequence[models.Record],
        explained: list[models.ScoredPoint],
        records: Sequence[models.Record] | None,
        hit_kind: HitKind | None,
    ) -> list[Document]:
        """Explains ``explained`` (from ``records``, else the explainer reads them) and
        shapes every hit into a Document; a hit that cannot be explained carries why."""
        explanations = (
            parts.explainer.explain(query, explained, records=records, errors=self.errors)
            if explained
            else []
        )
        return parts.shaper.documents(
            hits, caption_texts(captions), explanations, query, hit_kind or "image"
        )

    def _search_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The search arguments of one call: its options over the retriever's fields."""
        unknown = set(options) - _CALL_OPTIONS
        if unknown:
            raise TypeError(
                f"unknown retriever option(s) {sorted(unknown)}; per call you can pass "
                f"{sorted(_CALL_OPTIONS)}"
            )
        limit = options.get("k", self.k)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"k must be a positive integer, got {limit!r}")
        return {
            "limit": limit,
            "query_filter": options.get("filter", options.get("query_filter", self.query_filter)),
            "score_threshold": options.get("score_threshold", self.score_threshold),
            "search_params": options.get("search_params", self.search_params),
        }

    def _parse_query(self, query: str, kind: QueryKind) -> Query:
        """A text query as is, or an image query decoded (data URI, base64 or a path)."""
        if not isinstance(query, str):
            raise TypeError(f"the query must be a string, got {type(query).__name__}")
        if kind == "text":
            if not query.strip():
                raise ValueError("the text query is empty")
            self.text_limits.check(query, what="the text query", setting="text_limits")
            return query
        return load_query_image(query, roots=self.query_image_roots, limits=self.image_limits)

    def _n_explained(self, n_hits: int) -> int:
        if not self.explain:
            return 0
        return n_hits if self.explain_top_n is None else min(n_hits, self.explain_top_n)

    def _check_models(self, hits: Sequence[models.ScoredPoint]) -> None:
        """Scores of points written by another CLIP are meaningless: refuse them, explained
        or not."""
        for hit in hits:
            stored = (hit.payload or {}).get(PayloadKeys.FINGERPRINT)
            if stored is not None:
                self.encoder.fingerprint.check(stored, what=f"point {hit.id}")
