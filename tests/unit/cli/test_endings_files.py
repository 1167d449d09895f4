"""What a failed write leaves behind: reports written whole or not at all, an embedded
folder's first ``meta.json`` likewise, and a folder left with an empty ``meta.json``.

ENOSPC is injected here (``os.replace`` / ``os.fsync`` raising it); the real full disk
(a tmpfs) is probed in ``tests/hardening/test_cli_endings_disk.py``.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from qdrant_client import models

from qdrant_xai import DiskFullError, QdrantUnavailableError, QdrantXaiError, open_client
from qdrant_xai.render import write_report

ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _raise_enospc(*args: object, **kwargs: object) -> None:
    raise ENOSPC


def test_a_report_replaces_the_previous_one_whole(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    out.write_text("previous")
    os.chmod(out, 0o600)
    assert write_report(out, [], subtitle="new") == out
    assert "new" in out.read_text(encoding="utf-8") and os.stat(out).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    write_report(tmp_path / "sub" / "dir" / "n.html", [])  # folders are created
    assert (tmp_path / "sub" / "dir" / "n.html").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("step", ["replace", "fsync"])
def test_a_report_onto_a_full_disk_leaves_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    out = tmp_path / "r.html"
    out.write_text("previous")
    monkeypatch.setattr(os, step, _raise_enospc)
    with pytest.raises(DiskFullError, match=r"the disk is full: cannot write the report .*r\.html"):
        write_report(out, [])
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temporary file


def test_a_first_report_onto_a_full_disk_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "replace", _raise_enospc)
    with pytest.raises(DiskFullError):
        write_report(tmp_path / "r.html", [])
    assert list(tmp_path.iterdir()) == []


def test_a_report_through_a_symlink_replaces_its_target(tmp_path: Path) -> None:
    target = tmp_path / "real.html"
    target.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    write_report(link, [], subtitle="via link")
    assert link.is_symlink() and "via link" in target.read_text(encoding="utf-8")


def test_a_report_onto_dev_full_is_a_disk_full_error() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with pytest.raises(DiskFullError, match="/dev/full"):
        write_report("/dev/full", [])


def test_other_write_failures_stay_os_errors(tmp_path: Path) -> None:
    (tmp_path / "d.html").mkdir()
    with pytest.raises(OSError) as caught:
        write_report(tmp_path / "d.html", [])
    assert not isinstance(caught.value, DiskFullError)


# -- the embedded folder's meta.json ------------------------------------------------------


def test_an_empty_meta_json_without_data_opens_as_a_fresh_folder(tmp_path: Path) -> None:
    """What a first write on a full disk leaves behind (qdrant-client writes it in place)."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "meta.json").write_text("")
    client = open_client(path=str(store))
    try:
        assert client.get_collections().collections == []
        client.create_collection(
            "c", vectors_config=models.VectorParams(size=2, distance=models.Distance.COSINE)
        )
    finally:
        client.close()
    assert json.loads((store / "meta.json").read_text())["collections"].keys() == {"c"}


def test_an_empty_meta_json_beside_collection_data_is_one_clear_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    data = store / "collection" / "photos"
    data.mkdir(parents=True)
    (data / "storage.sqlite").write_bytes(b"SQLite format 3\0" + b"\0" * 100)
    (store / "meta.json").write_text("")
    with pytest.raises(QdrantUnavailableError) as caught:
        open_client(path=str(store))
    message = str(caught.value)
    assert "storage is damaged" in message and "'photos'" in message and str(store) in message
    assert "move the folder aside" in message and "\n" not in message
    assert (store / "meta.json").read_text() == ""  # nothing written over it


def test_a_new_folder_on_a_full_disk_leaves_no_empty_meta_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    monkeypatch.setattr(os, "replace", _raise_enospc)
    with pytest.raises(DiskFullError, match=r"embedded Qdrant folder .*store"):
        open_client(path=str(store))
    assert list(store.iterdir()) == []
    monkeypatch.undo()
    open_client(path=str(store)).close()  # space freed: the same folder opens
    assert json.loads((store / "meta.json").read_text()) == {"collections": {}, "aliases": {}}


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_a_timeout_that_is_not_positive_is_refused(timeout: float) -> None:
    with pytest.raises(QdrantXaiError, match="timeout must be a positive number"):
        open_client("http://localhost:6333", timeout=timeout)
