"""A collection as mcp-server-qdrant 0.8 writes it (its ``qdrant-store`` tool).

mcp-server-qdrant embeds with FastEmbed, whose model download cannot run here, and needs
``mcp<2`` beside our ``mcp>=2``, so it is not installed: this module writes, through
qdrant-client, the layout its source (``mcp_server_qdrant/qdrant.py`` and
``embeddings/fastembed.py`` of 0.8.1, read, not copied) documents:

* the collection has one named vector, ``fast-<model>`` where ``<model>`` is the last part
  of the FastEmbed model name, lower-cased (``FastEmbedProvider.get_vector_name``), cosine
  distance, the model's dimension;
* each ``qdrant-store`` call upserts one point: id ``uuid4().hex``, that vector, the
  passage embedding of the stored text, payload ``{"document": text, "metadata": <the
  tool's metadata argument, any JSON or None>}``.

The model named is FastEmbed's CLIP text model (``EMBEDDING_MODEL=Qdrant/clip-ViT-B-32-text``),
the one a user who wants CLIP vectors configures; the vectors are the tiny CLIP's text
vectors of ``document`` (FastEmbed's ``passage_embed`` of a CLIP text model is the plain
text embedding).
"""

from __future__ import annotations

import uuid
from typing import Any

from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder
from tests.integration.foreign._base import Scenes, Written, WrittenPoint, point_key

LIBRARY = "fastembed"
EMBEDDING_MODEL = "Qdrant/clip-ViT-B-32-text"
#: as ``FastEmbedProvider.get_vector_name`` derives it
VECTOR_NAME = f"fast-{EMBEDDING_MODEL.split('/')[-1].lower()}"


def _store(
    client: QdrantClient, name: str, encoder: ClipEncoder, content: str, metadata: Any
) -> WrittenPoint:
    if not client.collection_exists(name):
        client.create_collection(
            name,
            vectors_config={
                VECTOR_NAME: models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
            },
        )
    point_id = uuid.uuid4().hex
    vector = [float(x) for x in encoder.embed_texts([content])[0]]
    client.upsert(
        collection_name=name,
        points=[
            models.PointStruct(
                id=point_id,
                vector={VECTOR_NAME: vector},
                payload={"document": content, "metadata": metadata},
            )
        ],
    )
    return WrittenPoint(point_key(point_id), "text", embedded_text=content)


def write_memories(
    client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Scenes
) -> Written:
    """One ``qdrant-store`` call per caption: half with metadata naming the caption's text
    file (``metadata.source``), half with no metadata (the tool's default)."""
    points = [
        _store(
            client,
            name,
            encoder,
            s.caption,
            {"source": str(s.caption_file)} if i % 2 == 0 else None,
        )
        for i, s in enumerate(scenes.items)
    ]
    return Written("mcp-server-qdrant", LIBRARY, name, tuple(points), scenes, VECTOR_NAME)


def search(
    client: QdrantClient, written: Written, encoder: ClipEncoder, query: str, k: int
) -> list[tuple[str, Any]]:
    """What mcp-server-qdrant's ``qdrant-find`` returns: each entry's document and metadata."""
    points = client.query_points(
        collection_name=written.collection_name,
        query=[float(x) for x in encoder.embed_texts([query])[0]],
        using=VECTOR_NAME,
        limit=k,
        query_filter=None,
    ).points
    return [((p.payload or {})["document"], (p.payload or {}).get("metadata")) for p in points]
