"""Collections written by LlamaIndex's ``QdrantVectorStore`` (llama-index-vector-stores-qdrant),
as its users write them.

The embedding model is a LlamaIndex ``MultiModalEmbedding`` over the tiny CLIP (what a user
with their own CLIP writes: LlamaIndex decides what is embedded and calls it). Text nodes
are embedded by LlamaIndex as ``node.get_content(metadata_mode=MetadataMode.EMBED)``
(metadata lines, then the text); image nodes as their image (``resolve_image()``: the file
of ``image_path``, the bytes of base64 ``image``).

* text: ``SimpleDirectoryReader`` over ``.txt`` files, ``VectorStoreIndex.from_documents``
  (``file_path`` is in the embedded text, the other file metadata excluded).
* nodes: ``TextNode(text=..., metadata=...)`` with a custom ``metadata_template``,
  ``metadata_separator`` and ``excluded_embed_metadata_keys``, whose ``file_path`` names
  the picture the caption describes, through ``VectorStoreIndex(nodes, ...)``.
* images: ``MultiModalVectorStoreIndex.from_documents`` over ``ImageDocument``s as
  llama-index-readers-file's ``ImageReader`` makes them (``image_path`` and file metadata,
  or ``image=<base64>`` as with ``keep_image=True``), the Qdrant store as ``image_store``.
* mixed: text and image nodes in one collection with ``vector_store.add(nodes)``, their
  embeddings computed by LlamaIndex's own ``embed_nodes`` / ``embed_image_nodes``.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
from llama_index.core.embeddings import MultiModalEmbedding
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.indices.utils import embed_image_nodes, embed_nodes
from llama_index.core.schema import BaseNode, ImageDocument, ImageNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.core.vector_stores.utils import metadata_dict_to_node
from llama_index.vector_stores.qdrant import QdrantVectorStore
from pydantic import ConfigDict
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder
from tests.integration.foreign._base import Scene, Scenes, Written, WrittenPoint, point_key

LIBRARY = "llamaindex"


class TinyClipEmbedding(MultiModalEmbedding):
    """A LlamaIndex multimodal embedding over a qdrant-xai ``ClipEncoder``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    encoder: Any = None

    def _get_text_embedding(self, text: str) -> list[float]:
        return [float(x) for x in self.encoder.embed_texts([text])[0]]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    def _get_image_embedding(self, img_file_path: Any) -> list[float]:
        image = (
            img_file_path.getvalue() if isinstance(img_file_path, BytesIO) else Path(img_file_path)
        )
        return [float(x) for x in self.encoder.embed_images([image])[0]]

    async def _aget_image_embedding(self, img_file_path: Any) -> list[float]:
        return self._get_image_embedding(img_file_path)


def _quiet_local_mode(write: Callable[..., Written]) -> Callable[..., Written]:
    """The store creates a payload index on ``doc_id`` with each new collection, which
    qdrant-client's embedded mode answers with a warning (it has no payload indexes)."""

    @functools.wraps(write)
    def quiet(*args: Any, **kwargs: Any) -> Written:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Payload indexes have no effect in the local Qdrant")
            return write(*args, **kwargs)

    return quiet


def embedding(encoder: ClipEncoder) -> TinyClipEmbedding:
    return TinyClipEmbedding(encoder=encoder, model_name="tiny-clip")


def open_store(client: QdrantClient, collection_name: str) -> QdrantVectorStore:
    return QdrantVectorStore(collection_name=collection_name, client=client)


def _points_from_collection(client: QdrantClient, written_name: str) -> list[WrittenPoint]:
    """The points LlamaIndex wrote, with what it embedded: the node rebuilt from its
    payload by LlamaIndex (``metadata_dict_to_node``), its EMBED-mode content for text
    nodes, its image for image nodes."""
    records, _ = client.scroll(written_name, limit=1000, with_payload=True)
    points = []
    for record in records:
        node = metadata_dict_to_node(record.payload or {})
        if isinstance(node, ImageNode):
            path = Path(node.image_path) if node.image_path else None
            points.append(
                WrittenPoint(
                    point_key(record.id), "image", image=path, inline=node.image is not None
                )
            )
        else:
            text = node.get_content(metadata_mode=MetadataMode.EMBED)
            points.append(WrittenPoint(point_key(record.id), "text", embedded_text=text))
    return points


