"""Shared parts of the LangChain integration tests (``test_langchain_*.py``): the scenes
they index, building a retriever, and reading the PNG data URIs and Documents it returns.

The fixtures are defined here under their names (``scene_dir``, ``captions``, ``indexed``);
a test module imports the ``*_fixture`` functions to use them.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_qdrant_xai import QdrantXaiRetriever
from PIL import Image
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.storage.indexer import read_captions_csv

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
