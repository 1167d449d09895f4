"""Ingest as people feed it: batches of maximum-size images, captions CSVs with huge fields
and paths written every way, formats that are not read, multi-page files, file names with
newlines.

* 16 black 8000x8000 PNGs (62 KB files, each at the 64 Mpx limit) are indexed and then
  backfilled by the CLI in a child process under an address-space cap of 4 GB; the child's
  peak resident memory is measured (``os.wait4``). Reduced run: 4 images (both counts are
  marked slow: each image costs seconds to decode and resize). Before the pixel budget,
  16 such images needed 7.86 GB to index.
* A CSV with a 200,000-character field and a 1 MB field: each refused on its own row, named
  by its number, the other rows indexed; the reader's peak allocation is measured.
* Image paths in the CSV written ``./x.png``, relative to the CSV, absolute inside the
  folder and absolute outside it.
* ``.ico``, ``.avif``, ``.heic``, ``.svg``, a 3-page TIFF, an animated GIF and WebP, a dim
  16-bit PNG and file names with a newline, through ``qdrant-xai index``.
"""

from __future__ import annotations

import csv
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer, load_image
from qdrant_xai.cli import main
from qdrant_xai.images import load as load_module
from qdrant_xai.storage.captions import read_captions

pytestmark = pytest.mark.hardening

FAMILY = "ingest"

MEMORY_CAP = 4 * 1024**3  # bytes of address space for the child (RLIMIT_AS)
RSS_BOUND = 3 * 1024**3  # what the child may reach: one image pass, whatever the count
CHILD_TIMEOUT = 1800.0
SIDE = 8000

# Runs a command with RLIMIT_AS set, replacing itself (same pid) so that os.wait4 reports
# the command's own peak resident memory.
_CAPPED = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1]))); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def run_capped(argv: list[str], cwd: Path) -> tuple[int, str, str, int, float]:
    """Exit status, stdout, stderr, peak RSS in bytes and seconds of ``python -m qdrant_xai
    ARGV`` under :data:`MEMORY_CAP`."""
    out, err = cwd / "child.out", cwd / "child.err"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    command = [sys.executable, "-c", _CAPPED, str(MEMORY_CAP), sys.executable]
    command += ["-m", "qdrant_xai", *argv]
    start = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        pid = os.posix_spawn(
            sys.executable,
            command,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdout.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, stderr.fileno(), 2),
            ],
        )
    timer = threading.Timer(CHILD_TIMEOUT, os.kill, (pid, 9))
    timer.start()
    try:
        _, status, usage = os.wait4(pid, 0)
    finally:
        timer.cancel()
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss * 1024  # kilobytes on Linux
    return code, out.read_text("utf-8"), err.read_text("utf-8", "replace"), peak, seconds


def black_pngs(folder: Path, count: int) -> int:
    """``count`` black SIDE x SIDE PNGs; returns the size of one file."""
    folder.mkdir(parents=True)
    Image.new("RGB", (SIDE, SIDE)).save(folder / "black_00.png")
    data = (folder / "black_00.png").read_bytes()
    for i in range(1, count):
        (folder / f"black_{i:02d}.png").write_bytes(data)
    return len(data)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and ru_maxrss in KB: Linux")
