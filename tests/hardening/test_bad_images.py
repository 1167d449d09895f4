"""Bad images through the library: a corpus of broken and hostile files indexed whole.

A generated corpus of broken, hostile and unusual files (:mod:`tests.hardening.bad_corpus`)
is indexed in-process: every bad file must be reported once with a reason naming its
problem, every other file indexed with decodable features, nothing may crash or hang the
run, the counts must add up, and a second run must change nothing. Byte-level mutations of
valid files go through :func:`~qdrant_xai.load_image`, and special files are refused
without blocking. The same corpus through the command line: ``test_bad_images_cli.py``.
"""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, ImageLoadError, load_image
from qdrant_xai.images.load import iter_image_files
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.indexer import Indexer, IndexSummary
from qdrant_xai.storage.schema import IMAGE_VECTOR, PayloadKeys, image_point_id
from tests.hardening._bad_images import (
    FAMILY,
    check_refusals,
    duplicate_points,
    folder_failures,
    no_hang,
    note_kinds,
    permissions_apply,
    points_by_id,
    source_of,
)
from tests.hardening.bad_corpus import FIRST_FRAME, Entry, build_corpus, mutation_seeds

pytestmark = pytest.mark.hardening


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def embedding(encoder: ClipEncoder, image: Image.Image) -> np.ndarray:
    return encoder.encode_images([image.convert("RGB")])[0].embedding


def check_indexed(
    root: Path,
    entries: list[Entry],
    points: dict[str, dict],
    encoder: ClipEncoder,
) -> None:
    """Every acceptable entry has its point: right fingerprint, decodable features, size."""
    codec = PayloadFeatureCodec("fp16")
    key = encoder.fingerprint.key
    for entry in (e for e in entries if not e.refused):
        source = source_of(root, entry)
        point = points.get(image_point_id(source))
        assert point is not None, f"{entry.kind} ({source}) was not indexed"
        payload = point["payload"]
        assert payload[PayloadKeys.SOURCE] == source
        assert payload[PayloadKeys.FINGERPRINT] == key, entry.kind
        features = codec.decode(payload[PayloadKeys.FEATURES], fingerprint=key)
        assert features.shape == (*encoder.grid, encoder.dim), entry.kind
        assert np.isfinite(features).all(), entry.kind
        assert (payload[PayloadKeys.WIDTH], payload[PayloadKeys.HEIGHT]) == entry.size, entry.kind


def check_unusual_pixels(
    root: Path, entries: list[Entry], points: dict[str, dict], encoder: ClipEncoder
) -> None:
    """The animated GIF is indexed from its first frame, the EXIF rotation is applied."""
    paths = {e.kind: Path(source_of(root, e)) for e in entries}

    def stored(kind: str) -> np.ndarray:
        vector = points[image_point_id(str(paths[kind]))]["vector"][IMAGE_VECTOR]
        return np.asarray(vector, dtype=np.float32)

    gif = stored("animated-gif")
    first = embedding(encoder, Image.new("RGB", (40, 24), FIRST_FRAME))
    later = embedding(encoder, Image.new("RGB", (40, 24), (0, 0, 200)))
    assert cosine(gif, first) > 0.999
    assert cosine(gif, first) > cosine(gif, later) + 1e-3

    rotated = stored("exif-rotated-jpeg")
    with Image.open(paths["exif-rotated-jpeg"]) as raw:
        raw.load()
        upright = raw.transpose(Image.Transpose.ROTATE_270)
        as_stored = raw.copy()
    assert upright.size == (24, 40) and as_stored.size == (40, 24)
    assert cosine(rotated, embedding(encoder, upright)) > 0.999
    assert cosine(rotated, embedding(encoder, upright)) > cosine(
        rotated, embedding(encoder, as_stored)
    )


def check_counts(summary: IndexSummary, files: int) -> None:
    images_failed = len(summary.failed) - len(folder_failures(summary.failed))
    assert summary.indexed_images + images_failed + summary.unchanged == files, str(summary)


# -- the in-process run -----------------------------------------------------------------


