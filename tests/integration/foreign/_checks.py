"""What the acceptance tests check on each hit, and the user actions they take: spoil a
point (delete its image file, edit its text) or add a broken inline image."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import ImageNode
from PIL import Image
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder
from tests.integration.foreign import langchain_writers, llamaindex_writers
from tests.integration.foreign._backends import CliRun
from tests.integration.foreign.writers import (
    Written,
    WrittenPoint,
    edit_text_without_reembedding,
    point_key,
)

QUERY = "a red circle"
#: longest error message a hit may carry (the issue saw 44 k characters of base64)
MAX_ERROR = 1000

#: a text a user wrote over a stored one without re-embedding it: long enough that the
#: tiny CLIP's vector of it disagrees with the old one even behind LlamaIndex's metadata
#: lines (cosine about 0.91; the vector check needs 0.98)
EDITED_TEXT = "rewritten by hand after indexing: " + "grey hexagons and black stars, " * 4


def search_args(written: Written, query: str, *extra: str, limit: int | None = None) -> list[str]:
    """``search`` over every point of the collection (or ``limit`` hits), explained, without
    ``--layout``; ``query`` is a text, or ``--image=PATH``."""
    what = [query] if not query.startswith("--image=") else ["--image", query.split("=", 1)[1]]
    return [
        "search",
        *what,
        "--collection",
        written.collection_name,
        "--limit",
        str(limit or len(written.points)),
        "--explain",
        "--image-root",
        str(written.scenes.root),
        *extra,
    ]


def json_records(run: CliRun) -> dict[str, dict[str, Any]]:
    """The JSON lines of a ``search --json`` run, by point id."""
    records = [json.loads(line) for line in run.out.splitlines() if line.strip()]
    return {point_key(r["id"]): r for r in records}


def check_explained(record: dict[str, Any], point: WrittenPoint) -> None:
    """An explained hit of the right kind: an image point has a heatmap over the hit, a text
    point is explained as a text (never read as an image)."""
    where = f"{point.kind} point {point.id} ({point.embedded_text or point.image}): {record}"
    assert record["status"] == "ok" and record["error"] is None, where
    assert record["hit_kind"] == point.kind, where
    if point.kind == "image":
        assert record["heatmap"] is not None and record["heatmap_side"] == "hit", where
    else:
        assert record["heatmap_side"] != "hit", where
        assert record["words"], where


def check_failed(record: dict[str, Any], point: WrittenPoint) -> None:
    """A hit reported as failed, with a short reason; a text point's reason is never that
    it is not an image."""
    where = f"{point.kind} point {point.id}: {json.dumps(record)[:2000]}"
    assert record["status"] == "failed", where
    error = record["error"]
    assert error and error["type"] and error["message"], where
    assert len(error["message"]) < MAX_ERROR, where
    assert record["heatmap"] is None and record["words"] == [], where
    if point.kind == "text":
        assert error["type"] not in ("ImageLoadError", "InlineImageError"), where


def spoil(client: QdrantClient, written: Written) -> dict[str, str]:
    """What users do to a collection over time: one image file deleted (when images are
    named by path), one text edited without re-embedding it (when there are texts). Returns
    the spoiled point ids, each with a word its failure reason should name."""
    spoiled: dict[str, str] = {}
    files = [p for p in written.of_kind("image") if not p.inline]
    if files:
        assert files[0].image is not None
        files[0].image.unlink()
        spoiled[files[0].id] = files[0].image.name
    texts = written.of_kind("text")
    if texts:
        edit_text_without_reembedding(client, written, texts[0], EDITED_TEXT)
        spoiled[texts[0].id] = "text"
    return spoiled


def delete_image_files(written: Written) -> list[Path]:
    """Deletes every image file the collection's points were embedded from."""
    gone = sorted({p.image for p in written.of_kind("image") if p.image is not None})
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def _noise_png(side: int = 160) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def truncated_base64() -> str:
    """A large PNG cut in half (an upload that broke off), as raw base64: it starts like a
    PNG, so it is taken for an image, and cannot be decoded."""
    data = _noise_png()
    return base64.b64encode(data[: len(data) // 2]).decode()


def add_broken_inline_image(
    client: QdrantClient, written: Written, encoder: ClipEncoder, b64: str
) -> WrittenPoint:
    """One more inline image point whose stored base64 is ``b64``, written through the
    writing library (the vector is that of a whole picture, computed before the upload
    broke off)."""
    scene = written.scenes.items[0]
    if written.library == langchain_writers.LIBRARY:
        store = langchain_writers.open_store(client, written.collection_name, encoder)
        (point,) = langchain_writers.add_images(store, [scene], inline=True, b64=[b64])
        return point
    node = ImageNode(image=b64, image_mimetype="image/png")
    node.embedding = [float(x) for x in encoder.embed_images([scene.image])[0]]
    llamaindex_writers.open_store(client, written.collection_name).add([node])
    return WrittenPoint(point_key(node.node_id), "image", image=scene.image, inline=True)
