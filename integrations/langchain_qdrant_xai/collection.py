"""What a retriever works with on one collection once its layout is known (detected or
given): the searchers, the explainer and the document shaper, built for that layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_qdrant_xai.documents import DocumentShaper
from qdrant_xai import CollectionLayout, Explainer
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.search import AsyncSearcher, Searcher

if TYPE_CHECKING:
    from langchain_qdrant_xai.retriever import QdrantXaiRetriever

__all__ = ["CollectionParts"]


@dataclass(frozen=True)
class CollectionParts:
    """The searchers (one per client given), explainer and shaper of a retriever."""

    layout: CollectionLayout
    searcher: Searcher | None
    asearcher: AsyncSearcher | None
    explainer: Explainer
    shaper: DocumentShaper

    @classmethod
    def build(
        cls,
        retriever: QdrantXaiRetriever,
        layout: CollectionLayout,
        *,
        images: ImageSourcePolicy,
        retry: RetryPolicy,
    ) -> CollectionParts:
        """The parts of ``retriever`` for a collection of this ``layout``."""
        r = retriever
        searching: dict[str, Any] = {
            "collection_name": r.collection_name,
            "layout": layout,
            "retry": retry,
        }
        return cls(
            layout=layout,
            searcher=None if r.client is None else Searcher(r.client, r.encoder, **searching),
            asearcher=None
            if r.async_client is None
            else AsyncSearcher(r.async_client, r.encoder, **searching),
            # with only an async client the explainer reads nothing itself: the retriever
            # hands it the records
            explainer=Explainer(
                r.encoder,
                r.client,
                sources=images,
                heatmap_method=r.heatmap_method,
                word_method=r.word_method,
                grounding=r.grounding,
                rationales=r.rationales,
                sidecar=r.sidecar,
                write_sidecar=r.write_sidecar,
                **searching,
            ),
            shaper=DocumentShaper(
                collection_name=r.collection_name,
                images=images,
                include_image=r.include_image,
                include_overlay=r.include_overlay,
                image_max_side=r.image_max_side,
                top_words=r.top_words,
                rationales=r.rationales,
                layout=layout,
            ),
        )
