"""Every way a command can end early ends in one line: Ctrl-C, SIGTERM, bad arguments, an
unavailable device, a collection of another shape, a report onto a full device.

The command line runs as real child processes (forked by the fork server of
:mod:`tests.hardening._children`, which has imported torch once; each run is the
``qdrant_xai`` module as ``python -m qdrant_xai`` runs it). Every probe asserts: no
``Traceback`` on stderr, at most two lines there, the documented exit status (130 after
SIGINT, 143 after SIGTERM, 2 for an argument error, 1 for an error). An index interrupted
mid-run and run again must equal an uninterrupted run, point by point. The full-disk
probes on a real (tmpfs) disk are in ``test_cli_endings_disk.py``.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, open_client
from qdrant_xai.storage.schema import PayloadKeys
from tests.hardening._children import ForkServer
from tests.hardening._endings import Tally, differences, run_and_signal, run_to_end
from tests.hardening._interrupted_runs import make_corpus, sqlite_count
from tests.hardening.test_interrupted_backfill import FOREIGN, langchain_store

pytestmark = pytest.mark.hardening

FAMILY = "endings"
COLLECTION = "photos"
IMAGES = 120
BATCH = 8
WRITTEN = re.compile(r"(\d+) images and (\d+) captions written")


@pytest.fixture(scope="module")
def tally(figures: Any) -> Iterator[Tally]:
    """The probes of this module; their tracebacks are counted into the figures."""
    found = Tally()
    yield found
    figures.add(FAMILY, "CLI probes (one line each)", len(found.probes))
    figures.add(FAMILY, "tracebacks printed", found.tracebacks)


@pytest.fixture(scope="module")
def indexed(
    fork_server: ForkServer, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A corpus, the argv that indexes it, and an uninterrupted reference store."""
    root = tmp_path_factory.mktemp("endings")
    corpus = make_corpus(root / "images", IMAGES)

    def argv(store: Path) -> list[str]:
        return [
            "index", str(corpus.folder), "--captions", str(corpus.csv),
            "--model", str(tiny_model_dir), "--path", str(store), "--collection", COLLECTION,
            "--batch-size", str(BATCH), "--threads", "1", "--no-progress",
        ]  # fmt: skip

    reference = root / "reference"
    rc, _, err = run_to_end(fork_server, argv(reference), root / "logs-ref")
    assert rc == 0, err
    total = len(corpus.images) + len(corpus.captions)
    assert sqlite_count(reference, COLLECTION) == total
    return {"argv": argv, "reference": reference, "total": total, "model": tiny_model_dir}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_index_says_what_was_written_and_resumes(
    fork_server: ForkServer, indexed: dict[str, Any], tally: Tally, tmp_path: Path, signum: int
) -> None:
    store = tmp_path / "store"
    stopped = run_and_signal(
        fork_server,
        indexed["argv"](store),
        tmp_path / "logs",
        store,
        COLLECTION,
        signum=signum,
        at_points=2 * BATCH,
    )
    name = signal.Signals(signum).name
    expected = 130 if signum == signal.SIGINT else 143
    (line,) = tally.check(
        f"index, {name} mid-run", stopped.rc, stopped.stderr, expected_rc=expected
    )
    assert line.startswith("interrupted"), line
    assert (name in line) == (signum == signal.SIGTERM), line
    assert "run the same command again to resume" in line, line
    on_disk = sqlite_count(store, COLLECTION)
    assert on_disk < indexed["total"], "the signal came after the run had finished"
    match = WRITTEN.search(line)
    said = int(match.group(1)) + int(match.group(2)) if match else 0
    assert said <= on_disk, (line, on_disk)  # what it says was written, is there
    assert said or "stopped while writing the first batch" in line, line
    # the folder was closed: a new client opens it at once, and a rerun completes the job
    open_client(path=str(store)).close()
    rc, _, err = run_to_end(fork_server, indexed["argv"](store), tmp_path / "logs-rerun")
    assert rc == 0, err
    assert differences(store, indexed["reference"], COLLECTION) == []


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback address that accepts connections and never answers (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_command_stopped_while_it_waits_is_one_line(
    fork_server: ForkServer, silent_server: str, tally: Tally, tmp_path: Path, signum: int
) -> None:
    """Stopped while it waits for a server that does not answer: plain "interrupted"."""
    argv = ["search", "a red circle", "--url", silent_server, "--timeout", "60"]
    stopped = run_and_signal(
        fork_server, argv, tmp_path / "logs", tmp_path, COLLECTION, signum=signum, after=1.0
    )
    assert stopped.signalled, stopped.stderr
    expected = 130 if signum == signal.SIGINT else 143
    name = signal.Signals(signum).name
    (line,) = tally.check(
        f"search waiting, {name}", stopped.rc, stopped.stderr, expected_rc=expected
    )
    assert line == ("interrupted" if signum == signal.SIGINT else f"interrupted ({name})")


BAD_ARGUMENTS = [
    ["search", "x", "--limit", "0"],
    ["search", "x", "--limit", "-1"],
    ["search", "x", "--threads", "0"],
    ["search", "x", "--retries", "0"],
    ["search", "x", "--timeout", "0"],
    ["search", "x", "--timeout", "-1"],
    ["search", "x", "--timeout", "nan"],
    ["explain", "1", "--text", "x", "--limit", "3"],  # no --limit on explain
    ["index", "imgs", "--batch-size", "0"],
    ["index", "imgs", "--threads", "-2"],
    ["backfill", "--batch-size", "0"],
    ["backfill", "--max-points", "0"],
    ["inspect", "c", "--sample", "0"],
    ["eval", "data", "--max-images", "0"],
    ["eval", "data", "--explain-top", "0"],
    ["eval", "data", "--max-rank", "-5"],
    ["eval", "data", "--batch-size", "0"],
    ["search", "x", "--hit-kind", "video"],
    [],
]


@pytest.mark.parametrize("argv", BAD_ARGUMENTS, ids=lambda a: " ".join(a) or "(nothing)")
def test_a_bad_argument_is_a_two_line_usage_error(
    fork_server: ForkServer, tally: Tally, tmp_path: Path, argv: list[str]
) -> None:
    rc, _, err = run_to_end(fork_server, argv, tmp_path / "logs")
    usage, error = tally.check(" ".join(argv) or "(nothing)", rc, err, expected_rc=2)
    assert usage.startswith("usage: qdrant-xai") and "--help" in usage, usage
    assert ": error: " in error, error


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cuda", "cuda:7", "gpu"])
def test_an_unavailable_device_is_one_line(
    fork_server: ForkServer, indexed: dict[str, Any], tally: Tally, tmp_path: Path, device: str
) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > int(device[5:] or 0):
        pytest.skip("this machine has that CUDA device")
    argv = [
        "search", "a red circle", "--device", device, "--path", str(indexed["reference"]),
        "--collection", COLLECTION,
    ]  # fmt: skip
    rc, _, err = run_to_end(fork_server, argv, tmp_path / "logs")
    (line,) = tally.check(f"search --device {device}", rc, err, expected_rc=1)
    assert line.startswith("error: --device") and device in line and "cpu" in line, line


@pytest.mark.slow
def test_a_collection_with_one_unnamed_vector_is_one_line_with_the_fix(
    fork_server: ForkServer, tiny_model_dir: Path, tally: Tally, tmp_path: Path
) -> None:
    store = tmp_path / "unnamed"
    client = QdrantClient(path=str(store))
    client.create_collection(
        "docs", vectors_config=models.VectorParams(size=16, distance=models.Distance.COSINE)
    )
    client.upsert(
        "docs",
        points=[
            models.PointStruct(id=i, vector=[(i + j) % 5 / 5 + 0.1 for j in range(16)], payload={})
            for i in range(6)
        ],
    )
    client.close()
    base = ["search", "a red circle", "--path", str(store), "--collection", "docs"]
    base += ["--model", str(tiny_model_dir), "--threads", "1"]
    for extra, says in (([], "--vector"), (["--layout", "qdrant-xai"], "--vector NAME")):
        rc, _, err = run_to_end(fork_server, [*base, *extra], tmp_path / "logs")
        (line,) = tally.check(f"unnamed vector {extra}", rc, err, expected_rc=1)
        assert line.startswith("error: ") and says in line, line
    rc, out, err = run_to_end(fork_server, [*base, "--vector", ""], tmp_path / "logs")
    assert rc == 0, err
    assert len(out.splitlines()) == 5


@pytest.mark.slow
def test_a_report_onto_a_full_device_is_one_line(
    fork_server: ForkServer, indexed: dict[str, Any], tally: Tally, tmp_path: Path
) -> None:
    """``/dev/full`` answers every write with ENOSPC (a real one, from the kernel)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    argv = [
        "search", "a red circle", "--explain", "--html", "/dev/full", "--limit", "2",
        "--path", str(indexed["reference"]), "--collection", COLLECTION, "--threads", "1",
    ]  # fmt: skip
    rc, _, err = run_to_end(fork_server, argv, tmp_path / "logs")
    (line,) = tally.check("search --html /dev/full", rc, err, expected_rc=1)
    assert line.startswith("error: the disk is full") and "/dev/full" in line, line
    assert "run the same command again" in line, line


@pytest.mark.slow
def test_a_stopped_backfill_says_what_was_written_and_resumes(
    fork_server: ForkServer,
    tiny_model_dir: Path,
    tiny_encoder: ClipEncoder,
    tally: Tally,
    tmp_path: Path,
) -> None:
    corpus = make_corpus(tmp_path / "images", 60)
    store = tmp_path / "store"
    langchain_store(store, corpus, tiny_encoder)
    total = len(corpus.images) + len(corpus.captions)
    argv = [
        "backfill", "--collection", FOREIGN, "--layout", "langchain", "--in-place",
        "--image-root", str(corpus.folder), "--model", str(tiny_model_dir), "--path", str(store),
        "--batch-size", str(BATCH), "--threads", "1", "--no-progress",
    ]  # fmt: skip
    featured = PayloadKeys.FINGERPRINT
    stopped = run_and_signal(
        fork_server, argv, tmp_path / "logs", store, FOREIGN, signum=signal.SIGINT,
        at_points=2 * BATCH, needle=featured,
    )  # fmt: skip
    (line,) = tally.check("backfill, SIGINT mid-run", stopped.rc, stopped.stderr, expected_rc=130)
    on_disk = sqlite_count(store, FOREIGN, needle=featured)
    assert on_disk < total, "the signal came after the run had finished"
    match = re.search(r"^interrupted: features of (\d+) points written", line)
    said = int(match.group(1)) if match else 0
    assert said <= on_disk, (line, on_disk)
    assert said or "stopped while writing the first batch" in line, line
    rc, out, err = run_to_end(fork_server, argv, tmp_path / "logs-rerun")
    assert rc == 0, err
    assert sqlite_count(store, FOREIGN, needle=featured) == total
    summary = re.search(r"backfilled (\d+) points; (\d+) unchanged; 0 skipped", out)
    assert summary, out
    assert (int(summary.group(1)), int(summary.group(2))) == (total - on_disk, on_disk), out
