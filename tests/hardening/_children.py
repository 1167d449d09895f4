"""Interrupted indexing and backfill: SIGKILL at random moments, rerun, check the store.

The indexer and the backfill run as real subprocesses of the real command line (the
``qdrant_xai`` module, as ``python -m qdrant_xai`` runs it) on an embedded Qdrant folder, and
are killed with SIGKILL at seeded random moments between their start and their expected end,
and at least once as soon as the storage shows a new point being written. Each family is
rerun until a run completes; then a fresh embedded client checks that every image and
caption is there exactly once, that no point has a partial or undecodable feature object,
that every point matches an uninterrupted reference run, and that the final run's summary
adds up with what the store held before it.

Starting a Python process that imports torch and transformers costs several seconds, so the
runs are forked from one interpreter that has imported them (and nothing else) once: each
run is still its own process with its own Qdrant client and storage lock, and the kill is a
real SIGKILL of that process. The runs use one torch thread (``--threads 1``): the tiny model
gains nothing from more, and a busy 2-core machine slows threaded runs tenfold.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, QdrantXaiError
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.indexer import Indexer, read_captions_csv
from qdrant_xai.storage.schema import PayloadKeys, image_point_id, text_point_id

pytestmark = pytest.mark.hardening

FAMILY = "interrupt"
SEED = int(os.environ.get("QDRANT_XAI_INTERRUPT_SEED", "20250607"))
BATCH = 8
COLLECTION = "photos"
FOREIGN = "products"
RUN_TIMEOUT = 180.0  # seconds one CLI run may take before the test gives up
# seconds between two reads of the storage while a run is watched (reads delay the writer's
# commits): often while waiting for a write to kill at, rarely while timing the first write
POLL_KILL, POLL_WATCH = 0.005, 0.05

# The fork server: imports the heavy modules once, then forks one child per command, which
# runs the ``qdrant_xai`` module with the given arguments (stdout and stderr to files). Only
# the server kills its child, before reaping it, so a kill never reaches a reused pid.
_FORK_SERVER = r"""
import json, os, runpy, select, signal, sys, traceback

import numpy, torch, transformers
from transformers import AutoProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast
import portalocker, qdrant_client, qdrant_client.local.qdrant_local, tqdm.auto
import qdrant_xai.storage.backfill, qdrant_xai.cli, qdrant_xai.storage.indexer

pending = b""


def read_line(timeout):
    global pending
    while b"\n" not in pending:
        if not select.select([0], [], [], timeout)[0]:
            return None
        chunk = os.read(0, 65536)
        if not chunk:
            return ""
        pending += chunk
    line, _, pending = pending.partition(b"\n")
    return line.decode()


def say(**message):
    os.write(1, (json.dumps(message) + "\n").encode())


