"""Issue 13: the layout of a collection another library wrote is detected, and reads each
point as that library wrote it: its kind, the text it embedded, and an image only where
there is one (no text document is ever taken for an image)."""

from __future__ import annotations

import base64
from pathlib import Path

from PIL import Image

from tests.integration.foreign._backends import Qdrant
from tests.integration.foreign.writers import Written, point_key


def _image_bytes(source: str) -> bytes:
    data = source.partition(",")[2] if source.startswith("data:") else source
    return base64.b64decode(data)


def _is_png(path: str) -> bool:
    with Image.open(path) as image:
        return image.format == "PNG"


def test_detected_layout_reads_what_the_library_wrote(written: Written, qdrant: Qdrant) -> None:
    from qdrant_xai.storage.detect import detect_layout, resolve_layout

    with qdrant.open() as client:
        detected = detect_layout(client, written.collection_name)
        layout = resolve_layout(client, written.collection_name, "auto")
        assert resolve_layout(client, written.collection_name, None) == layout
        records = client.retrieve(
            written.collection_name, [p.id for p in written.points], with_payload=True
        )
    assert detected.name == layout.name == written.library
    assert layout.using("image") == layout.using("text") == (written.using or None)
    points = written.by_id()
    assert len(records) == len(points)
    for record in records:
        point, payload = points[point_key(record.id)], record.payload or {}
        where = f"{point}: {str(payload)[:400]}"
        assert layout.kind_of(payload) == point.kind, where
        source = layout.image_source(payload)
        if point.kind == "text":
            assert layout.text(payload) == point.embedded_text, where
            # an image named in a text's metadata may be offered, a text file never
            assert source is None or _is_png(source), where
        elif point.inline:
            assert point.image is not None and source is not None, where
            assert _image_bytes(source) == point.image.read_bytes(), where
        else:
            assert point.image is not None and source is not None, where
            assert Path(source).resolve() == point.image.resolve(), where
