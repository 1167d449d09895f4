"""Interrupted backfill: ``qdrant-xai backfill`` killed with SIGKILL at random moments, rerun.

A collection as langchain-qdrant writes it (one unnamed vector, no features) is backfilled
by real child processes of the command line (forked by :mod:`tests.hardening._children`) on
an embedded Qdrant folder, killed with SIGKILL at seeded random moments and at least once
as soon as the storage shows a point being written, and rerun until a run completes. After
every kill and at the end a fresh client checks every point (``--in-place``, the option
that writes into the collection itself, so the one with something to lose): vectors and the foreign
payload untouched, features whole or absent, and at the end every point backfilled like an
uninterrupted run's, with a final summary that adds up.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, QdrantXaiError
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
)

pytestmark = [pytest.mark.hardening, pytest.mark.slow]

FOREIGN = "products"
BACKFILL_SUMMARY = re.compile(r"backfilled (\d+) points; (\d+) unchanged; (\d+) skipped")


def langchain_store(store: Path, corpus: Corpus, encoder: ClipEncoder) -> dict[Any, Any]:
    """What langchain-qdrant writes: one unnamed vector; images (``metadata.source``) and
    captions (``page_content``) as separate points. Returns id -> (vector, payload), as
    stored (Qdrant normalises cosine vectors on the way in)."""
    sources = sorted(corpus.images.values())
    texts = [text for text, _ in corpus.captions.values()]
    image_vectors = encoder.embed_images([Path(s) for s in sources])
    text_vectors = encoder.embed_texts(texts)
    points = [
        models.PointStruct(
            id=i,
            vector=image_vectors[i].tolist(),
            payload={"page_content": Path(s).name, "metadata": {"source": s, "kind": "photo"}},
        )
        for i, s in enumerate(sources)
    ] + [
        models.PointStruct(
            id=len(sources) + i,
            vector=text_vectors[i].tolist(),
            payload={"page_content": text, "metadata": {"kind": "caption", "row": i}},
        )
        for i, text in enumerate(texts)
    ]
    client = QdrantClient(path=str(store))
    try:
        client.create_collection(
            FOREIGN,
            vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE),
        )
        client.upsert(FOREIGN, points=points)
    finally:
        client.close()
    return {pid: (p.vector, p.payload) for pid, p in read_points(store, FOREIGN).items()}


def audit_backfill(
    points: dict[Any, models.Record],
    original: dict[Any, Any],
    encoder: ClipEncoder,
    reference: dict[Any, models.Record] | None,
) -> Audit:
    """Vectors and the foreign payload keys untouched; features whole or absent (all there,
    and like the uninterrupted run's, with ``reference``)."""
    audit = Audit()
    key, (gh, gw), dim = encoder.fingerprint.key, encoder.grid, encoder.dim
    audit.extra = [pid for pid in points if pid not in original]
    audit.lost = [pid for pid in original if pid not in points]
    for pid, (vector, payload) in original.items():
        record = points.get(pid)
        if record is None:
            continue
        stored = record.payload or {}
        ours = {k: v for k, v in stored.items() if k.startswith("xai_") or k in _BACKFILL_KEYS}
        theirs = {k: v for k, v in stored.items() if k not in ours}
        try:
            assert record.vector == vector, "vector changed"
            assert theirs == payload, "foreign payload changed"
            if not ours:
                audit.pending.append(pid)
                continue
            is_image = "source" in payload["metadata"]
            assert ours[PayloadKeys.KIND] == ("image" if is_image else "text")
            shape = (gh, gw, dim) if is_image else (len(ours[PayloadKeys.WORDS]), dim)
            features = decode_features(ours, key, shape)
        except (AssertionError, KeyError, ValueError, TypeError, QdrantXaiError) as exc:
            audit.partial.append(f"{pid}: {type(exc).__name__} {exc}")
            continue
        if reference is not None:
            ref = reference[pid].payload or {}
            ref_features = decode_features(ref, key, shape)
            rest = {k: v for k, v in ours.items() if k != PayloadKeys.FEATURES}
            ref_rest = {k: v for k, v in ref.items() if k != PayloadKeys.FEATURES}
            if not (close(features, ref_features) and rest == {k: ref_rest[k] for k in rest}):
                audit.differing.append(str(pid))
    if reference is not None:
        audit.lost += audit.pending
    return audit


# payload keys the backfill writes besides the xai_* ones
_BACKFILL_KEYS = {PayloadKeys.WIDTH, PayloadKeys.HEIGHT, PayloadKeys.CROP_BOX, PayloadKeys.WORDS}


def test_backfill_survives_sigkill(
    fork_server: ForkServer,
    tiny_model_dir: Path,
    tiny_encoder: ClipEncoder,
    tmp_path: Path,
    figures: Any,
) -> None:
    n, kills = job_size(figures)
    corpus = make_corpus(tmp_path / "images", n)
    rng = random.Random(SEED + 1)
    store, ref_store = tmp_path / "store", tmp_path / "reference"
    original = langchain_store(store, corpus, tiny_encoder)
    shutil.copytree(store, ref_store)
    total = len(original)

    def argv(path: Path) -> list[str]:
        return [
            "backfill", "--collection", FOREIGN, "--layout", "langchain", "--in-place",
            "--image-root", str(corpus.folder), "--model", str(tiny_model_dir),
            "--path", str(path), "--batch-size", str(BATCH), "--threads", "1",
        ]  # fmt: skip

    def featured(path: Path) -> Callable[[], int]:
        return lambda: sqlite_count(path, FOREIGN, needle=PayloadKeys.FINGERPRINT)

    reference = drive(
        fork_server, argv(ref_store), tmp_path / "logs-ref", featured(ref_store), watch=True
    )
    assert reference.rc == 0, reference.stderr
    assert summary_numbers(BACKFILL_SUMMARY, reference) == (total, 0, 0)
    ref_points = read_points(ref_store, FOREIGN)
    ref_audit = audit_backfill(ref_points, original, tiny_encoder, ref_points)
    ref_audit.assert_whole()

    seen = Audit()
    half_batches = 0

    def after_kill(run: Run) -> None:
        nonlocal half_batches
        found = audit_backfill(read_points(store, FOREIGN), original, tiny_encoder, None)
        seen.absorb(found)
        # pages are written whole, in order: a count off the page size is a page cut short
        half_batches += run.on_disk != run.before and (total - len(found.pending)) % BATCH != 0

    log = kill_loop(
        fork_server,
        argv(store),
        tmp_path / "logs",
        kills=kills,
        rng=rng,
        progress=featured(store),
        total=total,
        reference=reference,
        after_kill=after_kill,
        batch=BATCH,
    )

    pending = len(audit_backfill(read_points(store, FOREIGN), original, tiny_encoder, None).pending)
    final = drive(fork_server, argv(store), tmp_path / "logs-final", featured(store))
    assert final.rc == 0, final.stderr
    updated, unchanged, skipped = summary_numbers(BACKFILL_SUMMARY, final)
    consistent = updated + unchanged + skipped == total and skipped == 0 and updated == pending
    audit = audit_backfill(read_points(store, FOREIGN), original, tiny_encoder, ref_points)

    figures.record(FAMILY, "backfill points (images and captions)", total)
    record_and_check(
        figures,
        "backfill",
        log=log,
        kills=kills,
        total=total,
        reference=reference,
        half_written="a batch",
        half_batches=half_batches,
        seen=seen,
        audit=audit,
        consistent=consistent,
    )
    assert consistent, (final.stdout, pending)
