"""Searching a qdrant-xai collection by text or by image.

Each search is one ``query_points(..., using=...)`` call; the stored feature maps are left
out of the response (they are fetched later, only for the hits that are explained).
"""

from __future__ import annotations

from typing import Literal

from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder, ImageInput
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.layouts import CollectionLayout, layout_named
from qdrant_xai.storage.schema import PayloadKeys, check_query_dimension, require_collection

__all__ = ["Searcher", "light_payload"]


def light_payload() -> models.PayloadSelectorExclude:
    """Payload selector returning everything but the stored feature maps."""
    return models.PayloadSelectorExclude(exclude=list(PayloadKeys.HEAVY))


class Searcher:
    """Text→image, image→text and image→image search over a qdrant-xai collection.

    Setup::

        from qdrant_xai import ClipEncoder, Searcher
        searcher = Searcher(client, encoder, collection_name="photos")

    Use::

        hits = searcher.search_images("a red car", limit=5)      # text → image
        hits = searcher.search_texts(Path("car.jpg"), limit=5)   # image → text

    Results are plain ``ScoredPoint``s, as ``client.query_points`` returns them.

    Args:
        client: any ``QdrantClient``.
        encoder: the CLIP model the collection was built with.
        collection_name: the collection to search.
        layout: its vector names (a preset such as ``"langchain"`` for collections written
            by other tools; see :mod:`qdrant_xai.storage.layouts`).
        retry: how Qdrant calls are retried (default: :class:`RetryPolicy` defaults).
    """

    def __init__(
        self,
        client: QdrantClient,
        encoder: ClipEncoder,
        *,
        collection_name: str,
        layout: str | CollectionLayout = "qdrant-xai",
        retry: RetryPolicy | None = None,
    ) -> None:
        self.client = client
        self.encoder = encoder
        self.collection_name = collection_name
        self.layout = layout_named(layout)
        self.retry = retry or RetryPolicy()
        self._resolved: CollectionLayout | None = None

    def search_images(
        self,
        query: str | ImageInput,
        *,
        limit: int = 10,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[models.ScoredPoint]:
        """Image hits for a text query, or for an image query (image→image)."""
        return self._query(query, "image", limit, query_filter, score_threshold)

    def search_texts(
        self,
        query: str | ImageInput,
        *,
        limit: int = 10,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[models.ScoredPoint]:
        """Text hits for an image query (image→text), or for a text query."""
        return self._query(query, "text", limit, query_filter, score_threshold)

    def search(
        self,
        query: str | ImageInput,
        *,
        hit_kind: Literal["image", "text"] = "image",
        limit: int = 10,
        query_filter: models.Filter | None = None,
        score_threshold: float | None = None,
    ) -> list[models.ScoredPoint]:
        """Hits of kind ``hit_kind`` for a text or image query."""
        return self._query(query, hit_kind, limit, query_filter, score_threshold)

    def _query(
        self,
        query: str | ImageInput,
        hit_kind: Literal["image", "text"],
        limit: int,
        query_filter: models.Filter | None,
        score_threshold: float | None,
    ) -> list[models.ScoredPoint]:
        info = require_collection(self.client, self.collection_name, retry=self.retry)
        if self._resolved is None:
            self._resolved = (
                self.layout
                if self.layout.name == "qdrant-xai"
                else self.layout.resolve(self.client, self.collection_name, retry=self.retry)
            )
        using = self._resolved.using(hit_kind)
        check_query_dimension(
            info, self.collection_name, using, dim=self.encoder.dim, model=self.encoder.model_id
        )
        if isinstance(query, str):
            vector = self.encoder.embed_texts([query])[0]
        else:
            vector = self.encoder.embed_images([query])[0]
        response = self.retry.call(
            self.client.query_points,
            self.collection_name,
            what=f"search in collection {self.collection_name!r}",
            client=self.client,
            query=vector.tolist(),
            using=using,
            limit=limit,
            query_filter=query_filter,
            score_threshold=score_threshold,
            with_payload=light_payload(),
        )
        return response.points
