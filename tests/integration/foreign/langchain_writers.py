"""Collections written by langchain-qdrant's ``QdrantVectorStore``, as its users write them.

The store is set up as langchain-qdrant's documentation does it (``create_collection`` with
one unnamed cosine vector, then ``QdrantVectorStore(client=..., collection_name=...,
embedding=...)``), with qdrant-xai's CLIP ``ClipEmbeddings`` (the text tower for texts,
``embed_image`` for images). Texts go in through the public API (``add_documents``), loaded
by LangChain's own loaders (``TextLoader``, ``CSVLoader``): ``metadata.source`` is the text
or CSV file.

langchain-qdrant has no ``add_images`` and no public way to store a vector the embeddings'
``embed_documents`` did not compute, so image points are written the way its ``add_texts``
writes points, with the image vectors in place of text vectors: payloads from the store's
own ``_build_payloads`` (its ``page_content``/``metadata`` keys), ids as ``add_texts``
makes them, ``store.client.upsert``. Images named by path carry the file name as
``page_content`` and the path in ``metadata.source``; inline images carry raw base64 as
``page_content`` and no metadata, as ``Chroma.add_images`` stores them.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore
from langchain_qdrant_xai import ClipEmbeddings
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder
from tests.integration.foreign._base import (
    Scene,
    Scenes,
    Written,
    WrittenPoint,
    point_key,
    text_points,
)

LIBRARY = "langchain"


def _loaders() -> Any:
    """langchain-community's document loaders (its import warns that the package is being
    sunset; the loaders are still what LangChain's documentation uses)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`langchain-community` is being sunset")
        from langchain_community import document_loaders
    return document_loaders


def open_store(
    client: QdrantClient, collection_name: str, encoder: ClipEncoder
) -> QdrantVectorStore:
    """The store on an existing collection, as a LangChain user opens it to search."""
    return QdrantVectorStore(
        client=client, collection_name=collection_name, embedding=ClipEmbeddings(encoder=encoder)
    )


def _new_store(
    client: QdrantClient, collection_name: str, encoder: ClipEncoder
) -> QdrantVectorStore:
    client.create_collection(
        collection_name,
        vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE),
    )
    return open_store(client, collection_name, encoder)


def add_documents(store: QdrantVectorStore, docs: list[Document]) -> list[WrittenPoint]:
    ids = [str(uuid.uuid4()) for _ in docs]
    added = store.add_documents(documents=docs, ids=ids)
    return text_points(added, [d.page_content for d in docs])


def add_images(
    store: QdrantVectorStore, scenes: list[Scene], *, inline: bool, b64: list[str] | None = None
) -> list[WrittenPoint]:
    """Image points, as ``add_texts`` writes points (see the module docstring). ``b64``
    overrides the stored base64 of inline images (e.g. a truncated upload); the vectors are
    always those of the image files."""
    embeddings = store.embeddings
    assert isinstance(embeddings, ClipEmbeddings)
    vectors = embeddings.embed_image([str(s.image) for s in scenes])
    if inline:
        texts = b64 if b64 is not None else [s.base64() for s in scenes]
        metadatas = None
    else:
        texts = [s.image.name for s in scenes]
        metadatas = [{"source": str(s.image)} for s in scenes]
    payloads = QdrantVectorStore._build_payloads(
        texts, metadatas, store.content_payload_key, store.metadata_payload_key
    )
    ids = [uuid.uuid4().hex for _ in scenes]
    store.client.upsert(
        collection_name=store.collection_name,
        points=[
            models.PointStruct(id=i, vector={store.vector_name: v}, payload=p)
            for i, v, p in zip(ids, vectors, payloads, strict=True)
        ],
    )
    return [
        WrittenPoint(point_key(i), "image", image=s.image, inline=inline)
        for i, s in zip(ids, scenes, strict=True)
    ]


def _text_documents(scenes: Scenes) -> list[Document]:
    loaders = _loaders()
    return [doc for s in scenes.items for doc in loaders.TextLoader(str(s.caption_file)).load()]


def _csv_documents(scenes: Scenes) -> list[Document]:
    return list(_loaders().CSVLoader(str(scenes.csv)).load())


def _written(writer: str, name: str, scenes: Scenes, points: list[WrittenPoint]) -> Written:
    return Written(writer, LIBRARY, name, tuple(points), scenes, QdrantVectorStore.VECTOR_NAME)


def write_text(client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Scenes) -> Written:
    """Captions loaded with ``TextLoader``, one ``.txt`` file each (``metadata.source``)."""
    store = _new_store(client, name, encoder)
    return _written("langchain-text", name, scenes, add_documents(store, _text_documents(scenes)))


def write_csv(client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Scenes) -> Written:
    """Rows of ``captions.csv`` loaded with ``CSVLoader`` (``page_content`` ``"image: ...
    \\ncaption: ..."``, ``metadata.source`` the CSV file, ``metadata.row``)."""
    store = _new_store(client, name, encoder)
    return _written("langchain-csv", name, scenes, add_documents(store, _csv_documents(scenes)))


def write_images(client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Scenes) -> Written:
    """Images only: four named by path, two inline as base64."""
    store = _new_store(client, name, encoder)
    items = list(scenes.items)
    points = add_images(store, items[:4], inline=False) + add_images(store, items[4:], inline=True)
    return _written("langchain-images", name, scenes, points)


def write_mixed(client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Scenes) -> Written:
    """``CSVLoader`` captions and images (three by path, two inline) in one collection."""
    store = _new_store(client, name, encoder)
    items = list(scenes.items)
    points = add_documents(store, _csv_documents(scenes))
    points += add_images(store, items[:3], inline=False)
    points += add_images(store, items[3:5], inline=True)
    return _written("langchain-mixed", name, scenes, points)


def search(
    client: QdrantClient, written: Written, encoder: ClipEncoder, query: str, k: int
) -> list[tuple[Document, float]]:
    """What a LangChain user's search returns."""
    return open_store(client, written.collection_name, encoder).similarity_search_with_score(
        query, k=k
    )
