"""A full disk, for real: the command line on small tmpfs disks, filled up.

The disks are tmpfs folders mounted in a user and mount namespace of the test's own
(``unshare --user --map-root-user --mount``; no root needed where the kernel allows
unprivileged namespaces, skipped elsewhere). Every write past the size fails with a real
``ENOSPC`` from the kernel, and sqlite with its real "database or disk is full". Probes:

- a first ``index`` onto a full disk: one line naming the folder, exit 1, and no empty
  ``meta.json`` left (which qdrant-client would then refuse); with space freed, the same
  command indexes everything;
- an ``index`` whose disk fills up mid-run: one line, exit 1; the disk made larger, the
  same command completes, and the store equals an uninterrupted run's point by point;
- ``search --explain --html`` onto a full disk: one line, exit 1, the previous report
  intact and no temporary file left.

Each probe asserts no ``Traceback`` and at most two lines on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.hardening._children import ForkServer
from tests.hardening._endings import (
    Tally,
    differences,
    namespaces_available,
    run_on_small_disks,
    run_to_end,
)
from tests.hardening._interrupted_runs import make_corpus, sqlite_count

pytestmark = [pytest.mark.hardening, pytest.mark.slow]

FAMILY = "endings"
COLLECTION = "photos"
IMAGES = 40


def test_a_full_disk_is_one_line_and_the_rerun_completes(
    fork_server: ForkServer, tiny_model_dir: Path, tmp_path: Path, figures: Any
) -> None:
    if not namespaces_available():
        pytest.skip("cannot mount a tmpfs in a user namespace here (unshare)")
    corpus = make_corpus(tmp_path / "images", IMAGES)
    total = len(corpus.images) + len(corpus.captions)

    def index(store: Path) -> list[str]:
        return [
            "index", str(corpus.folder), "--captions", str(corpus.csv),
            "--model", str(tiny_model_dir), "--path", str(store), "--collection", COLLECTION,
            "--batch-size", "8", "--threads", "1", "--no-progress",
        ]  # fmt: skip

    reference = tmp_path / "reference"
    rc, _, err = run_to_end(fork_server, index(reference), tmp_path / "logs-ref")
    assert rc == 0, err
    assert sqlite_count(reference, COLLECTION) == total
    data = (reference / "collection" / COLLECTION / "storage.sqlite").stat().st_size
    first, middle, reports = tmp_path / "first", tmp_path / "middle", tmp_path / "reports"
    report = reports / "report.html"
    logs = tmp_path / "logs"
    logs.mkdir()

    def run(name: str, argv: list[str]) -> dict[str, Any]:
        return {"argv": argv, "out": str(logs / f"{name}.out"), "err": str(logs / f"{name}.err")}

    search = [
        "search", "a red circle", "--explain", "--html", str(report), "--limit", "2",
        "--path", str(reference), "--collection", COLLECTION, "--threads", "1",
    ]  # fmt: skip
    steps = [
        # a first index onto a disk with no space left
        {"mount": {str(first): "256k"}, "fill": [str(first)]},
        {**run("first-full", index(first / "store")), "list": [str(first)]},
        {"remove": [str(first / "filler")], **run("first-freed", index(first / "store"))},
        {"copy": {str(first / "store"): str(tmp_path / "first-store")}},
        # a disk that fills up mid-run (half the data fits), then made larger
        {"mount": {str(middle): f"{max(64, data // 2048)}k"}},
        run("middle-full", index(middle / "store")),
        {"copy": {str(middle / "store"): str(tmp_path / "middle-partial")}},
        {"remount": {str(middle): "64m"}, **run("middle-rerun", index(middle / "store"))},
        {"copy": {str(middle / "store"): str(tmp_path / "middle-store")}},
        # a report onto a full disk, over a previous one
        {"mount": {str(reports): "1m"}, "write": {str(report): "previous report"}},
        {"fill": [str(reports)], **run("report-full", search), "list": [str(reports)]},
    ]
    results = run_on_small_disks(steps, tmp_path)
    assert len(results) == len(steps), results
    tally = Tally()

    def ending(name: str, step: dict[str, Any], expected_rc: int) -> list[str]:
        stderr = Path(steps[step["step"]]["err"]).read_text(encoding="utf-8")
        return tally.check(name, step["rc"], stderr, expected_rc=expected_rc)

    # first index on a full disk: one line naming the folder; no empty meta.json left
    (line,) = ending("first index, full disk", results[1], 1)
    assert line.startswith("error: the disk is full") and str(first / "store") in line, line
    assert "run the same command again" in line, line
    left = results[1]["listing"][str(first)]
    assert left.get("store/meta.json", 1) > 0 and not any(n.endswith(".tmp") for n in left), left
    assert results[2]["rc"] == 0, (logs / "first-freed.err").read_text()
    assert sqlite_count(tmp_path / "first-store", COLLECTION) == total

    # the disk fills up mid-run: one line; the rerun on a larger disk completes
    (line,) = ending("index, disk full mid-run", results[5], 1)
    assert line.startswith("error: the disk is full") and str(middle / "store") in line, line
    partial = sqlite_count(tmp_path / "middle-partial", COLLECTION)
    assert 0 < partial < total, partial  # it did stop midway
    assert results[7]["rc"] == 0, (logs / "middle-rerun.err").read_text()
    assert differences(tmp_path / "middle-store", reference, COLLECTION) == []

    # a report onto a full disk: one line; the previous report intact, nothing else left
    (line,) = ending("search --html, full disk", results[10], 1)
    assert line.startswith("error: the disk is full") and str(report) in line, line
    assert set(results[10]["listing"][str(reports)]) == {"report.html", "filler"}
    assert results[10]["listing"][str(reports)]["report.html"] == len("previous report")

    assert tally.tracebacks == 0
    figures.add(FAMILY, "CLI probes (one line each)", len(tally.probes))
    figures.add(FAMILY, "tracebacks printed", tally.tracebacks)
    figures.record(FAMILY, "full-disk probes (real tmpfs, ENOSPC)", json.dumps(tally.probes))
