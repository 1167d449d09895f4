"""The captions CSV of an image folder: ``image,caption`` rows, several per image."""

from __future__ import annotations

import csv
import os

from qdrant_xai.errors import QdrantXaiError

__all__ = ["read_captions_csv"]


def read_captions_csv(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Captions by image from a CSV with an ``image,caption`` header (several rows per image).

    Image names are kept as written; :meth:`Indexer.index_folder` resolves them against the
    folder being indexed.
    """
    captions: dict[str, list[str]] = {}
    try:
        # utf-8-sig: the byte-order mark Excel writes is not part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
                raise QdrantXaiError(
                    f"{path}: the captions CSV needs a header row with columns 'image' and "
                    f"'caption', found {reader.fieldnames}"
                )
            for row in reader:
                captions.setdefault((row["image"] or "").strip(), []).append(row["caption"] or "")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise QdrantXaiError(f"{path}: cannot read the captions CSV ({exc})") from exc
    return captions
