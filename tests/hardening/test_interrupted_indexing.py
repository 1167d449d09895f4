"""Interrupted indexing: ``qdrant-xai index`` killed with SIGKILL at random moments, rerun.

The indexer runs as a real child process of the real command line (the ``qdrant_xai``
module, as ``python -m qdrant_xai`` runs it, forked by :mod:`tests.hardening._children`) on
an embedded Qdrant folder, and is killed with SIGKILL at seeded random moments between its
start and its expected end, and at least once as soon as the storage shows a new point
being written. It is rerun until a run completes; then a fresh embedded client checks that
every image and caption is there exactly once, that no point has a partial or undecodable
feature object, that every point matches an uninterrupted reference run, and that the final
run's summary adds up with what the store held before it. The runs use one torch thread
(``--threads 1``): the tiny model gains nothing from more, and a busy 2-core machine slows
threaded runs tenfold.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, QdrantXaiError
from qdrant_xai.storage.indexer import Indexer
from qdrant_xai.storage.schema import PayloadKeys
from tests.hardening._children import ForkServer, Run, drive, kill_loop
from tests.hardening._interrupted_runs import (
    BATCH,
    FAMILY,
    SEED,
    Audit,
    Corpus,
    close,
    decode_features,
    job_size,
    make_corpus,
    read_points,
    record_and_check,
    sqlite_count,
    summary_numbers,
    vector_of,
)

pytestmark = [pytest.mark.hardening, pytest.mark.slow]

COLLECTION = "photos"
SUMMARY = re.compile(r"indexed (\d+) images and (\d+) texts; (\d+) unchanged; (\d+) skipped")


def audit_index(
    points: dict[Any, models.Record],
    corpus: Corpus,
    encoder: ClipEncoder,
    reference: dict[Any, models.Record] | None,
) -> Audit:
    """Every stored point must be whole and expected; with ``reference``, all must be there
    and match the uninterrupted run's points."""
    audit = Audit()
    key, (gh, gw), dim = encoder.fingerprint.key, encoder.grid, encoder.dim
    expected = {**corpus.images, **corpus.captions}
    audit.extra = [pid for pid in points if pid not in expected]
    if reference is not None:
        audit.lost = [pid for pid in expected if pid not in points]
    for pid, record in points.items():
        if pid not in expected:
            continue
        payload = record.payload or {}
        try:
            if pid in corpus.images:
                vector = vector_of(record, "image", dim)
                features = decode_features(payload, key, (gh, gw, dim))
                assert payload[PayloadKeys.KIND] == "image"
                assert payload[PayloadKeys.SOURCE] == corpus.images[pid]
                assert payload[PayloadKeys.CAPTION_IDS] == corpus.caption_ids[pid]
            else:
                vector = vector_of(record, "text", dim)
                words = payload[PayloadKeys.WORDS]
                features = decode_features(payload, key, (len(words), dim))
                text, image_id = corpus.captions[pid]
                assert payload[PayloadKeys.KIND] == "text"
                assert (payload[PayloadKeys.TEXT], payload[PayloadKeys.IMAGE_ID]) == (
                    text,
                    image_id,
                )
            assert payload[PayloadKeys.FINGERPRINT] == key
        except (AssertionError, KeyError, ValueError, TypeError, QdrantXaiError) as exc:
            audit.partial.append(f"{pid}: {type(exc).__name__} {exc}")
            continue
        if reference is not None and pid in reference:
            ref = reference[pid]
            ref_payload = ref.payload or {}
            ref_features = decode_features(ref_payload, key, (None,) * features.ndim)
            same_rest = {k: v for k, v in payload.items() if k != PayloadKeys.FEATURES} == {
                k: v for k, v in ref_payload.items() if k != PayloadKeys.FEATURES
            }
            name = "image" if pid in corpus.images else "text"
            if not (
                same_rest
                and close(features, ref_features)
                and close(vector, vector_of(ref, name, dim))
            ):
                audit.differing.append(str(pid))
    return audit