def child(command):
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, path in ((1, command["out"]), (2, command["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = ["qdrant_xai", *command["argv"]]
        try:
            runpy.run_module("qdrant_xai", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


say(ready=True)
while True:
    line = read_line(None)
    if not line:
        break
    if line == "kill":  # arrived after its child had finished
        continue
    command = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(command)
    say(pid=pid)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        line = read_line(0.002)
        if line is None:
            continue
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if line == "":
            sys.exit(0)
        break
    say(rc=os.waitstatus_to_exitcode(status))
"""


class ForkServer:
    """Test side of the fork server: start a CLI run, wait for it, kill it."""

    def __init__(self, workdir: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        self._log = (workdir / "fork-server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=workdir,
            env=env,
        )
        self._pending = b""
        self._expect("ready", timeout=RUN_TIMEOUT)

    def _message(self, timeout: float) -> dict[str, Any] | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the fork server died (rc {self.process.poll()})")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def _expect(self, key: str, *, timeout: float) -> Any:
        message = self._message(timeout)
        if message is None or key not in message:
            raise RuntimeError(f"fork server: expected {key!r} within {timeout} s, got {message}")
        return message[key]

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def start(self, argv: list[str], out: Path, err: Path) -> int:
        """Forks a run of ``python -m qdrant_xai *argv``; returns its pid."""
        self._send(json.dumps({"argv": argv, "out": str(out), "err": str(err)}))
        pid: int = self._expect("pid", timeout=30)
        return pid

    def exit_code(self, timeout: float = 0.0) -> int | None:
        """The run's exit code (negative: killed by that signal), or None while it runs."""
        message = self._message(timeout)
        return None if message is None else int(message["rc"])

    def kill(self) -> None:
        """SIGKILLs the current run (a no-op if it has just finished)."""
        self._send("kill")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    if not hasattr(os, "fork"):
        pytest.skip("the kill tests fork their CLI runs (POSIX only)")
    server = ForkServer(tmp_path_factory.mktemp("fork-server"))
    yield server
    server.close()


# -- one run ------------------------------------------------------------------------------


@dataclass
class Run:
    """One CLI run: when it was killed (if it was) and what it left on disk."""

    rc: int
    seconds: float
    trigger: str  # "none", "time" or "write"
    before: int  # progress on disk when it started (points, or points with features)
    on_disk: int  # progress on disk when it ended
    first_write: float | None = None  # seconds to the first new point on disk (if watched)
    stdout: str = ""
    stderr: str = ""

    @property
    def killed(self) -> bool:
        return self.rc == -signal.SIGKILL


def drive(
    server: ForkServer,
    argv: list[str],
    logs: Path,
    progress: Callable[[], int],
    *,
    kill_after: float | None = None,
    kill_at_progress: int | None = None,
    watch: bool = False,
) -> Run:
    """Runs the CLI once; kills it ``kill_after`` seconds after its start, or as soon as
    ``progress()`` (read from the storage) reaches ``kill_at_progress``."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / "stdout.txt", logs / "stderr.txt"
    before = progress()
    start = time.monotonic()
    server.start(argv, out, err)
    trigger, first_write, rc, next_poll = "none", None, None, 0.0
    while rc is None:
        elapsed = time.monotonic() - start
        if elapsed > RUN_TIMEOUT:
            server.kill()
            server.exit_code(timeout=30)
            pytest.fail(f"CLI run {argv[0]} did not finish in {RUN_TIMEOUT} s: {err.read_text()}")
        if kill_after is not None and elapsed >= kill_after and trigger == "none":
            server.kill()
            trigger = "time"
        # reading the storage delays the writer's commits: poll sparingly, stop when done
        polling = kill_at_progress is not None or (watch and first_write is None)
        if polling and trigger == "none" and elapsed >= next_poll:
            next_poll = elapsed + (POLL_WATCH if kill_at_progress is None else POLL_KILL)
            now = progress()
            if first_write is None and now > before:
                first_write = elapsed
            if kill_at_progress is not None and now >= kill_at_progress:
                server.kill()
                trigger = "write"
        rc = server.exit_code(timeout=0.005)
    seconds = time.monotonic() - start
    return Run(
        rc=rc,
        seconds=seconds,
        trigger=trigger if rc == -signal.SIGKILL else "none",
        before=before,
        on_disk=progress(),
        first_write=first_write,
        stdout=out.read_text(encoding="utf-8", errors="replace"),
        stderr=err.read_text(encoding="utf-8", errors="replace"),
    )


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


# -- the kill loop ------------------------------------------------------------------------


@dataclass
class KillLog:
    """What the kill loop did, for the figures and for failure messages."""

    runs: list[Run] = field(default_factory=list)
    moments: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(run.killed for run in self.runs)

    @property
    def write_kills(self) -> int:
        return sum(run.killed and run.trigger == "write" for run in self.runs)

    def with_work_left(self, total: int) -> int:
        """Kills of a run that had points left to write."""
        return sum(run.killed and run.before < total for run in self.runs)


def kill_loop(
    server: ForkServer,
    argv: list[str],
    logs: Path,
    *,
    kills: int,
    rng: random.Random,
    progress: Callable[[], int],
    total: int,
    reference: Run,
    after_kill: Callable[[Run], None],
) -> KillLog:
    """Runs and kills the CLI until ``kills`` runs were killed.

    The kill moments are drawn once (seeded) as points of the whole job, ``kills`` sorted
    uniform fractions of its work, so they spread over it: a run is killed when it should
    reach its point (startup, then the work in between at twice the pace measured so far:
    the uninterrupted reference run, then the fastest killed run), before the run's
    expected end; when the job is already past its point, at a random moment of the run's
    startup.
    Every third kill (the first included) instead waits for the storage to show 1 to
    ``2 * BATCH`` new points, so it lands while a batch is being written.
    """
    log = KillLog()
    startup = reference.first_write or 0.0
    # seconds per point, taken twice as fast as measured: runs on a busy machine vary that
    # much, and a kill aimed too late finds the job done (then the pace is halved again)
    pace = 0.5 * max(reference.seconds - startup, 0.0) / max(total, 1)
    cuts = sorted(0.9 * rng.random() for _ in range(kills))  # a margin for timing noise
    while log.kills < kills:
        if len(log.runs) >= 4 * kills:
            pytest.fail(f"{kills} kills not reached in {len(log.runs)} runs: {log.moments}")
        logs_of_run = logs / f"run-{len(log.runs)}"
        done = progress()
        left = max(total - done, 0)
        ahead = cuts[log.kills] * total - done
        if log.kills % 3 == 0 and left > 0:
            target = done + min(rng.randint(1, 2 * BATCH), left)
            run = drive(server, argv, logs_of_run, progress, kill_at_progress=target)
            moment = f"{run.seconds:.2f} s at new point {target - done}"
        elif ahead > 0:
            run = drive(server, argv, logs_of_run, progress, kill_after=startup + ahead * pace)
            moment = f"{run.seconds:.2f} s aimed at {cuts[log.kills]:.0%} of the job"
            if run.killed and run.on_disk > done and run.seconds > startup:
                pace = min(pace, 0.5 * (run.seconds - startup) / (run.on_disk - done))
            elif run.rc == 0:
                pace /= 2
        else:
            kill_after = rng.random() * startup
            run = drive(server, argv, logs_of_run, progress, kill_after=kill_after)
            moment = f"{run.seconds:.2f} s in the startup"
        log.runs.append(run)
        if run.killed:
            log.moments.append(f"{moment} ({run.on_disk - done:+d} on disk)")
            after_kill(run)
        elif run.rc == 0:
            log.moments.append(f"{moment} (finished first)")
        else:
            pytest.fail(f"CLI run failed with rc {run.rc}:\n{run.stdout}\n{run.stderr}")
    return log


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


def read_points(store: Path, collection: str) -> dict[Any, models.Record]:
    """Every point of ``collection``, read by a fresh embedded client (closed again)."""
    client = QdrantClient(path=str(store))
    try:
        if not client.collection_exists(collection):  # killed before it was created
            return {}
        records, offset = [], None
        while True:
            page, offset = client.scroll(
                collection, limit=256, offset=offset, with_payload=True, with_vectors=True
            )
            records += page
            if offset is None:
                break
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


SUMMARY = re.compile(r"indexed (\d+) images and (\d+) texts; (\d+) unchanged; (\d+) skipped")
BACKFILL_SUMMARY = re.compile(r"backfilled (\d+) points; (\d+) unchanged; (\d+) skipped")


def summary_numbers(pattern: re.Pattern[str], run: Run) -> tuple[int, ...]:
    match = pattern.search(run.stdout)
    assert match, f"no summary in the output:\n{run.stdout}\n{run.stderr}"
    return tuple(int(g) for g in match.groups())


# -- indexing -----------------------------------------------------------------------------


def test_indexing_survives_sigkill(
    fork_server: ForkServer,
    tiny_model_dir: Path,
    tiny_encoder: ClipEncoder,
    tmp_path: Path,
    figures: Any,
) -> None:
    n = figures.count(FAMILY, "images", reduced=200, full=400)
    kills = figures.count(FAMILY, "kills per family", reduced=3, full=10)
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
    assert not (ref_audit.lost or ref_audit.extra or ref_audit.partial), ref_audit.brief()

    store = tmp_path / "store"
    partial_seen: list[str] = []
    extra_seen: list[Any] = []
    half_batches = 0

    def after_kill(run: Run) -> None:
        nonlocal half_batches
        points = read_points(store, COLLECTION)
        found = audit_index(points, corpus, tiny_encoder, None)
        partial_seen.extend(found.partial)
        extra_seen.extend(found.extra)
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
    runs = len(log.runs) + 1
    figures.record(FAMILY, "seed", str(SEED))
    figures.record(FAMILY, "images", n)
    figures.record(
        FAMILY, "captions (CSV rows; distinct)", f"{corpus.csv_rows}; {len(corpus.captions)}"
    )
    figures.record(FAMILY, "kills survived (indexing)", log.kills)
    figures.record(FAMILY, "kills with work left (indexing)", log.with_work_left(total))
    figures.record(FAMILY, "kills triggered by a write (indexing)", log.write_kills)
    figures.record(FAMILY, "kills that left an upsert half-written (indexing)", half_batches)
    figures.record(FAMILY, "runs needed (indexing)", runs)
    figures.record(FAMILY, "kill moments (indexing)", log.moments)
    figures.record(FAMILY, "uninterrupted run (indexing)", f"{reference.seconds:.1f} s")
    figures.add(FAMILY, "points lost", len(audit.lost))
    figures.add(FAMILY, "points duplicated", len(audit.extra) + len(extra_seen))
    figures.add(FAMILY, "partial feature objects", len(audit.partial) + len(partial_seen))
    figures.add(FAMILY, "points unlike an uninterrupted run", len(audit.differing))
    figures.record(FAMILY, "summaries consistent (indexing)", "yes" if consistent else "no")

    assert log.kills == kills and log.write_kills >= 1
    assert not partial_seen and not extra_seen, (partial_seen[:3], extra_seen[:3])
    assert not audit.lost and not audit.extra and not audit.partial, audit.brief()
    assert not audit.differing, audit.differing[:5]
    assert consistent, (final.stdout, len(todo), expected_texts)


# -- backfill -----------------------------------------------------------------------------


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
    n = figures.count(FAMILY, "images", reduced=200, full=400)
    kills = figures.count(FAMILY, "kills per family", reduced=3, full=10)
    corpus = make_corpus(tmp_path / "images", n)
    rng = random.Random(SEED + 1)
    store, ref_store = tmp_path / "store", tmp_path / "reference"
    original = langchain_store(store, corpus, tiny_encoder)
    shutil.copytree(store, ref_store)
    total = len(original)

    def argv(path: Path) -> list[str]:
        return [
            "backfill", "--collection", FOREIGN, "--layout", "langchain",
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
    assert not (ref_audit.lost or ref_audit.extra or ref_audit.partial), ref_audit.brief()

    partial_seen: list[str] = []
    extra_seen: list[Any] = []
    lost_seen: list[Any] = []
    half_batches = 0

    def after_kill(run: Run) -> None:
        nonlocal half_batches
        found = audit_backfill(read_points(store, FOREIGN), original, tiny_encoder, None)
        partial_seen.extend(found.partial)
        extra_seen.extend(found.extra)
        lost_seen.extend(found.lost)
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
    )

    pending = len(audit_backfill(read_points(store, FOREIGN), original, tiny_encoder, None).pending)
    final = drive(fork_server, argv(store), tmp_path / "logs-final", featured(store))
    assert final.rc == 0, final.stderr
    updated, unchanged, skipped = summary_numbers(BACKFILL_SUMMARY, final)
    consistent = updated + unchanged + skipped == total and skipped == 0 and updated == pending
    audit = audit_backfill(read_points(store, FOREIGN), original, tiny_encoder, ref_points)

    figures.record(FAMILY, "backfill points (images and captions)", total)
    figures.record(FAMILY, "kills survived (backfill)", log.kills)
    figures.record(FAMILY, "kills with work left (backfill)", log.with_work_left(total))
    figures.record(FAMILY, "kills triggered by a write (backfill)", log.write_kills)
    figures.record(FAMILY, "kills that left a batch half-written (backfill)", half_batches)
    figures.record(FAMILY, "runs needed (backfill)", len(log.runs) + 1)
    figures.record(FAMILY, "kill moments (backfill)", log.moments)
    figures.record(FAMILY, "uninterrupted run (backfill)", f"{reference.seconds:.1f} s")
    figures.add(FAMILY, "points lost", len(audit.lost) + len(lost_seen))
    figures.add(FAMILY, "points duplicated", len(audit.extra) + len(extra_seen))
    figures.add(FAMILY, "partial feature objects", len(audit.partial) + len(partial_seen))
    figures.add(FAMILY, "points unlike an uninterrupted run", len(audit.differing))
    figures.record(FAMILY, "summaries consistent (backfill)", "yes" if consistent else "no")

    assert log.kills == kills and log.write_kills >= 1
    assert not partial_seen and not extra_seen and not lost_seen, (
        partial_seen[:3],
        extra_seen[:3],
        lost_seen[:3],
    )
    assert not audit.lost and not audit.extra and not audit.partial, audit.brief()
    assert not audit.differing, audit.differing[:5]
    assert consistent, (final.stdout, pending)


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
