"""Shared checks of the bad-image tests (``test_bad_images*.py``).

The corpus itself is in :mod:`tests.hardening.bad_corpus`. Here: a guard that fails a call
instead of letting it hang, where the indexer reports each corpus file, the check that every
bad file was reported once with its reason, reading the indexed points back, and the
figures of the kinds tried, which the in-process and the CLI tests feed together.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from qdrant_xai.storage.schema import PayloadKeys
from tests.hardening._points import all_points
from tests.hardening.bad_corpus import Entry

FAMILY = "bad-images"
HANG_SECONDS = 60  # a run over the corpus takes a few seconds; longer means it hangs


class Hung(BaseException):
    """Raised in the test when a call hangs; a BaseException, so no handler can swallow it
    (``TimeoutError`` is an ``OSError``, which the loader turns into a refusal)."""


@contextmanager
def no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fails instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def expired(signum: int, frame: object) -> None:
        raise Hung(f"hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def source_of(root: Path, entry: Entry) -> str:
    """The point source (or failure label) the indexer uses for ``entry``."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(root), entry.rel)))
    try:
        source = str(path.resolve(strict=True))
    except (OSError, RuntimeError):  # broken symlink, symlink loop
        source = str(path.absolute())
    return source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def failures_by_source(summary_failed: list[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for source, reason in summary_failed:
        found.setdefault(source, []).append(reason)
    return found


def check_refusals(
    root: Path, entries: list[Entry], failed: list[tuple[str, str]]
) -> dict[str, str]:
    """Every refused entry reported exactly once with one of its words; nothing else.

    Returns the reason of each refused kind.
    """
    by_source = failures_by_source(failed)
    reasons: dict[str, str] = {}
    for entry in (e for e in entries if e.refused):
        source = source_of(root, entry)
        got = by_source.pop(source, [])
        assert len(got) == 1, f"{entry.kind} ({source}) reported {len(got)} times: {got}"
        reason = got[0].lower()
        assert any(word in reason for word in entry.words), (
            f"{entry.kind}: reason {got[0]!r} names none of {entry.words}"
        )
        reasons[entry.kind] = got[0]
    assert not by_source, f"reported but acceptable: {by_source}"
    return reasons


def points_by_id(client: QdrantClient, collection: str) -> dict[str, dict]:
    points = all_points(client, collection)
    ids = [str(p.id) for p in points]
    assert len(ids) == len(set(ids))
    return {str(p.id): {"payload": p.payload or {}, "vector": p.vector} for p in points}


def duplicate_points(client: QdrantClient, collection: str, points: dict[str, dict]) -> int:
    """Points beyond the first for any image source (an image written twice), and points
    the collection counts beyond those ``points`` read."""
    sources = Counter(p["payload"].get(PayloadKeys.SOURCE) for p in points.values())
    counted = client.count(collection, exact=True).count
    return sum(n - 1 for n in sources.values()) + counted - len(points)


def folder_failures(failed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(s, r) for s, r in failed if r.startswith("cannot list the folder")]


KINDS: set[str] = set()
REFUSED: set[str] = set()


def note_kinds(figures: Any, kinds: set[str], refused: set[str]) -> None:
    """Records the kinds tried and refused by the bad-image tests so far."""
    KINDS.update(kinds)
    REFUSED.update(refused)
    figures.record(FAMILY, "kinds tried", len(KINDS))
    figures.record(FAMILY, "kinds", sorted(KINDS))
    figures.record(FAMILY, "kinds refused", len(REFUSED))
    figures.record(FAMILY, "refused kinds", sorted(REFUSED))
    figures.record(FAMILY, "kinds indexed", sorted(KINDS - REFUSED))


def permissions_apply(folder: Path) -> bool:
    """Whether this process is refused a ``chmod 000`` file (root is not, by default)."""
    probe = folder / "permission-probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o600)
        probe.unlink()
    return False