def test_maximum_size_images_are_indexed_and_backfilled_in_bounded_memory(
    tmp_path: Path, figures
) -> None:
    count = figures.count(FAMILY, "black 8000x8000 PNGs per run", reduced=4, full=16)
    size = black_pngs(tmp_path / "imgs", count)
    store = ["--path", str(tmp_path / "q"), "--collection", "big", "--model", "shapes"]
    index = ["index", str(tmp_path / "imgs"), "--no-progress", *store]
    code, out, err, peak, seconds = run_capped(index, tmp_path)
    assert "Traceback" not in err and code == 0, err[-3000:]
    assert out.splitlines()[0] == f"indexed {count} images and 0 texts; 0 unchanged; 0 skipped"
    assert peak < RSS_BOUND, peak
    figures.record(
        FAMILY,
        f"index {count} black {SIDE}x{SIDE} PNGs ({size // 1024} KB each), 4 GB cap",
        f"peak RSS {peak / 1024**3:.2f} GB, {seconds:.0f} s (2 cores, shared machine)",
    )
    # the stored features are "standard": a "full" backfill re-reads every image
    backfill = ["backfill", "--profile", "full", "--image-root", str(tmp_path / "imgs")]
    code, out, err, peak, seconds = run_capped([*backfill, "--no-progress", *store], tmp_path)
    assert "Traceback" not in err and code == 0, err[-3000:]
    assert out.splitlines()[0] == f"backfilled {count} points; 0 unchanged; 0 skipped"
    assert peak < RSS_BOUND, peak
    figures.record(
        FAMILY,
        f"backfill the same {count} images (pages of 32 points), 4 GB cap",
        f"peak RSS {peak / 1024**3:.2f} GB, {seconds:.0f} s (2 cores, shared machine)",
    )


# -- the captions CSV ---------------------------------------------------------------------------


