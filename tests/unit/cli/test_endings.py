"""The command line's endings in process: stop signals, the write tally, the one-line error
of each failure the user can act on, argument errors in two lines, the device check."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from qdrant_xai import DeviceUnavailableError, DiskFullError, QdrantUnavailableError
from qdrant_xai.cli import build_parser, main
from qdrant_xai.cli.endings import (
    Interrupted,
    StopSignals,
    WriteTally,
    error_line,
    exit_status,
    interrupted_line,
)
from qdrant_xai.cli.options import check_device

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals: main thread"
)


def test_stop_signals_raise_interrupted_and_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals() as stops:
        with pytest.raises(Interrupted) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between two bytecodes
                pass
        assert caught.value.signum == signal.SIGTERM and isinstance(caught.value, KeyboardInterrupt)
        assert exit_status(caught.value) == 143
        assert stops.received == signal.SIGTERM
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_signal_during_cleanup_is_held_then_raised() -> None:
    with StopSignals() as stops:
        with pytest.raises(Interrupted) as caught, stops.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            finished = True  # not cut short
        assert finished and caught.value.signum == signal.SIGINT
        assert exit_status(caught.value) == 130


def test_a_second_stop_during_cleanup_is_the_same_stop() -> None:
    with StopSignals() as stops:
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        with stops.deferred():  # the cleanup after the first: not interrupted again
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with StopSignals():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)  # nothing happens
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_tally_counts_what_a_real_client_confirmed() -> None:
    client = QdrantClient(":memory:")
    client.create_collection(
        "c", vectors_config=models.VectorParams(size=2, distance=models.Distance.COSINE)
    )
    tally = WriteTally()
    tally.watch(client)
    kinds = ["image", "image", "text"]
    client.upsert(
        "c",
        points=[
            models.PointStruct(id=i, vector=[1.0, i + 1.0], payload={"xai_kind": kind})
            for i, kind in enumerate(kinds)
        ],
    )
    client.batch_update_points(
        "c",
        [
            models.SetPayloadOperation(
                set_payload=models.SetPayload(payload={"a": 1}, points=[0, 1])
            )
        ],
    )
    assert (tally.images, tally.texts, tally.points) == (2, 1, 5)
    assert client.retrieve("c", [0])[0].payload == {"xai_kind": "image", "a": 1}
    with pytest.raises(ValueError):  # a refused write is not counted
        client.upsert("nope", points=[models.PointStruct(id=9, vector=[1.0, 0.0])])
    assert tally.points == 5
    client.close()


def test_interrupted_lines_say_what_is_true() -> None:
    tally = WriteTally()
    assert interrupted_line(Interrupted(signal.SIGINT), "search", tally) == "interrupted"
    line = interrupted_line(Interrupted(signal.SIGTERM), "index", tally)
    assert line.startswith("interrupted (SIGTERM): nothing written yet; run the same command")
    tally.images, tally.texts, tally.points = 3, 4, 7
    line = interrupted_line(KeyboardInterrupt(), "index", tally)
    assert line.startswith("interrupted: 3 images and 4 captions written; run the same command")
    line = interrupted_line(KeyboardInterrupt(), "backfill", tally)
    assert "features of 7 points written;" in line and "\n" not in line
    tally.writing = True
    line = interrupted_line(KeyboardInterrupt(), "backfill", tally)
    assert "features of 7 points written (and part of the next batch);" in line
    tally.points = 0
    line = interrupted_line(KeyboardInterrupt(), "index", tally)
    assert line.startswith("interrupted: stopped while writing the first batch; run the same")


@pytest.mark.parametrize(
    ("error", "names"),
    [
        (sqlite3.OperationalError("database or disk is full"), "embedded Qdrant folder ./q"),
        (OSError(errno.ENOSPC, "No space left on device", "/r/out.html"), "/r/out.html"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/r/x"), "/r/x"),
    ],
)
def test_a_full_disk_is_one_line_naming_what_was_written(error: Exception, names: str) -> None:
    args = build_parser().parse_args(["index", "imgs", "--path", "./q"])
    wrapped = RuntimeError("qdrant-client wrapped it")
    wrapped.__cause__ = error
    for exc in (error, wrapped):
        line = error_line(exc, args)
        assert line is not None and line.startswith("the disk is full") and names in line, line
        assert "run the same command again" in line


def test_a_server_out_of_space_is_a_full_disk_after_the_retries() -> None:
    answer = UnexpectedResponse(
        500, "Internal Server Error", b'{"status":{"error":"No space left on device"}}', None
    )
    gave_up = QdrantUnavailableError("upsert failed after 5 attempts")
    gave_up.__cause__ = answer
    args = build_parser().parse_args(["index", "imgs", "--url", "http://u:p@db:6333"])
    line = error_line(gave_up, args)
    assert line is not None and "the Qdrant server at http://db:6333" in line, line


def test_a_bug_keeps_its_traceback() -> None:
    assert error_line(ZeroDivisionError("x"), None) is None
    assert error_line(DiskFullError("already typed"), None) == "already typed"


def test_a_full_disk_in_main_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """sqlite's disk-full injected into the embedded client's collection creation."""

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(QdrantClient, "collection_exists", full)
    status = main(
        ["inspect", "c", "--no-model", "--path", str(tmp_path / "q")]
    )  # reads the collection first
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: the disk is full") and str(tmp_path / "q") in err


def test_an_argument_error_is_two_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["search", "x", "--timeout", "inf"])
    assert caught.value.code == 2
    usage, error, *rest = capsys.readouterr().err.splitlines()
    assert not rest
    assert usage == "usage: qdrant-xai search [options] [text] (--help lists the options)"
    assert (
        error == "qdrant-xai search: error: argument --timeout: must be a number above 0, got 'inf'"
    )


def test_the_device_check() -> None:
    import torch

    check_device("cpu")
    with pytest.raises(DeviceUnavailableError, match="not a torch device"):
        check_device("gpu")
    if torch.cuda.device_count() < 8:
        with pytest.raises(DeviceUnavailableError, match="use one of cpu"):
            check_device("cuda:7")
