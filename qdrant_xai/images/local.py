"""Reading local image files named by untrusted sources, only beneath allowed roots.

Local paths (and ``file://`` URLs, which follow the same rules) are read only when they are
regular files that resolve, symlinks followed, inside one of the roots. ``..``, absolute paths
elsewhere and symlinks pointing out of a root are refused; directories, FIFOs and devices are
refused without being read (the file is opened with ``O_NONBLOCK``, so a FIFO never blocks
the caller). On POSIX the file is opened one path component at a time below the root with
``O_NOFOLLOW``, so a symlink swapped in after the check is refused rather than followed.

:class:`~qdrant_xai.images.policy.ImageSourcePolicy` calls these functions with its roots and
byte limit; refusals raise :class:`~qdrant_xai.SourceNotAllowedError`, failures to read
:class:`~qdrant_xai.ImageLoadError`.
"""

from __future__ import annotations

import errno
import os
import stat
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from qdrant_xai.errors import ImageLoadError, SourceNotAllowedError
from qdrant_xai.images.labels import CONTROL, redacted, shown
from qdrant_xai.images.load import _read_at_most

__all__ = ["file_url_path", "local_path", "read_local"]


def local_path(source: str, label: str, *, roots: Sequence[Path]) -> Path:
    """The resolved path ``source`` names, if it lies beneath one of ``roots``.

    Raises:
        SourceNotAllowedError: empty, a NUL byte, no roots, outside the roots, or an
            existing file that is not a regular file. A missing file passes (reading it
            reports an :class:`ImageLoadError`).
    """
    if not source:
        raise SourceNotAllowedError("empty image source; store a path or URL in the payload")
    if "\x00" in source:
        raise SourceNotAllowedError(f"{label}: contains a NUL byte; not a usable path")
    if not roots:
        raise SourceNotAllowedError(
            f"{label}: reading images named in payloads is off; allow the folder with "
            "image_roots=[...] (CLI: --image-root DIR)"
        )
    try:
        path = Path(source).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise SourceNotAllowedError(f"{label}: cannot be resolved ({exc})") from exc
    if not any(path.is_relative_to(root) for root in roots):
        raise SourceNotAllowedError(
            f"{label}: resolves to {path}, outside the allowed image roots "
            f"{[str(r) for r in roots]}; add its folder to image_roots "
            "(CLI: --image-root DIR) if it should be readable"
        )
    try:
        mode = path.stat().st_mode
    except OSError:
        return path  # missing: reported as an ImageLoadError when opened
    _require_regular(mode, label)
    return path


def file_url_path(source: str, *, roots: Sequence[Path]) -> Path:
    """The local path a ``file://`` URL names, under the same rules as :func:`local_path`.

    Raises:
        SourceNotAllowedError: control characters, credentials, a host other than
            ``localhost``, a relative path, a query or fragment, or a path refused by
            :func:`local_path`.
    """
    label = redacted(source)
    if CONTROL.search(source):
        raise SourceNotAllowedError(f"{label}: contains control characters")
    parts = urllib.parse.urlsplit(source)
    if parts.username is not None or parts.password is not None:
        raise SourceNotAllowedError(f"{label}: file:// URLs cannot carry credentials")
    if parts.netloc.lower() not in ("", "localhost"):
        raise SourceNotAllowedError(
            f"{label}: file:// URLs must name a local file (file:///path); a host "
            f"({shown(parts.netloc)}) would reach another machine's share"
        )
    if not parts.path.startswith("/"):
        raise SourceNotAllowedError(f"{label}: file URLs must be absolute (file:///path)")
    if parts.query or parts.fragment:
        raise SourceNotAllowedError(f"{label}: file:// URLs with ? or # are not read")
    return local_path(urllib.request.url2pathname(parts.path), label, roots=roots)


def read_local(path: Path, label: str, *, roots: Sequence[Path], limit: int) -> bytes:
    """The bytes of ``path`` (checked by :func:`local_path`), at most ``limit`` of them.

    Raises:
        SourceNotAllowedError: a symlink appeared in the path since the check, or the
            opened file is not a regular file.
        ImageLoadError: the file cannot be read, or is larger than ``limit``.
    """
    root = next(r for r in roots if path.is_relative_to(r))
    try:
        fd = _open_beneath(root, path)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, getattr(errno, "EMLINK", -1)):
            raise SourceNotAllowedError(
                f"{label}: a symlink appeared in the path while opening it; refused"
            ) from exc
        raise ImageLoadError(label, f"cannot read the file ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        _require_regular(info.st_mode, label)
        if info.st_size > limit:
            raise ImageLoadError(
                label,
                f"file is {info.st_size} bytes, over the {limit}-byte limit; downscale it "
                "or raise max_bytes / ImageLimits.max_bytes",
            )
        try:
            data = _read_at_most(handle, info.st_size, limit)
        except OSError as exc:
            raise ImageLoadError(label, f"cannot read the file ({exc})") from exc
    if len(data) > limit:
        raise ImageLoadError(label, f"file grew past the {limit}-byte limit while read")
    return data


def _require_regular(mode: int, label: str) -> None:
    if stat.S_ISREG(mode):
        return
    what = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    raise SourceNotAllowedError(f"{label}: is {what}; only regular image files are read")


def _open_beneath(root: Path, path: Path) -> int:
    """Opens ``path`` (resolved, inside ``root``) read-only without following symlinks.

    Where ``dir_fd`` is supported every component below ``root`` is opened with
    ``O_NOFOLLOW``, so a symlink swapped in after the check makes the open fail (ELOOP)
    instead of leaving the root. ``O_NONBLOCK`` keeps a FIFO from blocking the open.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    file_flags = flags | nofollow | getattr(os, "O_NONBLOCK", 0)
    parts = path.relative_to(root).parts
    directory = getattr(os, "O_DIRECTORY", 0)
    if not parts:
        raise IsADirectoryError(21, "is an image root folder, not a file")
    if not (nofollow and directory and os.open in os.supports_dir_fd):
        return os.open(path, file_flags)
    fd = os.open(root, flags | directory)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, flags | directory | nofollow, dir_fd=fd)
            except NotADirectoryError:
                # O_DIRECTORY | O_NOFOLLOW on a symlink says ENOTDIR; report it as one
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, "symlink in the path") from None
                raise
            os.close(fd)
            fd = child
        return os.open(parts[-1], file_flags, dir_fd=fd)
    finally:
        os.close(fd)