def test_indexing_survives_sigkill(
    fork_server: ForkServer,
    tiny_model_dir: Path,
    tiny_encoder: ClipEncoder,
    tmp_path: Path,
    figures: Any,
) -> None:
    n, kills = job_size(figures)
    corpus = make_corpus(tmp_path / "images", n)
    assert len(corpus.images) == n
    rng = random.Random(SEED)

    def argv(store: Path) -> list[str]:
        return [
            "index", str(corpus.folder), "--captions", str(corpus.csv),
            "--model", str(tiny_model_dir), "--path", str(store),
            "--collection", COLLECTION, "--batch-size", str(BATCH), "--threads", "1",
        ]  # fmt: skip

    # the uninterrupted reference: what the store must hold, and how long a run takes
    ref_store = tmp_path / "reference"
    reference = drive(
        fork_server,
        argv(ref_store),
        tmp_path / "logs-ref",
        lambda: sqlite_count(ref_store, COLLECTION),
        watch=True,
    )
    assert reference.rc == 0, reference.stderr
    assert summary_numbers(SUMMARY, reference) == (n, len(corpus.captions), 0, 0)
    ref_points = read_points(ref_store, COLLECTION)
    ref_audit = audit_index(ref_points, corpus, tiny_encoder, ref_points)
    ref_audit.assert_whole()

    store = tmp_path / "store"
    seen = Audit()
    half_batches = 0

    def after_kill(run: Run) -> None:
        nonlocal half_batches
        points = read_points(store, COLLECTION)
        seen.absorb(audit_index(points, corpus, tiny_encoder, None))
        # a caption on disk without its image: the kill hit the middle of an upsert
        half_batches += run.on_disk != run.before and any(
            image_id not in points
            for pid, (_, image_id) in corpus.captions.items()
            if pid in points
        )

    total = n + len(corpus.captions)
    log = kill_loop(
        fork_server,
        argv(store),
        tmp_path / "logs",
        kills=kills,
        rng=rng,
        progress=lambda: sqlite_count(store, COLLECTION),
        total=total,
        reference=reference,
        after_kill=after_kill,
        batch=BATCH,
    )

    # what the last run must do: (re)index exactly the images whose points are incomplete
    before = read_points(store, COLLECTION)
    todo = [
        iid
        for iid in corpus.images
        if iid not in before or any(c not in before for c in corpus.caption_ids[iid])
    ]
    final = drive(
        fork_server, argv(store), tmp_path / "logs-final", lambda: sqlite_count(store, COLLECTION)
    )
    assert final.rc == 0, final.stderr
    indexed, texts, unchanged, skipped = summary_numbers(SUMMARY, final)
    expected_texts = sum(len(corpus.caption_ids[iid]) for iid in todo)
    consistent = (
        indexed + unchanged + skipped == n
        and skipped == 0
        and indexed == len(todo)
        and texts == expected_texts
    )

    audit = audit_index(read_points(store, COLLECTION), corpus, tiny_encoder, ref_points)
    figures.record(FAMILY, "seed", str(SEED))
    figures.record(FAMILY, "images", n)
    figures.record(
        FAMILY, "captions (CSV rows; distinct)", f"{corpus.csv_rows}; {len(corpus.captions)}"
    )
    record_and_check(
        figures,
        "indexing",
        log=log,
        kills=kills,
        total=total,
        reference=reference,
        half_written="an upsert",
        half_batches=half_batches,
        seen=seen,
        audit=audit,
        consistent=consistent,
    )
    assert consistent, (final.stdout, len(todo), expected_texts)


def test_repeated_caption_row_is_one_point(tiny_encoder: ClipEncoder, tmp_path: Path) -> None:
    """A caption listed twice for an image is one point, counted once (the summary of a
    rerun after a kill is checked against the points, so it must count what it writes)."""
    corpus = make_corpus(tmp_path / "images", 4)  # one row repeated, image 0 has 3 rows
    client = QdrantClient(":memory:")
    try:
        indexer = Indexer(client, tiny_encoder, collection_name=COLLECTION, batch_size=BATCH)
        summary = indexer.index_folder(corpus.folder, captions=corpus.csv, progress=False)
        points = {p.id: p for p in client.scroll(COLLECTION, limit=100, with_payload=True)[0]}
    finally:
        client.close()
    assert corpus.csv_rows == len(corpus.captions) + 1
    assert (summary.indexed_images, summary.indexed_texts) == (4, len(corpus.captions))
    assert set(points) == {*corpus.images, *corpus.captions}
    for iid, caption_ids in corpus.caption_ids.items():
        assert points[iid].payload[PayloadKeys.CAPTION_IDS] == caption_ids  # type: ignore[index]
