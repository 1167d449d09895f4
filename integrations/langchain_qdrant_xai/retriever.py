"""A LangChain retriever over a qdrant-xai collection that explains every hit it returns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr, model_validator
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from qdrant_xai import (
    ClipEncoder,
    CollectionError,
    Explainer,
    Explanation,
    ImageLimits,
    LoadedImage,
    PayloadKeys,
    QdrantXaiError,
)
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.images.query import load_query_image
from qdrant_xai.render import png_data_uri
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.search import light_payload
from qdrant_xai.storage.schema import (
    IMAGE_VECTOR,
    TEXT_VECTOR,
    check_schema,
    parse_point_id,
    require_collection,
)

__all__ = ["QdrantXaiRetriever", "arequire_collection"]

logger = logging.getLogger(__name__)

#: evidence fields of image methods that can come from the payload, and their keys
_STORED_FIELDS = {
    "contributions": PayloadKeys.FEATURES,
    "patch_tokens": PayloadKeys.PATCH_TOKENS,
    "last_layer_inputs": PayloadKeys.LAST_LAYER,
}
_CALL_OPTIONS = frozenset({"k", "filter", "query_filter", "score_threshold", "search_params"})


@dataclass
class _Query:
    """One retrieval: the query as the explainer takes it and the search request."""

    text: str
    explain_as: str | LoadedImage
    image: LoadedImage | None
    vector: list[float]
    using: str
    limit: int
    query_filter: models.Filter | None
    score_threshold: float | None
    search_params: models.SearchParams | None


class QdrantXaiRetriever(BaseRetriever):
    """Retrieves images by text (or texts by image) from a qdrant-xai collection, with
    an explanation of every hit in its metadata.

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

    Use::

        docs = retriever.invoke("a red car")            # or: await retriever.ainvoke(...)
        for doc in docs:
            why = doc.metadata["explanation"]
            print(doc.metadata["score"], doc.page_content, why["top_words"], why["peak"])

        retriever.invoke("a red car", k=10)             # per-call k, filter, score_threshold

        texts = QdrantXaiRetriever(client=client, encoder=encoder, collection_name="photos",
                                   query_type="image")
        texts.invoke("data:image/png;base64,...")       # or a local path, or raw base64

    Each hit becomes one :class:`~langchain_core.documents.Document`, in Qdrant's order,
    with Qdrant's scores. ``page_content`` is the hit's text; for an image hit it is its
    first caption, else its source. ``metadata`` holds ``_id`` and ``_collection_name``
    (as langchain-qdrant names them), ``score`` (Qdrant's), ``rank`` (0-based), ``kind``
    (``"image"`` or ``"text"``), ``source``, ``caption`` (image hits), ``image_id``
    (captions), and for the explained hits ``explanation`` (``peak`` is 0-based)::

        {"top_words": [[word, score], ...], "words": [[word, score, [start, end]], ...],
         "text": the attributed text, "words_side": "query" | "hit", "word_method": ...,
         "heatmap": [[...], ...] (rows x cols, signed), "heatmap_side": "hit" | "query",
         "heatmap_method": ..., "grid": [rows, cols], "peak": [row, col],
         "crop_box": [x0, y0, x1, y1], "overlay": "data:image/png;base64,..." (include_overlay),
         "grounding": {...} (grounding=True), "rationales": [...] (rationales=True)}

    ``metadata["image"]`` carries the hit image as a PNG data URI when ``include_image``
    is set (image hits). An image that cannot be read for the overlay or ``image`` is
    skipped with its reason under ``metadata["image_error"]``; retrieval goes on.

    Args:
        client: a ``QdrantClient`` for :meth:`invoke`.
        async_client: an ``AsyncQdrantClient`` for :meth:`ainvoke` (search and fetch are
            awaited, the CPU work runs in a thread). Without it, ``ainvoke`` runs the
            sync path in a thread.
        encoder: the CLIP encoder the collection was indexed with.
        collection_name: a collection written by qdrant-xai.
        query_type: ``"text"`` searches images by a text query; ``"image"`` searches
            texts (captions) by an image query given as a data URI, raw base64 or a path.
        k: number of hits.
        explain: attach explanations.
        explain_top_n: explain only the first n hits (``None``: all).
        include_overlay: add the heatmap drawn over its image as a PNG data URI.
        include_image: add the image hit itself as a PNG data URI (``metadata["image"]``).
        image_max_side: images and overlays put in metadata are shrunk to this many pixels
            on their long side (``None``: full size).
        image_roots: folders the hits' images may be read from (payload sources are not
            trusted); needed by ``include_image``/``include_overlay`` on image hits and by
            methods that read pixels.
        query_image_roots: folders an image query given as a path may be read from.
            ``None`` (default) reads any local path: the query is the application's own
            input. Give a list (possibly empty) when queries come from users or models.
        image_limits: decoding bounds for every image read.
        heatmap_method, word_method: explanation methods by name (see ``qdrant_xai.explain``).
        grounding, rationales: add word-to-region grounding / rationales to explanations.
        top_words: how many words ``top_words`` lists.
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
    query_type: Literal["text", "image"] = "text"
    k: int = Field(default=4, ge=1)
    explain: bool = True
    explain_top_n: int | None = Field(default=None, ge=0)
    include_overlay: bool = False
    include_image: bool = False
    image_max_side: int | None = Field(default=512, ge=8)
    image_roots: list[str | Path] = Field(default_factory=list)
    query_image_roots: list[str | Path] | None = None
    image_limits: ImageLimits = Field(default_factory=ImageLimits)
    heatmap_method: str = "decomposition"
    word_method: str = "occlusion"
    grounding: bool = False
    rationales: bool = False
    top_words: int = Field(default=3, ge=0)
    query_filter: models.Filter | None = None
    score_threshold: float | None = None
    search_params: models.SearchParams | None = None
    retry: RetryPolicy | None = None

    _explainer: Explainer = PrivateAttr()
    _offline: Explainer = PrivateAttr()
    _images: ImageSourcePolicy = PrivateAttr()
    _checked_sync: bool = PrivateAttr(default=False)
    _checked_async: bool = PrivateAttr(default=False)
    _retry: RetryPolicy = PrivateAttr()

    @model_validator(mode="after")
    def _configure(self) -> QdrantXaiRetriever:
        if self.client is None and self.async_client is None:
            raise ValueError(
                "QdrantXaiRetriever needs a Qdrant client: pass client=QdrantClient(...) "
                "and/or async_client=AsyncQdrantClient(...)"
            )
        if (
            (self.include_image or self.include_overlay)
            and self.query_type == "text"
            and not self.image_roots
        ):
            raise ValueError(
                "include_image and include_overlay read the hits' images: pass "
                "image_roots=[folder, ...] with the folders they were indexed from"
            )
        options: dict[str, Any] = {
            "collection_name": self.collection_name,
            "image_roots": self.image_roots,
            "image_limits": self.image_limits,
            "heatmap_method": self.heatmap_method,
            "word_method": self.word_method,
            "grounding": self.grounding,
            "rationales": self.rationales,
        }
        self._retry = self.retry or RetryPolicy()
        # unknown method names raise here (UnknownMethodError is a ValueError)
        self._explainer = Explainer(self.encoder, self.client, retry=self._retry, **options)
        self._offline = Explainer(self.encoder, None, **options)
        self._images = ImageSourcePolicy.from_roots(self.image_roots, limits=self.image_limits)
        return self

    # -- LangChain entry points -----------------------------------------------------------

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        client = self._sync_client()
        self._require_collection(client)
        request = self._request(query, kwargs)
        hits = self._retry.call(
            client.query_points,
            self.collection_name,
            **self._search_args(request),
        ).points
        self._check_models(hits)
        ids = self._caption_ids(hits)
        records = (
            self._retry.call(
                client.retrieve,
                self.collection_name,
                **self._caption_args(ids),
            )
            if ids
            else []
        )
        explained = hits[: self._n_explained(len(hits))]
        explanations = self._explainer.explain(request.explain_as, explained) if explained else []
        return self._documents(hits, _captions(records), explanations, request.image)

    def _search_args(self, request: Any) -> dict[str, Any]:
        """Keyword arguments of the search, the same for the sync and the async client."""
        return {
            "what": f"search in collection {self.collection_name!r}",
            "query": request.vector,
            "using": request.using,
            "limit": request.limit,
            "query_filter": request.query_filter,
            "score_threshold": request.score_threshold,
            "search_params": request.search_params,
            "with_payload": light_payload(),
            "with_vectors": False,
        }

    def _points_args(self, ids: list[Any]) -> dict[str, Any]:
        """Keyword arguments of reading points to explain, for either client."""
        return {
            "ids": ids,
            "with_payload": self._explain_payload(),
            "with_vectors": [IMAGE_VECTOR, TEXT_VECTOR],
        }

    def _caption_args(self, ids: list[Any]) -> dict[str, Any]:
        """Keyword arguments of the caption lookup, for either client."""
        return {
            "what": f"reading captions from {self.collection_name!r}",
            "ids": ids,
            "with_payload": [PayloadKeys.TEXT],
        }

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        client = self.async_client
        if client is None:
            return await asyncio.to_thread(
                self._get_relevant_documents, query, run_manager=run_manager.get_sync(), **kwargs
            )
        await self._arequire_collection(client)
        request = await asyncio.to_thread(self._request, query, kwargs)
        response = await self._retry.acall(
            client.query_points,
            self.collection_name,
            **self._search_args(request),
        )
        hits = response.points
        self._check_models(hits)
        ids = self._caption_ids(hits)
        explained = hits[: self._n_explained(len(hits))]
        captions_fetch = (
            self._retry.acall(
                client.retrieve,
                self.collection_name,
                **self._caption_args(ids),
            )
            if ids
            else _nothing()
        )
        features_fetch = (
            self._retry.acall(
                client.retrieve,
                self.collection_name,
                what=f"reading the features of hits from {self.collection_name!r}",
                ids=[hit.id for hit in explained],
                with_payload=self._feature_keys(),
                with_vectors=[IMAGE_VECTOR, TEXT_VECTOR],
            )
            if explained
            else _nothing()
        )
        records, features = await asyncio.gather(captions_fetch, features_fetch)
        explained = _with_features(explained, features)
        return await asyncio.to_thread(self._explain_offline, hits, records, explained, request)

    def _explain_offline(
        self,
        hits: list[models.ScoredPoint],
        records: list[models.Record],
        explained: list[models.ScoredPoint],
        request: _Query,
    ) -> list[Document]:
        explanations = self._offline.explain(request.explain_as, explained) if explained else []
        return self._documents(hits, _captions(records), explanations, request.image)

    # -- explaining given points ----------------------------------------------------------

    def explain_points(
        self,
        ids: Sequence[str | int],
        query: str,
        *,
        query_type: Literal["text", "image"] | None = None,
    ) -> list[Document]:
        """Documents explaining why the points ``ids`` match ``query``, in the given order.

        ``score`` is the cosine of the query and each point's stored vector, as Qdrant
        would score it; ``rank`` is the position in ``ids``. Unlike a search, any point of
        the collection can be explained (an image by an image, a caption by a text).

        Raises:
            QdrantXaiError: an id that is not in the collection.
            ValueError: an id that is not a Qdrant point id.
        """
        client = self._sync_client()
        self._require_collection(client)
        point_ids = [parse_point_id(i) for i in ids]
        request = self._request(query, {}, query_type=query_type)
        records = self._retry.call(
            client.retrieve,
            self.collection_name,
            what=f"reading points of {self.collection_name!r}",
            **self._points_args(point_ids),
        )
        hits = self._scored(point_ids, records, request)
        ids_ = self._caption_ids(hits)
        captions = (
            self._retry.call(
                client.retrieve,
                self.collection_name,
                **self._caption_args(ids_),
            )
            if ids_
            else []
        )
        return self._explain_offline(hits, captions, hits, request)

    async def aexplain_points(
        self,
        ids: Sequence[str | int],
        query: str,
        *,
        query_type: Literal["text", "image"] | None = None,
    ) -> list[Document]:
        """Async :meth:`explain_points` (on ``async_client``, else in a thread)."""
        client = self.async_client
        if client is None:
            return await asyncio.to_thread(self.explain_points, ids, query, query_type=query_type)
        await self._arequire_collection(client)
        point_ids = [parse_point_id(i) for i in ids]
        request = await asyncio.to_thread(self._request, query, {}, query_type=query_type)
        records = await self._retry.acall(
            client.retrieve,
            self.collection_name,
            what=f"reading points of {self.collection_name!r}",
            **self._points_args(point_ids),
        )
        hits = self._scored(point_ids, records, request)
        ids_ = self._caption_ids(hits)
        captions = (
            await self._retry.acall(
                client.retrieve,
                self.collection_name,
                **self._caption_args(ids_),
            )
            if ids_
            else []
        )
        return await asyncio.to_thread(self._explain_offline, hits, captions, hits, request)

    # -- steps ----------------------------------------------------------------------------

    def _sync_client(self) -> QdrantClient:
        if self.client is None:
            raise ValueError(
                "this QdrantXaiRetriever has only an async_client: use ainvoke, or pass "
                "client=QdrantClient(...) as well"
            )
        return self.client

    def _require_collection(self, client: QdrantClient) -> None:
        if not self._checked_sync:
            info = require_collection(client, self.collection_name, retry=self._retry)
            check_schema(info, self.collection_name, dim=self.encoder.dim)
            self._checked_sync = True

    async def _arequire_collection(self, client: AsyncQdrantClient) -> None:
        if not self._checked_async:
            info = await arequire_collection(client, self.collection_name, retry=self._retry)
            check_schema(info, self.collection_name, dim=self.encoder.dim)
            self._checked_async = True

    def _request(
        self,
        query: str,
        options: dict[str, Any],
        *,
        query_type: Literal["text", "image"] | None = None,
    ) -> _Query:
        unknown = set(options) - _CALL_OPTIONS
        if unknown:
            raise TypeError(
                f"unknown retriever option(s) {sorted(unknown)}; per call you can pass "
                f"{sorted(_CALL_OPTIONS)}"
            )
        if not isinstance(query, str):
            raise TypeError(f"the query must be a string, got {type(query).__name__}")
        kind = query_type or self.query_type
        limit = options.get("k", self.k)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"k must be a positive integer, got {limit!r}")
        query_filter = options.get("filter", options.get("query_filter", self.query_filter))
        image: LoadedImage | None = None
        if kind == "text":
            if not query.strip():
                raise ValueError("the text query is empty")
            vector = self.encoder.embed_texts([query])[0]
            explain_as: str | LoadedImage = query
        else:
            image = load_query_image(
                query,
                roots=self.query_image_roots,
                limits=self.image_limits,
            )
            vector = self.encoder.embed_images([image])[0]
            explain_as = image
        return _Query(
            text=query,
            explain_as=explain_as,
            image=image,
            vector=vector.tolist(),
            using=IMAGE_VECTOR if kind == "text" else TEXT_VECTOR,
            limit=limit,
            query_filter=query_filter,
            score_threshold=options.get("score_threshold", self.score_threshold),
            search_params=options.get("search_params", self.search_params),
        )

    def _n_explained(self, n_hits: int) -> int:
        if not self.explain:
            return 0
        return n_hits if self.explain_top_n is None else min(n_hits, self.explain_top_n)

    def _check_models(self, hits: Sequence[models.ScoredPoint]) -> None:
        """Scores of points written by another CLIP are meaningless: refuse them."""
        for hit in hits:
            stored = (hit.payload or {}).get(PayloadKeys.FINGERPRINT)
            if stored is not None:
                self.encoder.fingerprint.check(stored, what=f"point {hit.id}")

    def _feature_keys(self) -> list[str]:
        """The payload keys of the stored features the image method can run from."""
        keys = [PayloadKeys.FEATURES]
        for option in self._offline.heatmap_method.requires:
            keys += [_STORED_FIELDS[f] for f in option if f in _STORED_FIELDS]
        return list(dict.fromkeys(keys))

    def _explain_payload(self) -> models.PayloadSelectorExclude:
        """Everything but the feature maps the image method does not use."""
        needed = set(self._feature_keys())
        return models.PayloadSelectorExclude(
            exclude=[key for key in PayloadKeys.HEAVY if key not in needed]
        )

    def _scored(
        self, ids: list[str | int], records: list[models.Record], request: _Query
    ) -> list[models.ScoredPoint]:
        """The points as if a search had found them, scored against the query."""
        by_id = {str(r.id): r for r in records}
        missing = [str(i) for i in ids if str(i) not in by_id]
        if missing:
            raise QdrantXaiError(
                f"no point {', '.join(missing)} in collection {self.collection_name!r}; use the "
                "'_id' of a search result"
            )
        query = np.asarray(request.vector, dtype=np.float32)
        hits = []
        for i in ids:
            record = by_id[str(i)]
            payload = record.payload or {}
            kind = payload.get(PayloadKeys.KIND) or (
                "text" if PayloadKeys.TEXT in payload else "image"
            )
            vectors = record.vector if isinstance(record.vector, dict) else {}
            vector = vectors.get(IMAGE_VECTOR if kind == "image" else TEXT_VECTOR)
            if not isinstance(vector, list):
                raise QdrantXaiError(
                    f"point {i} has no {kind!r} vector in collection {self.collection_name!r}"
                )
            stored = np.asarray(vector, dtype=np.float32)
            score = float(query @ stored / max(float(np.linalg.norm(stored)), 1e-12))
            hits.append(
                models.ScoredPoint(
                    id=record.id, version=0, score=score, payload=payload, vector=record.vector
                )
            )
        self._check_models(hits)
        return hits

    @staticmethod
    def _caption_ids(hits: Sequence[models.ScoredPoint]) -> list[str | int]:
        """The first caption id of each image hit (valid ids only; payloads are untrusted)."""
        ids: list[str | int] = []
        for hit in hits:
            captions = (hit.payload or {}).get(PayloadKeys.CAPTION_IDS)
            if isinstance(captions, list) and captions:
                try:
                    ids.append(parse_point_id(captions[0]))
                except ValueError:
                    continue
        return list(dict.fromkeys(ids))

    # -- documents ------------------------------------------------------------------------

    def _documents(
        self,
        hits: Sequence[models.ScoredPoint],
        captions: dict[str, str],
        explanations: Sequence[Explanation],
        query_image: LoadedImage | None,
    ) -> list[Document]:
        documents = []
        for rank, hit in enumerate(hits):
            payload = hit.payload or {}
            kind = payload.get(PayloadKeys.KIND) or (
                "text" if PayloadKeys.TEXT in payload else "image"
            )
            source = payload.get(PayloadKeys.SOURCE)
            metadata: dict[str, Any] = {
                "_id": hit.id,
                "_collection_name": self.collection_name,
                "score": hit.score,
                "rank": rank,
                "kind": kind,
                "source": source,
            }
            if kind == "image":
                caption = _first_caption(payload, captions)
                metadata["caption"] = caption
                content = caption or str(source or "")
            else:
                metadata["image_id"] = payload.get(PayloadKeys.IMAGE_ID)
                content = str(payload.get(PayloadKeys.TEXT) or "")
            explanation = explanations[rank] if rank < len(explanations) else None
            needs_image = kind == "image" and (
                self.include_image or (self.include_overlay and explanation is not None)
            )
            image = self._hit_image(source, metadata) if needs_image else None
            if image is not None and self.include_image:
                metadata["image"] = png_data_uri(image, self.image_max_side)
            if explanation is not None:
                base = image if explanation.heatmap_side == "hit" else None
                if explanation.heatmap_side == "query" and query_image is not None:
                    base = query_image.image
                metadata["explanation"] = self._explanation_dict(explanation, base)
            documents.append(Document(page_content=content, metadata=metadata))
        return documents

    def _hit_image(self, source: Any, metadata: dict[str, Any]) -> Any:
        if not isinstance(source, str) or not source:
            metadata["image_error"] = "the hit has no image source"
            return None
        try:
            return self._images.open(source).image
        except QdrantXaiError as exc:
            logger.info("image of hit %s not included: %s", metadata["_id"], exc)
            metadata["image_error"] = str(exc)
            return None

    def _explanation_dict(self, explanation: Explanation, image: Any) -> dict[str, Any]:
        heatmap = explanation.heatmap
        peak = explanation.peak()
        result: dict[str, Any] = {
            "top_words": [
                [w.word, round(w.score, 6)] for w in explanation.top_words(self.top_words)
            ],
            "words": [[w.word, round(w.score, 6), list(w.span)] for w in explanation.words],
            "text": explanation.text,
            "words_side": explanation.words_side,
            "word_method": explanation.word_method,
            "heatmap": None if heatmap is None else np.round(heatmap, 6).tolist(),
            "heatmap_side": explanation.heatmap_side,
            "heatmap_method": explanation.heatmap_method,
            "grid": None if heatmap is None else list(heatmap.shape),
            "peak": None if peak is None else list(peak),
            "crop_box": None if explanation.crop_box is None else list(explanation.crop_box),
        }
        if explanation.grounding is not None:
            result["grounding"] = explanation.grounding.to_dict()
        if self.rationales:
            result["rationales"] = [r.to_dict() for r in explanation.rationales]
        if self.include_overlay and heatmap is not None and image is not None:
            result["overlay"] = png_data_uri(explanation.overlay(image), self.image_max_side)
        return result


