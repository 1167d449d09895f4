"""Inputs as people give them: the captions CSV Excel writes, an empty query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def test_the_captions_csv_excel_writes_is_read(tmp_path: Path) -> None:
    from qdrant_xai.storage.indexer import read_captions_csv

    csv = tmp_path / "captions.csv"
    csv.write_bytes("image,caption\r\na.png,a red circle\r\n".encode("utf-8-sig"))
    assert read_captions_csv(csv) == {"a.png": ["a red circle"]}


def test_an_empty_text_query_is_refused(tiny_encoder: Any) -> None:
    from qdrant_client import QdrantClient

    from qdrant_xai import QdrantXaiError, Searcher, ensure_collection

    client = QdrantClient(":memory:")
    ensure_collection(client, "c", dim=tiny_encoder.dim)
    searcher = Searcher(client, tiny_encoder, collection_name="c")
    with pytest.raises(QdrantXaiError, match="empty"):
        searcher.search("  ")
