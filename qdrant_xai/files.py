"""Files written whole or not at all: reports and JSON results.

A report written in place on a full disk (or interrupted) leaves a truncated file that looks
like a result; :func:`write_text_whole` writes beside the target and renames over it, so a
failed write leaves nothing new behind and a previous file intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from qdrant_xai.connection import disk_full_error

__all__ = ["write_text_whole"]


def write_text_whole(path: str | os.PathLike[str], text: str, *, what: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path``, creating its folders; returns ``path``.

    To a temporary file beside it, flushed to disk, renamed over ``path`` when complete and
    removed on failure; the previous file's permissions are kept (else 0644). A symlink's
    target is replaced, not the link; a device or pipe (``/dev/stdout``) is written directly.

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
    tmp: str | None = None
    try:
        if target.exists() and not target.is_file():  # /dev/stdout, a FIFO: no rename
            with open(target, "w", encoding="utf-8") as stream:
                stream.write(text)
            return out
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        full = disk_full_error(exc, what, fix="free space, then run the same command again")
        if full is not None:
            raise full from exc
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return out