def test_corpus_is_indexed_around_every_bad_file(
    tmp_path: Path, tiny_encoder: ClipEncoder, figures
) -> None:
    root = (tmp_path / "corpus").resolve()
    entries = build_corpus(root, unreadable=permissions_apply(tmp_path))
    files = list(iter_image_files(root))
    assert len(files) == len(entries)  # every file found once, dir.png is not a file
    refused = [e for e in entries if e.refused]
    acceptable = [e for e in entries if not e.refused]

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        indexer = Indexer(client, tiny_encoder, collection_name="bad", batch_size=8)
        crashes = 0
        start = time.perf_counter()
        try:
            with no_hang():
                first = indexer.index_folder(root, progress=False)
        except Exception:
            crashes += 1
            figures.record(FAMILY, "crashes", crashes)
            raise
        seconds = time.perf_counter() - start

        reasons = check_refusals(root, entries, first.failed)
        assert first.indexed_images == len(acceptable)
        assert first.unchanged == 0 and first.indexed_texts == 0
        check_counts(first, len(files))
        points = points_by_id(client, "bad")
        assert len(points) == len(acceptable)
        check_indexed(root, entries, points, tiny_encoder)
        check_unusual_pixels(root, entries, points, tiny_encoder)

        with no_hang():
            second = indexer.index_folder(root, progress=False)
        assert second.indexed_images == 0 and second.indexed_texts == 0
        assert second.unchanged == len(acceptable)
        assert sorted(second.failed) == sorted(first.failed)
        check_counts(second, len(files))
        again = points_by_id(client, "bad")
        assert again.keys() == points.keys()
        dupes = duplicate_points(client, "bad", again)
        assert dupes == 0
    finally:
        client.close()

    note_kinds(figures, {e.kind for e in entries}, set(reasons))
    figures.record(FAMILY, "files in corpus (in-process run)", len(files))
    figures.record(FAMILY, "refused (in-process run)", len(refused))
    figures.record(FAMILY, "indexed (in-process run)", first.indexed_images)
    figures.record(FAMILY, "unchanged on the second run", second.unchanged)
    figures.record(FAMILY, "crashes", crashes)
    figures.record(FAMILY, "duplicate points", dupes)
    figures.record(FAMILY, "time of the in-process run (s)", round(seconds, 2))


# -- mutated files: only ImageLoadError may come out --------------------------------------


def test_mutated_files_load_or_raise_image_load_error(figures) -> None:
    """Random byte flips, cuts and splices of every format (and of EXIF) through load_image:
    each gives an image or an ImageLoadError; warnings are errors here, so none may leak."""
    seeds = mutation_seeds()
    cases = figures.count(FAMILY, "mutated files", reduced=3_000, full=30_000)
    rng = np.random.default_rng(0)
    names = sorted(seeds)
    outcomes: Counter[str] = Counter()
    crashes: list[str] = []
    for i in range(cases):
        name = names[i % len(names)]
        data = _mutate(bytearray(seeds[name]), rng)
        try:
            load_image(data)
            outcomes["loaded"] += 1
        except ImageLoadError:
            outcomes["refused"] += 1
        except Exception as exc:
            crashes.append(f"{name}: {type(exc).__name__}: {exc}")
    figures.record(
        FAMILY,
        "mutated files loaded / refused",
        f"{outcomes['loaded']:,} / {outcomes['refused']:,}",
    )
    figures.record(FAMILY, "mutated files crashing", len(crashes))
    assert not crashes, crashes[:10]


def _mutate(data: bytearray, rng: np.random.Generator) -> bytes:
    op = rng.integers(0, 3)
    if op == 0:  # flip bytes
        for _ in range(rng.integers(1, 10)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
    elif op == 1:  # cut
        data = data[: rng.integers(0, len(data))]
    else:  # splice random bytes in
        at = int(rng.integers(0, len(data)))
        data[at : at + int(rng.integers(1, 64))] = rng.integers(
            0, 256, int(rng.integers(0, 64)), dtype=np.uint8
        ).tobytes()
    return bytes(data)


def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO and a device are refused on the open descriptor; the check does not race."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with no_hang(20):
        with pytest.raises(ImageLoadError, match="FIFO"):
            load_image(fifo)
        with pytest.raises(ImageLoadError, match="character device"):
            load_image("/dev/zero")
        with pytest.raises(ImageLoadError, match="directory"):
            load_image(tmp_path)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