async def arequire_collection(
    client: AsyncQdrantClient, collection_name: str, *, retry: RetryPolicy | None = None
) -> models.CollectionInfo:
    """Async :func:`qdrant_xai.storage.schema.require_collection`."""
    retry = retry or RetryPolicy()
    what = f"reading collection {collection_name!r}"
    try:
        if not await retry.acall(client.collection_exists, collection_name, what=what):
            raise CollectionError(
                f"collection {collection_name!r} does not exist; index images into it first "
                "(qdrant-xai index DIR --collection NAME) or pass the right collection_name"
            )
        return await retry.acall(client.get_collection, collection_name, what=what)
    except UnexpectedResponse as exc:
        raise CollectionError(f"cannot read collection {collection_name!r}: {exc}") from exc


async def _nothing() -> list[models.Record]:
    return []


def _captions(records: Sequence[models.Record]) -> dict[str, str]:
    return {
        str(r.id): text
        for r in records
        if isinstance(text := (r.payload or {}).get(PayloadKeys.TEXT), str)
    }


def _first_caption(payload: dict[str, Any], captions: dict[str, str]) -> str | None:
    ids = payload.get(PayloadKeys.CAPTION_IDS)
    if not isinstance(ids, list) or not ids:
        return None
    try:
        return captions.get(str(parse_point_id(ids[0])))
    except ValueError:
        return None


def _with_features(
    hits: list[models.ScoredPoint], records: Sequence[models.Record]
) -> list[models.ScoredPoint]:
    """The hits with their stored features and vectors merged in (what the explainer
    fetches itself when it has a sync client)."""
    by_id = {str(r.id): r for r in records}
    merged = []
    for hit in hits:
        record = by_id.get(str(hit.id))
        if record is None:
            merged.append(hit)
            continue
        merged.append(
            hit.model_copy(
                update={
                    "payload": {**(hit.payload or {}), **(record.payload or {})},
                    "vector": record.vector,
                }
            )
        )
    return merged
