"""Hits and their explanations as LangChain Documents: page content, metadata, images.

:class:`DocumentShaper` turns the ``ScoredPoint``s of a search (and the
:class:`~qdrant_xai.Explanation` of each explained one) into
:class:`~langchain_core.documents.Document`s, in the hits' order; the caption helpers find
the first caption of image hits, whose text becomes their ``page_content``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.documents import Document
from qdrant_client import models

from qdrant_xai import LAYOUTS, CollectionLayout, Explanation, LoadedImage, QdrantXaiError
from qdrant_xai.explain.results import hit_image
from qdrant_xai.images.policy import ImageSourcePolicy, SourceKind
from qdrant_xai.render import png_data_uri
from qdrant_xai.storage.layouts import NODE_CONTENT, looks_like_base64_image
from qdrant_xai.storage.schema import PayloadKeys, parse_point_id, without_features

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DocumentShaper",
    "caption_ids",
    "caption_request",
    "caption_texts",
    "first_caption",
    "stored_document",
    "xai_value",
]

logger = logging.getLogger(__name__)

#: where langchain-qdrant (and mcp-server-qdrant) keep a document's metadata
_METADATA_KEY = "metadata"
#: the prefix of the retriever's keys that a stored metadata key of the same name displaced
_XAI_PREFIX = "xai_"
#: what ``Explanation.to_dict`` gives that ``metadata["explanation"]`` carries, in its order
_EXPLANATION_KEYS = (
    "words",
    "text",
    "words_side",
    "word_method",
    "heatmap",
    "heatmap_side",
    "heatmap_method",
    "words_left_out",
    "chars_left_out",
)


@dataclass(frozen=True)
class DocumentShaper:
    """How the retriever's hits become Documents (its presentation options).

    On a collection qdrant-xai wrote, ``page_content`` is the hit's text; for an image hit
    its first caption, else its source. ``metadata`` holds ``_id``, ``_collection_name``,
    ``score``, ``rank``, ``kind``, ``source``, ``caption`` (image hits) or ``image_id``
    (texts), ``image`` (a PNG data URI, ``include_image``), ``image_error`` (why an image
    could not be read) and ``explanation`` (see :meth:`explanation_metadata`).

    On a collection another tool wrote (any other layout), a Document is what that tool's
    retriever gives: langchain-qdrant's ``page_content`` and ``metadata`` (with ``_id`` and
    ``_collection_name``), or for payloads without a ``metadata`` object the layout's text
    and the rest of the payload. The keys above are added beside the stored ones; a stored
    key is never overwritten: where one has the same name (``score``, ``kind``, ...), the
    retriever's value goes under ``xai_<key>`` (:func:`xai_value` reads either).

    Args:
        collection_name: the collection the hits come from.
        images: where hit images may be read (for ``image`` and overlays).
        include_image: add image hits as PNG data URIs.
        include_overlay: add the heatmap drawn over its image to the explanation.
        image_max_side: images and overlays are shrunk to this many pixels on their long
            side (``None``: full size).
        top_words: how many words ``top_words`` lists.
        rationales: list the explanations' rationales.
        layout: where the collection keeps its texts and images (its vectors resolved).
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
        own = self.layout.name == "qdrant-xai"
        documents = []
        for rank, hit in enumerate(hits):
            payload = hit.payload or {}
            explanation = explanations[rank] if rank < len(explanations) else None
            kind = (
                explanation.hit_kind  # as the explainer saw it
                if explanation is not None
                else self.layout.kind_of(payload, default=hit_kind, sources=self.images)
            )
            own_keys: dict[str, Any] = {}
            if own:
                content, own_keys = self._own_document(payload, kind, captions)
                source = own_keys["source"]
                metadata: dict[str, Any] = {}
            else:
                content, metadata = stored_document(payload, self.layout)
                source = (
                    self.layout.image_source(payload, sources=self.images)
                    if kind == "image"
                    else None
                )
            # as langchain-qdrant's QdrantVectorStore._document_from_point sets them
            metadata["_id"] = hit.id
            metadata["_collection_name"] = self.collection_name
            put = _Writer(metadata, stored=() if own else set(metadata))
            put("score", hit.score)
            put("rank", rank)
            put("kind", kind)
            for key, value in own_keys.items():
                put(key, value)
            ok = explanation is not None and explanation.ok
            needs_image = kind == "image" and (self.include_image or (self.include_overlay and ok))
            image = self._hit_image(source, hit, put) if needs_image else None
            if image is not None and self.include_image:
                put("image", png_data_uri(image, self.image_max_side))
            if explanation is not None:
                base = image if explanation.heatmap_side == "hit" else query_image
                put("explanation", self.explanation_metadata(explanation, base))
            documents.append(Document(page_content=content, metadata=metadata))
        return documents

    def _own_document(
        self, payload: dict[str, Any], kind: Literal["image", "text"], captions: dict[str, str]
    ) -> tuple[str, dict[str, Any]]:
        """``page_content`` of a hit in a collection qdrant-xai wrote, and its metadata keys
        ``source`` and ``caption`` (image hits) or ``image_id`` (texts)."""
        source = payload.get(PayloadKeys.SOURCE)
        if kind == "image":
            caption = first_caption(payload, captions)
            return caption or str(source or ""), {"source": source, "caption": caption}
        return str(payload.get(PayloadKeys.TEXT) or ""), {
            "source": source,
            "image_id": payload.get(PayloadKeys.IMAGE_ID),
        }

    def explanation_metadata(
        self, explanation: Explanation, image: Image.Image | None
    ) -> dict[str, Any]:
        """``metadata["explanation"]`` (``peak`` is 0-based from the top-left)::

        {"status": "ok", "error": None,
         "top_words": [[word, score], ...], "words": [[word, score, [start, end]], ...],
         "text": the attributed text, "words_side": "query" | "hit", "word_method": ...,
         "heatmap": [[...], ...] (rows x cols, signed), "heatmap_side": "hit" | "query",
         "heatmap_method": ..., "grid": [rows, cols], "peak": [row, col],
         "crop_box": [x0, y0, x1, y1], "overlay": "data:image/png;base64,..." (include_overlay,
         drawn over ``image``), "grounding": {...} (when computed),
         "rationales": [...] (rationales)}

        A hit that could not be explained gets only ``{"status": "failed", "error":
        {"type": the exception's class name, "message": why}}``.
        """
        full = explanation.to_dict()
        if not explanation.ok:
            return {"status": full["status"], "error": full["error"]}
        heatmap = explanation.heatmap
        peak = explanation.peak()
        result: dict[str, Any] = {
            "status": full["status"],
            "error": None,
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

    def _hit_image(self, source: Any, hit: models.ScoredPoint, put: _Writer) -> Image.Image | None:
        """The hit's image, or None with the reason under ``metadata["image_error"]``."""
        if not isinstance(source, str) or not source:
            put("image_error", "the hit has no image source")
            return None
        inline = looks_like_base64_image(source) and not source.startswith("data:")
        try:
            kind: SourceKind = "base64" if inline else "auto"
            what = f"hit {hit.id}"
            return hit_image(self.images, source, hit.payload or {}, what=what, kind=kind).image
        except QdrantXaiError as exc:
            logger.info("image of hit %s not included: %s", hit.id, exc)
            put("image_error", str(exc))
            return None


class _Writer:
    """Adds the retriever's keys to a Document's metadata without overwriting stored keys
    (those go under ``xai_<key>``)."""

    def __init__(self, metadata: dict[str, Any], stored: Collection[str]) -> None:
        self.metadata = metadata
        self.stored = stored

    def __call__(self, key: str, value: Any) -> None:
        self.metadata[_XAI_PREFIX + key if key in self.stored else key] = value


def xai_value(metadata: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The value the retriever put under ``key`` (``score``, ``kind``, ``explanation``, ...):
    under ``xai_<key>`` when the stored metadata had a key of that name, else ``key``."""
    if _XAI_PREFIX + key in metadata:
        return metadata[_XAI_PREFIX + key]
    return metadata.get(key, default)


def stored_document(
    payload: Mapping[str, Any], layout: CollectionLayout
) -> tuple[str, dict[str, Any]]:
    """``page_content`` and ``metadata`` of a point another tool wrote, as that tool's
    retriever gives them (without ``_id`` and ``_collection_name``).

    A payload with a ``metadata`` key (langchain-qdrant, mcp-server-qdrant) gives the value
    under the layout's content key (``page_content``, ``document``) and that metadata, as
    langchain-qdrant's ``QdrantVectorStore`` reads them; any other payload gives the layout's
    text as people read it (a LlamaIndex node's text, without the metadata lines it was
    embedded with) and the payload without the keys the text was read from and without
    feature maps.
    """
    key = next((k for k in layout.text_keys if "." not in k), None)
    if key is not None and key != NODE_CONTENT and _METADATA_KEY in payload:
        content = payload.get(key, "")
        metadata = payload.get(_METADATA_KEY)
        return (
            content if isinstance(content, str) else str(content),
            dict(metadata) if isinstance(metadata, Mapping) else {},
        )
    read_from = {k.split(".", 1)[0] for k in layout.text_keys}
    rest = {k: v for k, v in without_features(dict(payload)).items() if k not in read_from}
    return layout.display_text(payload) or "", rest


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
