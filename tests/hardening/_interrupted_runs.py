"""Shared parts of the interrupted-run tests (``test_interrupted_*.py``).

The generated corpus of scenes and captions, the progress a running CLI has left on disk,
the :class:`Audit` of what a fresh client finds in a store after a kill and at the end, and
the figures and checks common to indexing and backfill.
"""

from __future__ import annotations

import os
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.indexer import read_captions_csv
from qdrant_xai.storage.schema import PayloadKeys, image_point_id, text_point_id
from tests.hardening._children import KillLog, Run
from tests.hardening._points import all_points

FAMILY = "interrupt"
SEED = int(os.environ.get("QDRANT_XAI_INTERRUPT_SEED", "20250607"))
BATCH = 8


def sqlite_count(store: Path, collection: str, needle: str | None = None) -> int:
    """Points on disk in an embedded store (read beside the running client); with
    ``needle``, only points whose stored record contains that payload key."""
    path = store / "collection" / collection / "storage.sqlite"
    if not path.exists():
        return 0
    query = "SELECT count(*) FROM points"
    if needle is not None:
        query += f" WHERE instr(point, CAST('{needle}' AS BLOB)) > 0"
    # read-write only so that a journal left by a kill is rolled back (as the next client
    # would do); only SELECTs are sent
    with closing(sqlite3.connect(path, timeout=10)) as db:
        try:
            return int(db.execute(query).fetchone()[0])
        except sqlite3.OperationalError as exc:  # the file is there, its table not yet
            if "no such table" in str(exc):
                return 0
            raise


# -- checking a store ---------------------------------------------------------------------


@dataclass
class Audit:
    """What a fresh client finds in a store, against what should be there."""

    lost: list[Any] = field(default_factory=list)  # expected ids not stored
    extra: list[Any] = field(default_factory=list)  # stored ids not expected (duplicates)
    partial: list[str] = field(default_factory=list)  # points that are not whole
    differing: list[str] = field(default_factory=list)  # whole but unlike the reference
    pending: list[Any] = field(default_factory=list)  # backfill: no features yet

    def brief(self) -> str:
        parts = ("lost", "extra", "partial", "differing")
        return "; ".join(
            f"{name} {len(getattr(self, name))}: {[str(x)[:120] for x in getattr(self, name)[:3]]}"
            for name in parts
            if getattr(self, name)
        )

    def absorb(self, found: Audit) -> None:
        """Adds what a check after a kill found lost, extra or partial."""
        self.lost += found.lost
        self.extra += found.extra
        self.partial += found.partial

    def assert_whole(self) -> None:
        """No expected point lost, none extra, none partial."""
        assert not self.lost and not self.extra and not self.partial, self.brief()


def read_points(store: Path, collection: str) -> dict[Any, models.Record]:
    """Every point of ``collection``, read by a fresh embedded client (closed again)."""
    client = QdrantClient(path=str(store))
    try:
        if not client.collection_exists(collection):  # killed before it was created
            return {}
        records = all_points(client, collection)
        assert client.count(collection, exact=True).count == len(records)
        return {record.id: record for record in records}
    finally:
        client.close()


def decode_features(payload: dict[str, Any], key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    features = payload.get(PayloadKeys.FEATURES)
    return PayloadFeatureCodec().decode(features, fingerprint=key, shape=shape)


def vector_of(record: models.Record, name: str | None, dim: int) -> list[float]:
    vector: Any = record.vector
    if name is not None:
        vector = vector.get(name) if isinstance(vector, dict) else None
    if not isinstance(vector, list) or len(vector) != dim or not np.isfinite(vector).all():
        raise ValueError(f"vector {name!r} missing or not {dim} finite floats")
    return vector


def close(a: Any, b: Any) -> bool:
    return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=1e-2, atol=2e-3))


