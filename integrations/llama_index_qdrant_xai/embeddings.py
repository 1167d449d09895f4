"""CLIP embeddings for LlamaIndex: texts and images in one space, from a qdrant-xai encoder."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import Field, model_validator
from llama_index.core.embeddings import MultiModalEmbedding
from llama_index.core.schema import ImageType

from qdrant_xai import DEFAULT_MODEL, ClipEncoder, ImageLimits, LoadedImage, load_image
from qdrant_xai.images.query import load_query_image

__all__ = ["ClipEmbedding"]

Embedding = list[float]


class ClipEmbedding(MultiModalEmbedding):
    """A LlamaIndex ``MultiModalEmbedding`` backed by a qdrant-xai
    :class:`~qdrant_xai.ClipEncoder`: the embedding model of an index whose hits
    :class:`~llama_index_qdrant_xai.QdrantXaiNodePostprocessor` explains.

    Texts and images land in CLIP's joint space, L2-normalised (use cosine distance, as
    LlamaIndex's ``QdrantVectorStore`` does).

    Setup::

        from llama_index_qdrant_xai import ClipEmbedding
        embed_model = ClipEmbedding.from_pretrained("openai/clip-vit-base-patch32")

    Use::

        index = VectorStoreIndex(nodes, storage_context=storage, embed_model=embed_model)
        index = MultiModalVectorStoreIndex.from_documents(
            documents, storage_context=storage, embed_model=embed_model,
            image_embed_model=embed_model)     # ImageNodes embedded with the image tower
        embed_model.get_image_embedding("photos/car.jpg")

    Args:
        encoder: the CLIP encoder.
        image_roots: folders image paths may be read from; ``None`` (default) reads any
            local path (the images are the application's own).
        image_limits: decoding bounds for images.
        embed_batch_size: texts or images per forward pass.
    """

    encoder: ClipEncoder = Field(exclude=True, description="the qdrant-xai CLIP encoder")
    image_roots: list[str | Path] | None = None
    image_limits: ImageLimits = Field(default_factory=ImageLimits, exclude=True)
    embed_batch_size: int = Field(default=32, gt=0, le=2048)

    @model_validator(mode="after")
    def _name_the_model(self) -> ClipEmbedding:
        if self.model_name == "unknown":
            self.model_name = str(self.encoder.model_id)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "QdrantXaiClipEmbedding"

    @classmethod
    def from_pretrained(
        cls, model_name_or_path: str | os.PathLike[str] = DEFAULT_MODEL, **kwargs: Any
    ) -> ClipEmbedding:
        """Loads the encoder with :meth:`ClipEncoder.from_pretrained`.

        Keyword arguments that are fields of this class (``image_roots``,
        ``embed_batch_size``, ...) configure the embedding; the rest (``device``, ``dtype``,
        ``revision``, ``local_files_only``, ...) go to the encoder.
        """
        own = {key: kwargs.pop(key) for key in list(kwargs) if key in cls.model_fields}
        return cls(encoder=ClipEncoder.from_pretrained(model_name_or_path, **kwargs), **own)

    # -- texts --------------------------------------------------------------------------

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        """The CLIP text vector (texts longer than the model's context are truncated)."""
        return [float(x) for x in self.encoder.embed_texts([text])[0]]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.encoder.embed_texts(list(texts)).tolist()

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    # -- images -------------------------------------------------------------------------

    def _get_image_embedding(self, img_file_path: ImageType) -> Embedding:
        """The CLIP image vector of a path (``ImageNode.image_path``), the bytes of an
        encoded image (``ImageNode.resolve_image()`` of a base64 ``image``), a data URI or
        raw base64.

        Raises:
            ImageLoadError: an image is unreadable, corrupt or too large.
            SourceNotAllowedError: a path outside ``image_roots``.
        """
        return self._get_image_embeddings([img_file_path])[0]

    def _get_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        images = [self._load(image) for image in img_file_paths]
        return self.encoder.embed_images(images).tolist()

    async def _aget_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return await asyncio.to_thread(self._get_image_embedding, img_file_path)

    async def _aget_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_image_embeddings, img_file_paths)

    def _load(self, image: ImageType) -> LoadedImage:
        if isinstance(image, io.BytesIO):
            return load_image(image.getvalue(), limits=self.image_limits, name="<image bytes>")
        return load_query_image(str(image), roots=self.image_roots, limits=self.image_limits)
