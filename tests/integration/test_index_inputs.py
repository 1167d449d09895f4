"""``qdrant-xai index`` on a folder as people have it: a captions CSV written beside the
folder with ``./`` and absolute paths and one huge field, formats that are not read, a
multi-page TIFF, a file name with a newline. What the user sees is the printed summary."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient

from qdrant_xai.cli import main


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "sub/c.png", "new\nline.png"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / name)
    pages = [Image.new("RGB", (40, 40), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    pages[0].save(root / "scan.tif", save_all=True, append_images=pages[1:])
    (root / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (root / "notes.txt").write_text("not an image, not listed")
    stray = tmp_path / "stray.png"
    Image.new("RGB", (40, 40)).save(stray)
    with (tmp_path / "captions.csv").open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerow(["./a.png", "a caption by ./ path"])  # row 2
        writer.writerow([str((root / "b.png").resolve()), "a caption by absolute path"])
        writer.writerow(["imgs/sub/c.png", "a caption relative to the CSV"])  # row 4
        writer.writerow(["b.png", "x" * 200_000])  # row 5: over TextLimits.max_chars
        writer.writerow([str(stray), "an image outside the folder"])  # row 6
        writer.writerow(["sub/c.png", "a second caption"])  # row 7
    return root


def test_index_prints_every_skipped_row_and_file_on_its_own_line(
    folder: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "q"
    argv = ["index", str(folder), "--captions", str(tmp_path / "captions.csv"), "--no-progress"]
    argv += ["--path", str(store), "--collection", "c", "--model", str(tiny_model_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "indexed 5 images and 4 texts; 0 unchanged; 3 skipped", out
    skipped = [line for line in lines if line.startswith("  skipped ")]
    notes = [line for line in lines if line.startswith("  note ")]
    assert len(lines) == 1 + len(skipped) + len(notes)  # no line forged by a file name
    assert len(skipped) == 3 and len(notes) == 1
    svg, long_row, outside = skipped
    assert svg.startswith(f"  skipped {(folder / 'logo.svg').resolve()}: unsupported format")
    assert "convert it to PNG or JPEG" in svg
    assert long_row.startswith(f"  skipped {tmp_path / 'captions.csv'} row 5: ")
    assert "200,000 characters" in long_row and "TextLimits.max_chars" in long_row
    assert f"row 6: {tmp_path / 'stray.png'} is outside the indexed folder" in outside
    assert notes == [f"  note {(folder / 'scan.tif').resolve()}: indexed its first page of 3"]
    assert "no such image" not in out

    client = QdrantClient(path=str(store))
    try:
        texts, _ = client.scroll("c", limit=50, with_payload=["text"])
        assert sorted(str((p.payload or {})["text"]) for p in texts if p.payload) == [
            "a caption by ./ path",
            "a caption by absolute path",
            "a caption relative to the CSV",
            "a second caption",
        ]
    finally:
        client.close()
    assert main(argv) == 0
    again = capsys.readouterr().out.splitlines()
    assert again[0] == "indexed 0 images and 0 texts; 5 unchanged; 3 skipped"
