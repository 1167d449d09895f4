"""Files written whole or not at all, and a full disk recognised behind any error.

A report or a ``meta.json`` written in place on a full disk (or interrupted) leaves a
truncated file that looks like a result; :func:`replace_whole` writes beside the target and
renames over it, so a failed write leaves nothing new behind and a previous file intact.
:func:`write_text_whole` adds what a command's output file needs (folders created, the old
file's permissions kept, devices and pipes written directly, a full disk named).
:func:`disk_full_error` recognises a full disk behind any error: sqlite's "database or disk
is full", ``ENOSPC``/``EDQUOT``, a Qdrant server's "No space left on device".
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qdrant_xai.errors import DiskFullError, QdrantXaiError

__all__ = ["disk_full_error", "replace_whole", "write_text_whole"]

_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)
# how a full disk reads in the text of errors that carry no errno: sqlite (SQLITE_FULL), a
# Qdrant server's answer ("No space left on device (os error 28)"), a quota
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")


def disk_full_error(
    exc: BaseException,
    where: str,
    *,
    fix: str = "free space (or raise the quota), then run the same command again; what was "
    "written before stays, and indexing and backfill resume where they stopped",
) -> DiskFullError | None:
    """A :class:`~qdrant_xai.errors.DiskFullError` naming ``where`` (a folder, a file, a
    server) when ``exc``, or an error it was raised from or while handling, says the disk
    is full: ``OSError`` with ``ENOSPC``/``EDQUOT``, sqlite's "database or disk is full"
    (qdrant-client's embedded mode), a server's "No space left on device"; else ``None``.
    ``fix`` ends the message (what to do)."""
    for link in _chain(exc):
        if isinstance(link, DiskFullError):
            return link
        if isinstance(link, OSError) and link.errno in _FULL_ERRNOS:
            detail = link.strerror or os.strerror(link.errno or errno.ENOSPC)
        elif not isinstance(link, QdrantXaiError):  # whose messages may quote user text
            detail = next((t for t in _FULL_TEXTS if t in str(link).lower()), "")
            if not detail:
                continue
        else:
            continue
        return DiskFullError(f"the disk is full: cannot write {where} ({detail}); {fix}")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from or while handling (each once)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def replace_whole(target: Path, text: str, *, mode: int = 0o644) -> None:
    """``text`` (UTF-8) into ``target`` through a temporary file in the same folder, flushed
    to disk and renamed over it: the file is whole or as it was, never empty or half
    written; the temporary file is removed on any failure.

    Raises:
        OSError: as the write or the rename raised it (see :func:`disk_full_error`).
    """
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_whole(path: str | os.PathLike[str], text: str, *, what: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path``, creating its folders; returns ``path``.

    Through :func:`replace_whole`, keeping the previous file's permissions (else 0644). A
    symlink's target is replaced, not the link; a device or pipe (``/dev/stdout``) is
    written directly.

    Args:
        path: where to write.
        text: the whole content.
        what: names the file in messages, e.g. ``"the report r.html"``.

    Raises:
        DiskFullError: the disk filled up (nothing is left behind).
        OSError: another reason the file cannot be written (no permission, ...).
    """
    out = Path(path)
    target = Path(os.path.realpath(out))
    try:
        if target.exists() and not target.is_file():  # /dev/stdout, a FIFO: no rename
            with open(target, "w", encoding="utf-8") as stream:
                stream.write(text)
            return out
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        replace_whole(target, text, mode=mode)
    except OSError as exc:
        full = disk_full_error(exc, what, fix="free space, then run the same command again")
        if full is not None:
            raise full from exc
        raise
    return out