def _written(
    writer: str, client: QdrantClient, name: str, scenes: Scenes, inline: dict[str, Path]
) -> Written:
    points = [
        WrittenPoint(p.id, p.kind, p.embedded_text, inline.get(p.id, p.image), p.inline)
        for p in _points_from_collection(client, name)
    ]
    store = open_store(client, name)
    return Written(writer, LIBRARY, name, tuple(points), scenes, store.dense_vector_name)


def _inline_files(client: QdrantClient, name: str, scenes: Scenes) -> dict[str, Path]:
    """Point id → scene file of each inline image point (matched by its base64)."""
    by_b64 = {s.base64(): s.image for s in scenes.items}
    found = {}
    for record in client.scroll(name, limit=1000, with_payload=True)[0]:
        content = json.loads((record.payload or {}).get("_node_content", "{}"))
        if content.get("image") in by_b64:
            found[point_key(record.id)] = by_b64[content["image"]]
    return found


@_quiet_local_mode
def write_text(client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Scenes) -> Written:
    docs = SimpleDirectoryReader(str(scenes.root / "texts")).load_data()
    VectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(vector_store=open_store(client, name)),
        embed_model=embedding(encoder),
    )
    return _written("llamaindex-text", client, name, scenes, {})


def _caption_nodes(scenes: list[Scene]) -> list[TextNode]:
    return [
        TextNode(
            text=s.caption,
            metadata={
                "file_path": str(s.image),
                "shapes": s.caption.count(" and ") + 1,
                "batch": "2024-05",
            },
            metadata_template="{key}=>{value}",
            metadata_separator=" | ",
            excluded_embed_metadata_keys=["batch"],
        )
        for s in scenes
    ]


@_quiet_local_mode
def write_nodes(client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Scenes) -> Written:
    VectorStoreIndex(
        _caption_nodes(list(scenes.items)),
        storage_context=StorageContext.from_defaults(vector_store=open_store(client, name)),
        embed_model=embedding(encoder),
    )
    return _written("llamaindex-nodes", client, name, scenes, {})


def _image_documents(scenes: list[Scene], *, inline: bool) -> list[ImageDocument]:
    if inline:
        return [
            ImageDocument(
                image=s.base64(), image_mimetype="image/png", metadata={"file_name": s.image.name}
            )
            for s in scenes
        ]
    return [
        ImageDocument(
            image_path=str(s.image),
            metadata={
                "file_path": str(s.image),
                "file_name": s.image.name,
                "file_type": "image/png",
            },
        )
        for s in scenes
    ]


@_quiet_local_mode
def write_images(client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Scenes) -> Written:
    items = list(scenes.items)
    docs = _image_documents(items[:4], inline=False) + _image_documents(items[4:], inline=True)
    MultiModalVectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(image_store=open_store(client, name)),
        embed_model=embedding(encoder),
        image_embed_model=embedding(encoder),
    )
    return _written("llamaindex-images", client, name, scenes, _inline_files(client, name, scenes))


def add_embedded(store: QdrantVectorStore, nodes: list[BaseNode], encoder: ClipEncoder) -> None:
    """``vector_store.add`` with embeddings computed as LlamaIndex computes them."""
    model = embedding(encoder)
    images = [n for n in nodes if isinstance(n, ImageNode)]
    texts = [n for n in nodes if not isinstance(n, ImageNode)]
    vectors = {**embed_nodes(texts, model), **embed_image_nodes(images, model)}
    for node in nodes:
        node.embedding = vectors[node.node_id]
    store.add(nodes)


@_quiet_local_mode
def write_mixed(client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Scenes) -> Written:
    items = list(scenes.items)
    nodes: list[BaseNode] = [*_caption_nodes(items)]
    nodes += [
        ImageNode(image_path=str(s.image), metadata={"file_name": s.image.name}) for s in items[:3]
    ]
    nodes += [ImageNode(image=s.base64(), image_mimetype="image/png") for s in items[3:5]]
    add_embedded(open_store(client, name), nodes, encoder)
    return _written("llamaindex-mixed", client, name, scenes, _inline_files(client, name, scenes))


def search(
    client: QdrantClient, written: Written, encoder: ClipEncoder, query: str, k: int
) -> list[tuple[str | None, float, str]]:
    """What a LlamaIndex user's retrieval returns (ids, similarities, the nodes)."""
    store = open_store(client, written.collection_name)
    result = store.query(
        VectorStoreQuery(
            query_embedding=embedding(encoder).get_query_embedding(query), similarity_top_k=k
        )
    )
    return [
        (node_id, score, node.model_dump_json())
        for node_id, score, node in zip(
            result.ids or [], result.similarities or [], result.nodes or [], strict=True
        )
    ]
