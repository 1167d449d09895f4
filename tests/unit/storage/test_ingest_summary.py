"""What an indexing run reports, as a user reads it: one line per entry whatever the file
names hold, a note for multi-page files; and the backfill decodes a page within the same
pixel budget as the indexer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from qdrant_client import QdrantClient

from qdrant_xai import Backfiller, ClipEncoder, ImageSourcePolicy, Indexer, IndexSummary
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.images.load import ImageLimits


def test_control_characters_in_names_cannot_forge_summary_lines() -> None:
    summary = IndexSummary(indexed_images=1)
    forged = "/imgs/x.png\n  skipped /etc/passwd: forged"
    summary.failed += [
        (forged, "not an image Pillow can read"),
        ("/imgs/tab\tcr\rnel\x85ls\u2028esc\x1b[31m.png", "reason with\nnewline"),
    ]
    summary.notes.append(("/imgs/multi\n.tif", "indexed its first page of 3"))
    lines = str(summary).splitlines()
    assert lines == [
        "indexed 1 images and 0 texts; 0 unchanged; 2 skipped",
        "  skipped /imgs/x.png\\n  skipped /etc/passwd: forged: not an image Pillow can read",
        "  skipped /imgs/tab\\tcr\\rnel\\x85ls\\u2028esc\\x1b[31m.png: reason with\\nnewline",
        "  note /imgs/multi\\n.tif: indexed its first page of 3",
    ]
    assert summary.failed[0][0] == forged  # the data itself is kept exact


def test_a_file_named_with_a_newline_is_indexed_and_listed_on_one_line(
    tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    noise.save(tmp_path / "fine\nskipped forged.png")
    (tmp_path / "broken\n  skipped x.png").write_bytes(b"not an image")
    pages = [Image.new("RGB", (32, 32), c) for c in ((200, 0, 0), (0, 200, 0))]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    indexer = Indexer(QdrantClient(":memory:"), tiny_encoder, collection_name="c")
    summary = indexer.index_folder(tmp_path, progress=False)
    assert summary.indexed_images == 2 and len(summary.failed) == 1
    lines = str(summary).splitlines()
    assert len(lines) == 3
    assert (
        lines[1].startswith("  skipped ") and "broken\\n  skipped x.png: not an image" in lines[1]
    )
    assert lines[2] == f"  note {(tmp_path / 'pages.tif').resolve()}: indexed its first page of 2"


def test_the_backfill_decodes_a_page_in_passes_within_the_pixel_budget(
    tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    folder = tmp_path / "scenes"
    write_scene_folder(folder, 5, seed=4, size=64)  # 4,096 pixels each
    client = QdrantClient(":memory:")
    Indexer(client, tiny_encoder, collection_name="c").index_folder(folder, progress=False)
    backfiller = Backfiller(
        client,
        tiny_encoder,
        collection_name="c",
        profile="full",  # the stored standard features are not current for it
        batch_size=5,
        sources=ImageSourcePolicy.from_roots(
            [folder], limits=ImageLimits(max_batch_pixels=2 * 4096)
        ),
    )
    passes: list[int] = []
    encode = tiny_encoder.encode_images

    def counting(images, **kwargs):  # type: ignore[no-untyped-def]
        passes.append(len(images))
        return encode(images, **kwargs)

    backfiller.encoder = _Counting(tiny_encoder, counting)  # type: ignore[assignment]
    summary = backfiller.run(progress=False)
    assert (summary.updated, summary.failed) == (5, [])
    assert passes == [2, 2, 1]


class _Counting:
    """The encoder with its image forward counted (everything else passed through)."""

    def __init__(self, encoder: ClipEncoder, encode_images: object) -> None:
        self._encoder, self.encode_images = encoder, encode_images

    def __getattr__(self, name: str) -> object:
        return getattr(self._encoder, name)
