"""A LlamaIndex node postprocessor that attaches an explanation to each node retrieved from
a Qdrant collection, leaving nodes, order and scores as they were."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle
from qdrant_client import QdrantClient, models

from qdrant_xai import (
    ClipEncoder,
    CollectionLayout,
    Explainer,
    Explanation,
    ImageLimits,
    LoadedImage,
    QdrantXaiError,
    TextLimits,
)
from qdrant_xai.errors import PointIdError
from qdrant_xai.explain import HEATMAP_METHODS, WORD_METHODS
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.images.query import load_query_image
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.detect import resolve_layout
from qdrant_xai.storage.layouts import layout_named
from qdrant_xai.storage.schema import parse_point_id

__all__ = ["QdrantXaiNodePostprocessor", "explanation_metadata"]

logger = logging.getLogger(__name__)

#: what ``Explanation.to_dict`` gives that the metadata carries, in its order
_KEYS = (
    "words",
    "text",
    "words_side",
    "word_method",
    "words_left_out",
    "chars_left_out",
    "heatmap",
    "heatmap_side",
)


class QdrantXaiNodePostprocessor(BaseNodePostprocessor):
    """Explains why each node retrieved from LlamaIndex's ``QdrantVectorStore`` matched the
    query, in the node's metadata, where the LLM and the embedding never see it.

    Setup::

        from qdrant_client import QdrantClient
        from llama_index.core import VectorStoreIndex
        from llama_index.vector_stores.qdrant import QdrantVectorStore
        from llama_index_qdrant_xai import ClipEmbedding, QdrantXaiNodePostprocessor

        client = QdrantClient(path="./qdrant_data")
        embed_model = ClipEmbedding.from_pretrained("openai/clip-vit-base-patch32")
        index = VectorStoreIndex.from_vector_store(
            QdrantVectorStore(client=client, collection_name="docs"), embed_model=embed_model)
        explain = QdrantXaiNodePostprocessor(client=client, encoder=embed_model.encoder,
                                             collection_name="docs", image_roots=["photos/"])

    Use::

        engine = index.as_query_engine(node_postprocessors=[explain], llm=llm)
        response = engine.query("a red car")
        for hit in response.source_nodes:
            why = hit.node.metadata["explanation"]
            print(hit.score, why["status"], why["top_words"], why["peak"])

        # or after any retriever
        nodes = explain.postprocess_nodes(index.as_retriever().retrieve("a red car"),
                                          query_str="a red car")

    Each node is returned as it came (a copy, with the same id and content), in the same
    order and with the same score, with ``metadata[metadata_key]`` (``"explanation"``) set
    and that key added to ``excluded_llm_metadata_keys`` and
    ``excluded_embed_metadata_keys``::

        {"status": "ok", "error": None, "kind": "image" | "text",
         "top_words": [[word, score], ...], "words": [[word, score, [start, end]], ...],
         "text": the attributed text (for a text node: the metadata lines and text it was
         embedded with), "words_side": "query" | "hit", "word_method": ...,
         "words_left_out": words of "text" past the model's context (not attributed),
         "chars_left_out": characters past ``text_limits.max_chars`` (not read),
         "heatmap": [[...], ...] (rows x cols, signed) or None, "heatmap_side": "hit" |
         "query" | None, "heatmap_method": ..., "grid": [rows, cols], "peak": [row, col]
         (0-based from the top-left), "crop_box": [x0, y0, x1, y1]}

    A node that cannot be explained (its id is not a point of the collection, its image may
    not be read, its vector comes from another model, ...) gets ``{"status": "failed",
    "error": {"type": ..., "message": why}}``; the others are explained all the same
    (``errors="raise"``: the first such reason is raised instead).

    The node ids are the Qdrant point ids (as LlamaIndex's ``QdrantVectorStore`` writes
    them); the query is the bundle's ``query_str``, or the image at its ``image_path``.

    Args:
        client: the ``QdrantClient`` the vector store uses.
        encoder: the CLIP encoder the collection was embedded with (``ClipEmbedding.encoder``).
        collection_name: the collection the nodes come from.
        image_collection_name: with ``MultiModalVectorStoreIndex``, the collection of its
            image store: ``ImageNode``s are explained from there, the rest from
            ``collection_name``.
        layout: ``"auto"`` (default) detects how the collection is stored; or a preset
            name (``"llamaindex"``, ...) or a :class:`~qdrant_xai.CollectionLayout`.
        image_roots: folders the nodes' images (``image_path``) may be read from; base64
            images (``ImageNode(image=...)``) need none.
        query_image_roots: folders an image query's ``image_path`` may be read from
            (``None``: any local path, the query being the application's own).
        image_limits: decoding bounds for every image read.
        text_limits: bounds on a text query (:class:`~qdrant_xai.TextLimits`); a longer
            ``query_str`` raises :class:`~qdrant_xai.InputTooLargeError` before any work.
        heatmap_method, word_method: explanation methods by name (see ``qdrant_xai.explain``;
            ``word_method=None``: the model's default, ``prefix`` for CLIP, ``tokens`` for
            SigLIP).
        top_words: how many words ``top_words`` lists.
        metadata_key: the metadata key the explanation is put under.
        sidecar, write_sidecar: where the features of the collection's points are kept
            (``"auto"``: ``<collection>__xai``; a name; ``False``: none) and whether
            explaining stores them there (the next explanation of a node reads no image),
            as :class:`~qdrant_xai.Explainer` takes them.
        errors: ``"report"`` (default) puts a failed hit's reason in its metadata;
            ``"raise"`` raises the first one (as :meth:`~qdrant_xai.Explainer.explain`).
        retry: how Qdrant calls are retried (default: :class:`~qdrant_xai.RetryPolicy`).
    """

    client: QdrantClient = Field(exclude=True)
    encoder: ClipEncoder = Field(exclude=True)
    collection_name: str
    image_collection_name: str | None = None
    layout: str | CollectionLayout | None = Field(default="auto", exclude=True)
    image_roots: list[str | Path] = Field(default_factory=list)
    query_image_roots: list[str | Path] | None = None
    image_limits: ImageLimits = Field(default_factory=ImageLimits, exclude=True)
    text_limits: TextLimits = Field(default_factory=TextLimits, exclude=True)
    heatmap_method: str = "decomposition"
    word_method: str | None = None
    top_words: int = Field(default=3, ge=0)
    metadata_key: str = Field(default="explanation", min_length=1)
    sidecar: str | bool = "auto"
    write_sidecar: bool = True
    errors: Literal["report", "raise"] = "report"
    retry: RetryPolicy | None = Field(default=None, exclude=True)

    _explainers: dict[str, Explainer] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _check(self) -> QdrantXaiNodePostprocessor:
        # unknown method and preset names raise here (both are ValueErrors)
        HEATMAP_METHODS.create(self.heatmap_method)
        if self.word_method is not None:
            WORD_METHODS.create(self.word_method)
        if self.layout is not None and self.layout != "auto":
            layout_named(self.layout)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "QdrantXaiNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """The nodes, in their order with their scores, each with its explanation."""
        if not nodes:
            return []
        query = self._query(query_bundle)
        by_collection: dict[str, list[int]] = {}
        for i, hit in enumerate(nodes):
            by_collection.setdefault(self._collection_of(hit), []).append(i)
        explained: dict[int, dict[str, Any]] = {}
        for name, positions in by_collection.items():
            explained.update(self._explain(name, query, nodes, positions))
        return [self._with_explanation(hit, explained[i]) for i, hit in enumerate(nodes)]

    # -- steps ----------------------------------------------------------------------------

    def _query(self, query_bundle: QueryBundle | None) -> str | LoadedImage:
        if query_bundle is None:
            raise ValueError(
                "QdrantXaiNodePostprocessor explains nodes for a query: call "
                "postprocess_nodes(nodes, query_str=...) or pass a query_bundle"
            )
        if query_bundle.image_path:
            return load_query_image(
                query_bundle.image_path, roots=self.query_image_roots, limits=self.image_limits
            )
        if not query_bundle.query_str.strip():
            raise ValueError("the query bundle has neither a query_str nor an image_path")
        self.text_limits.check(query_bundle.query_str, what="query_str", setting="text_limits")
        return query_bundle.query_str

    def _collection_of(self, hit: NodeWithScore) -> str:
        if self.image_collection_name is not None and isinstance(hit.node, ImageNode):
            return self.image_collection_name
        return self.collection_name

    def _explain(
        self,
        collection_name: str,
        query: str | LoadedImage,
        nodes: Sequence[NodeWithScore],
        positions: list[int],
    ) -> dict[int, dict[str, Any]]:
        """The explanation metadata of the nodes at ``positions`` (of one collection)."""
        results: dict[int, dict[str, Any]] = {}
        hits: list[tuple[int, models.ScoredPoint]] = []
        for i in positions:
            try:
                point_id = parse_point_id(nodes[i].node.node_id)
            except PointIdError as exc:  # a node from elsewhere (another store, a docstore)
                if self.errors == "raise":
                    raise
                results[i] = _failed(exc)
                continue
            score = nodes[i].score
            hit = models.ScoredPoint(id=point_id, version=0, score=float(score or 0.0))
            hits.append((i, hit))
        if hits:
            explainer = self._explainer(collection_name)
            explanations = explainer.explain(query, [hit for _, hit in hits], errors=self.errors)
            for (i, _), explanation in zip(hits, explanations, strict=True):
                results[i] = explanation_metadata(explanation, self.top_words)
        return results

    def _explainer(self, collection_name: str) -> Explainer:
        """The explainer of a collection, its layout resolved once (detected by default)."""
        with self._lock:  # the async path runs this in threads
            if collection_name not in self._explainers:
                retry = self.retry or RetryPolicy()
                layout = resolve_layout(self.client, collection_name, self.layout, retry=retry)
                self._explainers[collection_name] = Explainer(
                    self.encoder,
                    self.client,
                    collection_name=collection_name,
                    layout=layout,
                    sources=ImageSourcePolicy.from_roots(
                        self.image_roots, limits=self.image_limits
                    ),
                    heatmap_method=self.heatmap_method,
                    word_method=self.word_method,
                    retry=retry,
                    sidecar=self.sidecar,
                    write_sidecar=self.write_sidecar,
                    text_limits=self.text_limits,
                )
            return self._explainers[collection_name]

    def _with_explanation(self, hit: NodeWithScore, explanation: dict[str, Any]) -> NodeWithScore:
        """A copy of the node carrying ``explanation``, hidden from the LLM and embeddings
        (the retrieved node itself is left as it was)."""
        node, key = hit.node, self.metadata_key
        if key in node.metadata:
            logger.info("node %s: metadata[%r] replaced by its explanation", node.node_id, key)
        update = {
            "metadata": {**node.metadata, key: explanation},
            "excluded_llm_metadata_keys": _with(node.excluded_llm_metadata_keys, key),
            "excluded_embed_metadata_keys": _with(node.excluded_embed_metadata_keys, key),
        }
        return NodeWithScore(node=node.model_copy(update=update), score=hit.score)


def explanation_metadata(explanation: Explanation, top_words: int = 3) -> dict[str, Any]:
    """The JSON-ready explanation a node carries (see :class:`QdrantXaiNodePostprocessor`)."""
    full = explanation.to_dict()
    if not explanation.ok:
        return {"status": full["status"], "error": full["error"]}
    peak = explanation.peak()
    return {
        "status": full["status"],
        "error": None,
        "kind": explanation.hit_kind,
        "top_words": [[w.word, round(w.score, 6)] for w in explanation.top_words(top_words)],
        **{key: full[key] for key in _KEYS},
        "heatmap_method": full["heatmap_method"],
        "grid": None if explanation.heatmap is None else list(explanation.heatmap.shape),
        "peak": None if peak is None else list(peak),
        "crop_box": full["crop_box"],
    }


def _failed(error: QdrantXaiError) -> dict[str, Any]:
    return {"status": "failed", "error": {"type": type(error).__name__, "message": str(error)}}


def _with(keys: list[str], key: str) -> list[str]:
    return list(keys) if key in keys else [*keys, key]