@dataclass(frozen=True)
class Corpus:
    """The generated images and captions, and the point ids they must end up as."""

    folder: Path
    csv: Path
    images: dict[str, str]  # image point id -> source
    captions: dict[str, tuple[str, str]]  # text point id -> (caption, image point id)
    caption_ids: dict[str, list[str]]  # image point id -> its caption point ids
    csv_rows: int


def make_corpus(folder: Path, n: int) -> Corpus:
    """``n`` scenes with one caption each, a second caption for every fourth, and one row
    repeated (the same caption twice is one point)."""
    csv = write_scene_folder(folder, n, seed=SEED % 1000, size=48)
    lines = csv.read_text(encoding="utf-8").splitlines()
    rows = [line.split(",", 1) for line in lines[1:]]
    extra = [[name, f"a photo of {text}"] for i, (name, text) in enumerate(rows) if i % 4 == 0]
    rows = [*rows, *extra, rows[0]]
    csv.write_text(
        "\n".join([lines[0], *(f"{name},{text}" for name, text in rows)]) + "\n", encoding="utf-8"
    )
    images: dict[str, str] = {}
    captions: dict[str, tuple[str, str]] = {}
    caption_ids: dict[str, list[str]] = {}
    for name, texts in read_captions_csv(csv).items():
        source = str((folder / name).resolve())
        iid = image_point_id(source)
        images[iid] = source
        ids = list(dict.fromkeys(text_point_id(t, source) for t in texts))
        caption_ids[iid] = ids
        for text in texts:
            captions[text_point_id(text, source)] = (text, iid)
    return Corpus(folder, csv, images, captions, caption_ids, len(rows))


def summary_numbers(pattern: re.Pattern[str], run: Run) -> tuple[int, ...]:
    match = pattern.search(run.stdout)
    assert match, f"no summary in the output:\n{run.stdout}\n{run.stderr}"
    return tuple(int(g) for g in match.groups())


def job_size(figures: Any) -> tuple[int, int]:
    """Images in the corpus and kills per job, at this run's counts."""
    return (
        figures.count(FAMILY, "images", reduced=200, full=400),
        figures.count(FAMILY, "kills per family", reduced=3, full=10),
    )


def record_and_check(
    figures: Any,
    job: str,
    *,
    log: KillLog,
    kills: int,
    total: int,
    reference: Run,
    half_written: str,
    half_batches: int,
    seen: Audit,
    audit: Audit,
    consistent: bool,
) -> None:
    """Records the figures of one job (``"indexing"``, ``"backfill"``), then checks them.

    ``seen`` gathers what the checks after each kill found, ``audit`` what the check after
    the final run found; ``half_written`` names what a kill can cut short (``"an upsert"``).
    The kills must all have been made (one at least triggered by a write), no check may have
    found a point lost, duplicated or partial, and the final store must be whole and like
    the uninterrupted run's.
    """
    figures.record(FAMILY, f"kills survived ({job})", log.kills)
    figures.record(FAMILY, f"kills with work left ({job})", log.with_work_left(total))
    figures.record(FAMILY, f"kills triggered by a write ({job})", log.write_kills)
    figures.record(FAMILY, f"kills that left {half_written} half-written ({job})", half_batches)
    figures.record(FAMILY, f"runs needed ({job})", len(log.runs) + 1)
    figures.record(FAMILY, f"kill moments ({job})", log.moments)
    figures.record(FAMILY, f"uninterrupted run ({job})", f"{reference.seconds:.1f} s")
    figures.add(FAMILY, "points lost", len(audit.lost) + len(seen.lost))
    figures.add(FAMILY, "points duplicated", len(audit.extra) + len(seen.extra))
    figures.add(FAMILY, "partial feature objects", len(audit.partial) + len(seen.partial))
    figures.add(FAMILY, "points unlike an uninterrupted run", len(audit.differing))
    figures.record(FAMILY, f"summaries consistent ({job})", "yes" if consistent else "no")

    assert log.kills == kills and log.write_kills >= 1
    assert not seen.partial and not seen.extra and not seen.lost, seen.brief()
    audit.assert_whole()
    assert not audit.differing, audit.differing[:5]