def noise(seed: int, side: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_huge_csv_fields_are_refused_row_by_row(
    tiny_encoder: ClipEncoder, tmp_path: Path, figures
) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        noise(i).save(root / f"{i}.png")
    path = tmp_path / "captions.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerow(["0.png", "first"])
        writer.writerow(["1.png", "x" * 200_000])  # row 3
        writer.writerow(["2.png", "y" * 1_000_000])  # row 4, unquoted: one 1 MB line
        writer.writerow(["0.png", 'a quoted "1 MB" field:\n' + "z" * 1_000_000])  # row 5
        writer.writerow(["2.png", "last"])
    tracemalloc.start()
    start = time.perf_counter()
    table = read_captions(path)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [r.row for r in table.rows] == [2, 6] and [r for r, _ in table.refused] == [3, 4, 5]
    assert peak < 20 * 1024**2  # the megabyte lines are skipped, never held whole
    figures.record(
        FAMILY,
        "CSV with a 200,000-character field and two 1 MB fields (one quoted, multi-line)",
        f"read in {seconds * 1000:.0f} ms, peak allocation {peak / 1024**2:.1f} MB; rows 3, 4 "
        "and 5 refused by number, the others read",
    )

    summary = Indexer(QdrantClient(":memory:"), tiny_encoder, collection_name="c").index_folder(
        root, captions=path, progress=False
    )
    assert (summary.indexed_images, summary.indexed_texts) == (3, 2)
    labels = [source for source, _ in summary.failed]
    assert labels == [f"{path} row {n}" for n in (3, 4, 5)]
    assert all("TextLimits.max_chars" in reason for _, reason in summary.failed)


def test_csv_image_paths_written_every_way(
    tiny_encoder: ClipEncoder, tmp_path: Path, figures
) -> None:
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(("a.png", "b.png", "sub/c.png", "d.png")):
        noise(i).save(root / name)
    noise(9).save(tmp_path / "outside.png")
    written = {
        "./a.png": "dot slash",
        str((root / "b.png").resolve()): "absolute inside",
        "imgs/sub/c.png": "relative to the CSV",
        "d.png": "relative to the folder",
        str(tmp_path / "outside.png"): "absolute outside",
    }
    path = tmp_path / "captions.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("image", "caption"), *written.items()])
    summary = Indexer(QdrantClient(":memory:"), tiny_encoder, collection_name="c").index_folder(
        root, captions=path, progress=False
    )
    assert (summary.indexed_images, summary.indexed_texts) == (4, 4)
    [(label, reason)] = summary.failed
    assert label == str(tmp_path / "outside.png") and "outside the indexed folder" in reason
    figures.record(
        FAMILY,
        "CSV paths ./x.png, relative to the CSV, relative to the folder, absolute inside",
        "4 of 4 captions attached",
    )
    figures.record(
        FAMILY,
        "CSV path absolute outside the folder",
        "refused on its row ('captions.csv row 6: ... is outside the indexed folder')",
    )


# -- formats and names, through the command line ----------------------------------------------


def test_odd_formats_pages_and_newline_names_through_the_cli(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], figures
) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    noise(1).save(root / "favicon.ico", sizes=[(40, 40)])
    avif = load_module._pillow_reads_avif()
    if avif:
        noise(2).save(root / "photo.avif")
    else:
        (root / "photo.avif").write_bytes(b"\x00\x00\x00\x1cftypavif")
    heif = load_module._heif_plugin()
    if heif:
        load_module._register_plugins()
        noise(3).save(root / "IMG_0001.heic", format="HEIF")
    else:
        (root / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (root / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    pages = [noise(i) for i in (4, 5, 6)]
    pages[0].save(root / "scan.tif", save_all=True, append_images=pages[1:])
    pages[0].save(root / "anim.gif", save_all=True, append_images=pages[1:], duration=40)
    pages[0].save(root / "anim.webp", save_all=True, append_images=pages[1:], duration=40)
    dim = (1000 + np.arange(1600).reshape(40, 40)).astype(np.uint16)  # about 4..10 of 255
    Image.fromarray(dim).save(root / "dim16.png")
    noise(7).save(root / "evil\n  skipped passwd: forged.png")
    (root / "broken\nname.png").write_bytes(b"not an image")

    argv = ["index", str(root), "--no-progress", "--path", str(tmp_path / "q")]
    assert main([*argv, "--collection", "c", "--model", str(tiny_model_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    skipped = [line for line in lines[1:] if line.startswith("  skipped ")]
    notes = [line for line in lines[1:] if line.startswith("  note ")]
    assert len(lines) == 1 + len(skipped) + len(notes), lines  # nothing forged
    readable = 1 + avif + heif + 3 + 1 + 1  # ico, avif, heic, the 3 paged files, dim16, evil
    assert lines[0] == f"indexed {readable} images and 0 texts; 0 unchanged; {len(skipped)} skipped"
    by_name = {Path(line.split(": ", 1)[0].split(" ", 3)[-1]).name: line for line in skipped}
    assert "unsupported format" in by_name["logo.svg"]
    assert "broken\\nname.png" in by_name and "forged" not in " ".join(by_name)
    assert heif or "pillow-heif" in by_name["IMG_0001.heic"]
    assert avif or "Pillow" in by_name["photo.avif"]
    assert sorted(line.rsplit(": ", 1)[1] for line in notes) == ["indexed its first page of 3"] * 3
    assert np.asarray(load_image(root / "dim16.png").image).max() == round(2599 / 257)
    figures.record(
        FAMILY,
        "odd formats through `qdrant-xai index`",
        f".ico indexed; .avif {'indexed' if avif else 'skipped, naming Pillow 11.3+'}; .heic "
        f"{'indexed (pillow-heif)' if heif else 'skipped, naming pillow-heif'}; .svg skipped "
        "with what to do; 3-page TIFF, GIF and WebP noted 'indexed its first page of 3'; dim "
        "16-bit PNG stays dim (max 10 of 255)",
    )
    figures.record(
        FAMILY,
        "file names with a newline",
        f"{len(skipped) + len(notes)} entries, each on one line (newlines shown as \\n); "
        "no line forged",
    )


def test_the_cap_is_real(tmp_path: Path) -> None:
    """The memory cap of the bounded-memory probe does stop a child that goes over it."""
    if sys.platform != "linux":
        pytest.skip("RLIMIT_AS: Linux")
    env = {**os.environ}
    command = [sys.executable, "-c", _CAPPED, str(512 * 1024**2), sys.executable, "-c"]
    command.append("b = bytearray(1024 ** 3)")
    pid = os.posix_spawn(sys.executable, command, env)
    _, status, _ = os.wait4(pid, 0)
    assert os.waitstatus_to_exitcode(status) != 0  # MemoryError: the cap holds
