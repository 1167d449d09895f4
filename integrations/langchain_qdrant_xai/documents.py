"""Hits and their explanations as LangChain Documents: page content, metadata, images.

:class:`DocumentShaper` turns the ``ScoredPoint``s of a search (and the
:class:`~qdrant_xai.Explanation` of each explained one) into
:class:`~langchain_core.documents.Document`s, in the hits' order; the caption helpers find
the first caption of image hits, whose text becomes their ``page_content``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.documents import Document
from qdrant_client import models

from qdrant_xai import LAYOUTS, CollectionLayout, Explanation, LoadedImage, QdrantXaiError
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.render import png_data_uri
from qdrant_xai.storage.schema import PayloadKeys, parse_point_id

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DocumentShaper", "caption_ids", "caption_request", "caption_texts", "first_caption"]

logger = logging.getLogger(__name__)

#: what ``Explanation.to_dict`` gives that ``metadata["explanation"]`` carries, in its order
_EXPLANATION_KEYS = (
    "words",
    "text",
    "words_side",
    "word_method",
    "heatmap",
    "heatmap_side",
    "heatmap_method",
)


@dataclass(frozen=True)
class DocumentShaper:
    """How the retriever's hits become Documents (its presentation options).

    ``page_content`` is the hit's text; for an image hit its first caption, else its source.
    ``metadata`` holds ``_id``, ``_collection_name``, ``score``, ``rank``, ``kind``,
    ``source``, ``caption`` (image hits) or ``image_id`` (texts), ``image`` (a PNG data URI,
    ``include_image``), ``image_error`` (why an image could not be read) and, for explained
    hits, ``explanation`` (see :meth:`explanation_metadata`).

    Args:
        collection_name: the collection the hits come from.
        images: where hit images may be read (for ``image`` and overlays).
        include_image: add image hits as PNG data URIs.
        include_overlay: add the heatmap drawn over its image to the explanation.
        image_max_side: images and overlays are shrunk to this many pixels on their long
            side (``None``: full size).
        top_words: how many words ``top_words`` lists.
        rationales: list the explanations' rationales.
        layout: how a point's kind is read from its payload.
    """

    collection_name: str
    images: ImageSourcePolicy
    include_image: bool = False
    include_overlay: bool = False
    image_max_side: int | None = 512
    top_words: int = 3
    rationales: bool = False
    layout: CollectionLayout = field(default_factory=lambda: LAYOUTS["qdrant-xai"])

    def documents(
        self,
        hits: Sequence[models.ScoredPoint],
        captions: dict[str, str],
        explanations: Sequence[Explanation],
        query: str | LoadedImage,
        hit_kind: Literal["image", "text"] = "image",
    ) -> list[Document]:
        """One Document per hit; ``explanations`` explain the first hits (possibly none).

        Args:
            captions: caption texts by point id (:func:`caption_texts`).
            query: the query, whose image an image query's overlays are drawn over.
            hit_kind: the kind searched, for points whose payload does not say theirs.
        """
        query_image = query.image if isinstance(query, LoadedImage) else None
        documents = []
        for rank, hit in enumerate(hits):
            payload = hit.payload or {}
            kind = self.layout.kind_of(payload, default=hit_kind)
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
                caption = first_caption(payload, captions)
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
                base = image if explanation.heatmap_side == "hit" else query_image
                metadata["explanation"] = self.explanation_metadata(explanation, base)
            documents.append(Document(page_content=content, metadata=metadata))
        return documents

    def explanation_metadata(
        self, explanation: Explanation, image: Image.Image | None
    ) -> dict[str, Any]:
        """``metadata["explanation"]`` (``peak`` is 0-based from the top-left)::

        {"top_words": [[word, score], ...], "words": [[word, score, [start, end]], ...],
         "text": the attributed text, "words_side": "query" | "hit", "word_method": ...,
         "heatmap": [[...], ...] (rows x cols, signed), "heatmap_side": "hit" | "query",
         "heatmap_method": ..., "grid": [rows, cols], "peak": [row, col],
         "crop_box": [x0, y0, x1, y1], "overlay": "data:image/png;base64,..." (include_overlay,
         drawn over ``image``), "grounding": {...} (when computed),
         "rationales": [...] (rationales)}
        """
        full = explanation.to_dict()
        heatmap = explanation.heatmap
        peak = explanation.peak()
        result: dict[str, Any] = {
            "top_words": [
                [w.word, round(w.score, 6)] for w in explanation.top_words(self.top_words)
            ],
            **{key: full[key] for key in _EXPLANATION_KEYS},
            "grid": None if heatmap is None else list(heatmap.shape),
            "peak": None if peak is None else list(peak),
            "crop_box": full["crop_box"],
        }
        if full["grounding"] is not None:
            result["grounding"] = full["grounding"]
        if self.rationales:
            result["rationales"] = full["rationales"]
        if self.include_overlay and heatmap is not None and image is not None:
            result["overlay"] = png_data_uri(explanation.overlay(image), self.image_max_side)
        return result

    def _hit_image(self, source: Any, metadata: dict[str, Any]) -> Image.Image | None:
        """The hit's image, or None with the reason under ``metadata["image_error"]``."""
        if not isinstance(source, str) or not source:
            metadata["image_error"] = "the hit has no image source"
            return None
        try:
            return self.images.open(source).image
        except QdrantXaiError as exc:
            logger.info("image of hit %s not included: %s", metadata["_id"], exc)
            metadata["image_error"] = str(exc)
            return None


def caption_ids(hits: Sequence[models.ScoredPoint]) -> list[str | int]:
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


def caption_request(collection_name: str, ids: list[str | int]) -> dict[str, Any]:
    """Keyword arguments of ``RetryPolicy.call(client.retrieve, collection_name, ...)``
    reading the texts of captions ``ids`` (for either client)."""
    return {
        "what": f"reading captions from {collection_name!r}",
        "ids": ids,
        "with_payload": [PayloadKeys.TEXT],
    }


def caption_texts(records: Sequence[models.Record]) -> dict[str, str]:
    """The text of each caption record, by point id."""
    return {
        str(r.id): text
        for r in records
        if isinstance(text := (r.payload or {}).get(PayloadKeys.TEXT), str)
    }


def first_caption(payload: dict[str, Any], captions: dict[str, str]) -> str | None:
    """The text of an image point's first caption, when it was read."""
    ids = payload.get(PayloadKeys.CAPTION_IDS)
    if not isinstance(ids, list) or not ids:
        return None
    try:
        return captions.get(str(parse_point_id(ids[0])))
    except ValueError:
        return None
