"""Shared parts of the LangChain integration tests (``test_langchain_*.py``): the scenes
they index, building a retriever, a collection written by langchain-qdrant as its users
write one, and reading the PNG data URIs and Documents the retriever returns.

The fixtures are defined here under their names (``scene_dir``, ``captions``, ``indexed``);
a test module imports the ``*_fixture`` functions to use them.
"""

from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore
from langchain_qdrant_xai import ClipEmbeddings, QdrantXaiRetriever
from PIL import Image
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.storage.indexer import read_captions_csv
from qdrant_xai.storage.layouts import looks_like_base64_image

QUERY = "a red circle"


@pytest.fixture(scope="module", name="scene_dir")
def scene_dir_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    write_scene_folder(folder, 10, seed=3)
    return folder


@pytest.fixture(scope="module", name="captions")
def captions_fixture(scene_dir: Path) -> dict[str, str]:
    """Caption of each scene, by absolute path (the indexed source)."""
    rows = read_captions_csv(scene_dir / "captions.csv")
    return {str((scene_dir / name).resolve()): caps[0] for name, caps in rows.items()}


def index_scenes(client: QdrantClient, encoder: ClipEncoder, name: str, folder: Path) -> None:
    summary = Indexer(client, encoder, collection_name=name).index_folder(
        folder, captions=folder / "captions.csv", progress=False
    )
    assert summary.failed == []


@pytest.fixture(name="indexed")
def indexed_fixture(
    client: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> QdrantClient:
    index_scenes(client, shapes_encoder, collection_name, scene_dir)
    return client


def make_retriever(
    client: Any, encoder: ClipEncoder, name: str, **options: Any
) -> QdrantXaiRetriever:
    return QdrantXaiRetriever(client=client, encoder=encoder, collection_name=name, **options)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def open_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def decode_png(uri: str) -> Image.Image:
    header, _, data = uri.partition(",")
    assert header == "data:image/png;base64"
    image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    assert image.format == "PNG"
    image.load()
    return image


def summary(docs: list[Document]) -> list[tuple[Any, float, list[Any] | None]]:
    return [
        (
            d.metadata["_id"],
            d.metadata["score"],
            (d.metadata.get("explanation") or {}).get("heatmap"),
        )
        for d in docs
    ]


def close_documents(a: list[Document], b: list[Document]) -> bool:
    assert [d.metadata["_id"] for d in a] == [d.metadata["_id"] for d in b]
    assert [d.metadata["score"] for d in a] == pytest.approx([d.metadata["score"] for d in b])
    for x, y in zip(a, b, strict=True):
        assert np.allclose(
            x.metadata["explanation"]["heatmap"], y.metadata["explanation"]["heatmap"]
        )
    return True


#: the keys the retriever adds to a Document's metadata (those a stored key displaced are
#: under ``xai_<key>``)
RETRIEVER_KEYS = ("score", "rank", "kind", "explanation", "image", "image_error")


class ImageDocumentEmbeddings(ClipEmbeddings):
    """How langchain-qdrant users add images (the store has no ``add_images``): the
    "texts" they add that are images (base64, as ``Chroma.add_images`` stores them, or
    image paths) are embedded with CLIP's image tower; other texts (such as the probe
    ``"dummy_text"`` the store embeds to learn the size) and queries stay text."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [
            self.embed_image([t])[0]
            if looks_like_base64_image(t) or t.endswith(".png")
            else self.encoder.embed_texts([t])[0].tolist()
            for t in texts
        ]


def write_langchain_collection(
    client: QdrantClient, name: str, encoder: ClipEncoder, folder: Path
) -> QdrantVectorStore:
    """A mixed collection written through langchain-qdrant's ``QdrantVectorStore``: captions
    with metadata (``add_texts``), the rows of ``captions.csv`` (``CSVLoader`` documents:
    ``metadata.source`` is the CSV file), four images as base64 ``page_content`` with
    metadata whose keys collide with the retriever's (``kind``, ``score``), and four as
    paths also named in ``metadata.source``. Returns the text store (the one users query).
    """
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE),
    )
    store = QdrantVectorStore(client, name, embedding=ClipEmbeddings(encoder=encoder))
    rows = read_captions_csv(folder / "captions.csv")
    captions = sorted({caps[0] for caps in rows.values()})
    store.add_texts(
        captions, metadatas=[{"topic": "caption", "n": i} for i in range(len(captions))]
    )
    with warnings.catch_warnings():  # langchain-community warns that it is being sunset
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.document_loaders import CSVLoader
    store.add_documents(CSVLoader(file_path=str(folder / "captions.csv")).load())
    images = QdrantVectorStore(client, name, embedding=ImageDocumentEmbeddings(encoder=encoder))
    scenes = sorted(folder.glob("scene_*.png"))
    images.add_texts(
        [base64.b64encode(path.read_bytes()).decode() for path in scenes[:4]],
        metadatas=[{"kind": "photo", "score": 5, "name": path.name} for path in scenes[:4]],
    )
    paths = [str(path.resolve()) for path in scenes[4:8]]
    images.add_texts(paths, metadatas=[{"source": path} for path in paths])
    return store


def stored_metadata(document: Document) -> dict[str, Any]:
    """A Document's metadata without the keys the retriever adds: what langchain-qdrant's
    own retriever returns."""
    meta = document.metadata
    added = {f"xai_{key}" if f"xai_{key}" in meta else key for key in RETRIEVER_KEYS}
    return {k: v for k, v in meta.items() if k not in added}
