"""CLIP embeddings for LangChain vector stores: texts and images in one space."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field

from qdrant_xai import DEFAULT_MODEL, ClipEncoder, ImageLimits
from qdrant_xai.images.query import load_query_image

__all__ = ["ClipEmbeddings"]


class ClipEmbeddings(BaseModel, Embeddings):
    """LangChain ``Embeddings`` backed by a qdrant-xai :class:`~qdrant_xai.ClipEncoder`.

    Texts and images land in CLIP's joint space, so a vector store filled with image
    vectors answers text queries (and the reverse). Vectors are L2-normalised; use
    cosine distance.

    Setup::

        from langchain_qdrant import QdrantVectorStore
        from langchain_qdrant_xai import ClipEmbeddings

        embeddings = ClipEmbeddings.from_pretrained("openai/clip-vit-base-patch32")

    Use::

        store = QdrantVectorStore.from_texts(captions, embeddings, location=":memory:",
                                             collection_name="captions")
        store.similarity_search_with_score("a red car")
        vector = embeddings.embed_image(["car.jpg"])[0]   # image -> caption search
        store.similarity_search_with_score_by_vector(vector)

        # or over a collection indexed by qdrant-xai (named vectors "image" / "text")
        QdrantVectorStore(client, "photos", embeddings, vector_name="text",
                          content_payload_key="text")

    Args:
        encoder: the CLIP encoder.
        batch_size: texts or images per forward pass.
        image_roots: folders :meth:`embed_image` may read paths from; ``None`` (default)
            reads any local path.
        image_limits: decoding bounds for images.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    encoder: ClipEncoder
    batch_size: int = Field(default=32, ge=1)
    image_roots: list[str | Path] | None = None
    image_limits: ImageLimits = Field(default_factory=ImageLimits)

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        **kwargs: Any,
    ) -> ClipEmbeddings:
        """Loads the encoder with :meth:`ClipEncoder.from_pretrained`.

        Keyword arguments that are fields of this class (``batch_size``, ``image_roots``,
        ``image_limits``) configure the embeddings; the rest (``device``, ``dtype``,
        ``revision``, ``local_files_only``, ...) go to the encoder.
        """
        own = {key: kwargs.pop(key) for key in list(kwargs) if key in cls.model_fields}
        return cls(encoder=ClipEncoder.from_pretrained(model_name_or_path, **kwargs), **own)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """CLIP text vectors (texts longer than the model's context are truncated)."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            vectors += self.encoder.embed_texts(chunk).tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """The CLIP text vector of a query."""
        return self.embed_documents([text])[0]

    def embed_image(self, uris: list[str]) -> list[list[float]]:
        """CLIP image vectors of local paths, ``data:image/...;base64,`` URIs or raw base64.

        Raises:
            ImageLoadError: an image is unreadable, corrupt or too large.
            SourceNotAllowedError: a path outside ``image_roots``.
        """
        vectors: list[list[float]] = []
        for start in range(0, len(uris), self.batch_size):
            images = [
                load_query_image(str(uri), roots=self.image_roots, limits=self.image_limits)
                for uri in uris[start : start + self.batch_size]
            ]
            vectors += self.encoder.embed_images(images).tolist()
        return vectors
