"""Two processes on one embedded Qdrant folder: the second gets a clear error, not a crash.

Embedded mode (``QdrantClient(path=...)``) allows one client per folder. While the test
holds a client open on a folder, a second real process running the command line on the
same ``--path`` must exit non-zero with one ``error:`` line that says another process has
the folder open and to use a Qdrant server (QDRANT_URL / --url) for concurrent access; in
process, :func:`qdrant_xai.open_client` raises :class:`~qdrant_xai.StorageLockedError`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from qdrant_xai import QdrantUnavailableError, QdrantXaiError, StorageLockedError, open_client

pytestmark = pytest.mark.hardening

FAMILY = "concurrency"


def _says_what_to_do(message: str, path: str) -> None:
    assert path in message
    assert "another process" in message
    assert "QDRANT_URL" in message and "--url" in message
    assert "concurrent access" in message


@pytest.fixture
def held(tmp_path: Path) -> Any:
    """A folder with a client holding it open (released at the end)."""
    path = str(tmp_path / "qdrant")
    holder = QdrantClient(path=path)
    yield path
    holder.close()


@pytest.mark.slow
def test_second_process_gets_the_clear_error(held: str, figures: Any) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("QDRANT_URL", None)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "qdrant_xai", "search", "a red circle", "--path", held],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    seconds = time.monotonic() - start
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    _says_what_to_do(errors[0], held)
    figures.add(FAMILY, "second processes on a held embedded folder", 1)
    figures.add(FAMILY, "second processes refused with the clear error", 1)
    figures.record(FAMILY, "exit status of the second process", result.returncode)
    figures.record(FAMILY, "second process: start to refusal (s)", round(seconds, 1))


def _lock_handles(path: str) -> int:
    """Open file descriptors of this process on ``path``'s lock file (Linux)."""
    lock = os.path.realpath(os.path.join(path, ".lock"))
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == lock
        except OSError:
            continue
    return count


def test_second_client_in_process(held: str, figures: Any) -> None:
    tries = 3
    for _ in range(tries):
        with pytest.raises(StorageLockedError) as caught:
            open_client(path=held)
    if os.path.isdir("/proc/self/fd"):  # refused attempts leave no file handle behind
        leaked = _lock_handles(held) - 1  # the holder's own
        figures.add(FAMILY, "lock file handles leaked by refused opens", leaked)
        assert leaked == 0
    assert isinstance(caught.value, QdrantUnavailableError)
    assert isinstance(caught.value, QdrantXaiError)
    assert isinstance(caught.value.__cause__, RuntimeError)  # qdrant-client's, kept
    _says_what_to_do(str(caught.value), held)
    figures.add(FAMILY, "second clients in process refused with StorageLockedError", 1)


def test_mcp_server_on_a_held_folder(held: str, figures: Any) -> None:
    pytest.importorskip("mcp")
    from qdrant_xai_mcp.server import open_client as mcp_open_client
    from qdrant_xai_mcp.settings import ServerSettings

    settings = ServerSettings(collection_name="photos", local_path=held)
    with pytest.raises(StorageLockedError) as caught:
        mcp_open_client(settings)
    _says_what_to_do(str(caught.value), held)
    figures.add(FAMILY, "second clients in process refused with StorageLockedError", 1)


def test_the_folder_opens_once_released(tmp_path: Path, figures: Any) -> None:
    """Not a false alarm: once the holder closes, the same folder opens normally."""
    path = str(tmp_path / "qdrant")
    first = open_client(path=path)
    with pytest.raises(StorageLockedError):
        open_client(path=path)
    first.close()
    second = open_client(path=path)
    assert second.get_collections().collections == []
    second.close()
    figures.add(FAMILY, "released folders reopened", 1)


def test_open_client_needs_exactly_one_place() -> None:
    with pytest.raises(QdrantXaiError, match="exactly one"):
        open_client()
    with pytest.raises(QdrantXaiError, match="exactly one"):
        open_client("http://localhost:6333", path="./qdrant_data")


def test_a_folder_that_cannot_be_opened_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(QdrantUnavailableError, match="cannot open the embedded Qdrant folder"):
        open_client(path=str(blocker / "storage"))
    assert blocker.read_text() == "not a folder"  # nothing written over it


def test_a_damaged_storage_folder_is_one_clear_error(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "meta.json").write_text("")  # killed (or a full disk) while writing it
    data = storage / "collection" / "photos"
    data.mkdir(parents=True)
    (data / "storage.sqlite").write_bytes(b"x")  # ... but collections hold data: damaged
    with pytest.raises(QdrantUnavailableError, match="storage is damaged") as caught:
        open_client(path=str(storage))
    assert "'photos'" in str(caught.value)
    assert (storage / "meta.json").read_text() == ""  # nothing overwritten


def test_an_empty_meta_json_with_no_data_opens_as_a_fresh_folder(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "meta.json").write_text("")  # what a first write on a full disk leaves
    client = open_client(path=str(storage))
    try:
        assert client.get_collections().collections == []
    finally:
        client.close()
