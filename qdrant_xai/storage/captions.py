"""What a folder to index holds: its image files, and the captions its CSV gives them.

The captions CSV has ``image,caption`` rows, several per image.
Read as people write it: with or without the byte-order mark Excel writes, captions of any
length up to :class:`~qdrant_xai.encoding.text_limits.TextLimits` (a row over it is refused
on its own, named by its row number, and the rest is read), and image paths written
relative to the folder, relative to the CSV (``./x.png``) or absolute (inside the folder).
"""

from __future__ import annotations

import contextlib
import csv
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from qdrant_xai.encoding.text_limits import TextLimits
from qdrant_xai.errors import InputTooLargeError, QdrantXaiError, brief_repr
from qdrant_xai.images.load import iter_image_files

__all__ = [
    "CaptionRow",
    "CaptionsFile",
    "FolderContents",
    "captions_by_source",
    "list_folder",
    "printable",
    "read_captions",
    "read_captions_csv",
    "source_of",
]

_MAX_PATH_CHARS = 4096  # an image column longer than this is no path (PATH_MAX on Linux)
_CSV_LIMIT = threading.Lock()  # csv.field_size_limit is process-wide


@dataclass(frozen=True)
class CaptionRow:
    """One caption of the CSV.

    Attributes:
        row: the row number a spreadsheet shows for it (the header is row 1).
        image: the image column as written.
        caption: the caption column.
    """

    row: int
    image: str
    caption: str


@dataclass(frozen=True)
class CaptionsFile:
    """The readable rows of a captions CSV and the rows refused, each with its reason.

    Attributes:
        path: the CSV.
        rows: the rows read, in file order.
        refused: ``(row number, reason)`` of rows left out (a caption over the text limits,
            an empty or overlong image column).
    """

    path: Path
    rows: tuple[CaptionRow, ...]
    refused: tuple[tuple[int, str], ...]

    def label(self, row: int) -> str:
        """How a row is named in summaries: ``captions.csv row 12``."""
        return f"{self.path} row {row}"


@dataclass(frozen=True)
class FolderContents:
    """The images of a folder to index and their captions.

    Attributes:
        files: ``(path as listed, source of its point)`` of every image file, sorted.
        captions: the captions of each point source, in CSV row order.
        failed: ``(label, reason)`` of what is left out: files of unsupported formats,
            folders that cannot be listed, CSV rows refused or matching no image.
    """

    files: list[tuple[Path, str]]
    captions: dict[str, list[str]]
    failed: list[tuple[str, str]]


def list_folder(
    directory: str | os.PathLike[str],
    *,
    captions: str | os.PathLike[str] | None = None,
    text_limits: TextLimits | None = None,
) -> FolderContents:
    """The image files under ``directory`` and the captions the CSV ``captions`` gives
    them (see :func:`read_captions` and :func:`captions_by_source`)."""
    table = read_captions(captions, text_limits=text_limits) if captions is not None else None
    unlisted: list[OSError] = []
    failed: list[tuple[str, str]] = []
    files = [
        (path, source_of(path))
        for path in iter_image_files(
            directory,
            on_error=unlisted.append,
            on_unsupported=lambda path, why: failed.append((printable(source_of(path)), why)),
        )
    ]
    for exc in unlisted:
        failed.append(
            (
                printable(str(exc.filename)),
                f"cannot list the folder ({exc.strerror or exc}); its images were not "
                "indexed. Fix its permissions and run again",
            )
        )
    by_source, unmatched = captions_by_source(table, directory, files) if table else ({}, [])
    return FolderContents(files, by_source, failed + unmatched)


def source_of(path: Path) -> str:
    """The point source of a file: its resolved path, or the absolute one when it cannot
    be resolved (a broken symlink, a symlink loop): reading it then fails and is reported
    under the name the folder shows, not the missing target's."""
    try:
        return str(path.resolve(strict=True))
    except (OSError, RuntimeError):
        return str(path.absolute())


def printable(source: str) -> str:
    """``source`` printable and storable: bytes of non-UTF-8 file names as ``\\xe9``."""
    try:
        return source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return source.encode("utf-8", "backslashreplace").decode("utf-8")


def read_captions(
    path: str | os.PathLike[str], *, text_limits: TextLimits | None = None
) -> CaptionsFile:
    """Reads a captions CSV with an ``image,caption`` header; rows over ``text_limits``
    are refused one by one (never the whole file).

    Memory is bounded by the limits, not by the file: a physical line longer than
    ``4 * max_chars`` (plus room for the path) is skipped as it is read, never held whole.

    Raises:
        QdrantXaiError: the file cannot be read, is not UTF-8, or has no ``image`` and
            ``caption`` columns.
    """
    limits = text_limits or TextLimits()
    source = Path(path)
    cap = 4 * limits.max_chars + 2 * _MAX_PATH_CHARS
    rows: list[CaptionRow] = []
    refused: list[tuple[int, str]] = []
    try:
        with (
            _CSV_LIMIT,
            open(source, newline="", encoding="utf-8-sig") as handle,
            _field_size_limit(cap),
        ):
            lines = _CappedLines(handle, cap)
            reader = csv.reader(lines)
            header = next(reader, None)
            names = [name.strip() for name in header or []]
            if "image" not in names or "caption" not in names:
                found = brief_repr(header) if lines.cut is None else f"a line of {lines.cut:,}"
                raise QdrantXaiError(
                    f"{source}: the captions CSV needs a header row with columns 'image' and "
                    f"'caption', found {found}"
                )
            image_at, caption_at = names.index("image"), names.index("caption")
            for number, fields in _records(reader, lines, refused, first_row=2):
                if not fields:
                    continue  # a blank line
                image = fields[image_at].strip() if image_at < len(fields) else ""
                caption = fields[caption_at] if caption_at < len(fields) else ""
                reason = _refusal(image, caption, limits)
                if reason is None:
                    rows.append(CaptionRow(number, image, caption))
                else:
                    refused.append((number, reason))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:  # csv.Error: in the header
        raise QdrantXaiError(f"{source}: cannot read the captions CSV ({exc})") from exc
    return CaptionsFile(source, tuple(rows), tuple(refused))


def read_captions_csv(
    path: str | os.PathLike[str], *, text_limits: TextLimits | None = None
) -> dict[str, list[str]]:
    """Captions by image name as written (several rows per image), all rows or none: a row
    :func:`read_captions` refuses raises here (a dataset must be whole).

    Raises:
        QdrantXaiError: the file cannot be read, or a row is refused (named by its number).
    """
    captions = read_captions(path, text_limits=text_limits)
    if captions.refused:
        number, reason = captions.refused[0]
        reason = reason.removesuffix("; the row is left out")
        raise QdrantXaiError(f"{captions.label(number)}: {reason}")
    by_name: dict[str, list[str]] = {}
    for row in captions.rows:
        by_name.setdefault(row.image, []).append(row.caption)
    return by_name


def captions_by_source(
    captions: CaptionsFile, root: str | os.PathLike[str], files: Iterable[tuple[Path, str]]
) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Matches the rows of ``captions`` to the images of the folder ``root``.

    An image column is looked up as a path relative to ``root``, then relative to the
    CSV's folder (``./x.png``, ``imgs/x.png`` beside ``imgs/``), and as an absolute path,
    which must lie inside ``root``. Backslashes (a CSV written on Windows) are read as
    ``/`` when the name as written matches nothing.

    Args:
        captions: the CSV read by :func:`read_captions`.
        root: the folder being indexed.
        files: ``(path under root as listed, source of its point)`` of every image indexed.

    Returns:
        the captions of each point source, in row order, and ``(label, reason)`` for every
        row refused (labelled ``captions.csv row 12``) or matching no image (labelled with
        the image column as written, the row number in the reason).
    """
    folder = Path(os.path.abspath(root))
    real_folder = _real(folder)
    known: dict[str, str] = {}
    for path, source in files:
        known[os.path.normpath(os.path.abspath(path))] = source
        known.setdefault(source, source)  # the point's source is the resolved path
    by_source: dict[str, list[str]] = {}
    failed = [(captions.label(row), reason) for row, reason in captions.refused]
    csv_folder = Path(os.path.abspath(captions.path)).parent
    for row in captions.rows:
        candidates = _candidates(row.image, folder, csv_folder)
        found = _lookup(known, candidates)
        if found is not None:
            by_source.setdefault(found, []).append(row.caption)
        else:
            reason = _unmatched(row.image, candidates, folder, real_folder)
            failed.append((printable(row.image), f"{captions.label(row.row)}: {reason}"))
    return by_source, failed


# -- reading ------------------------------------------------------------------------------


class _CappedLines:
    """The lines of a text file, each read with at most ``cap`` characters held: a longer
    physical line is skipped to its end in chunks and given to the csv reader as an empty
    line (a lone ``"`` when it held an odd number of quotes, so that a quoted field opened
    or closed on it still is), its length kept in :attr:`cut` for the row being read."""

    def __init__(self, handle: TextIO, cap: int) -> None:
        self.handle, self.cap = handle, cap
        self.cut: int | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.handle.readline(self.cap + 1)
        if not line:
            raise StopIteration
        if len(line) <= self.cap or line.endswith(("\n", "\r")):
            return line
        total, quotes = len(line), line.count('"')
        while True:  # the rest of this physical line, dropped chunk by chunk
            more = self.handle.readline(self.cap)
            total += len(more.rstrip("\r\n"))  # characters of the line, not its ending
            quotes += more.count('"')
            if not more or more.endswith(("\n", "\r")):
                break
        self.cut = max(self.cut or 0, total)
        return '"' * (quotes % 2) + "\n"


def _records(
    reader: Iterator[list[str]], lines: _CappedLines, refused: list[tuple[int, str]], first_row: int
) -> Iterator[tuple[int, list[str]]]:
    """``(row number, fields)`` of each record; a record with an overlong line or field
    goes to ``refused`` instead, and reading goes on with the next line."""
    number = first_row - 1
    while True:
        number += 1
        lines.cut = None
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a field over the size limit, across several lines
            refused.append((number, f"unreadable row ({exc}); the row is left out"))
            continue
        if lines.cut is not None:
            refused.append(
                (
                    number,
                    f"a line of {lines.cut:,} characters, more than a caption can hold "
                    f"(TextLimits.max_chars is {(lines.cap - 2 * _MAX_PATH_CHARS) // 4:,}); "
                    "the row is left out: shorten the caption",
                )
            )
            continue
        yield number, fields


def _refusal(image: str, caption: str, limits: TextLimits) -> str | None:
    if not image:
        return "the image column is empty; the row is left out"
    if len(image) > _MAX_PATH_CHARS or "\x00" in image:
        return (
            f"the image column ({len(image):,} characters) is not a file path; the row is left "
            "out (is the caption in the image column?)"
        )
    try:
        limits.check(caption, what="its caption")
    except InputTooLargeError as exc:
        return f"{exc}; the row is left out"
    return None


@contextlib.contextmanager
def _field_size_limit(size: int) -> Iterator[None]:
    """``csv.field_size_limit`` raised to at least ``size`` for a while (callers hold
    ``_CSV_LIMIT``: the limit is process-wide)."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, size))
    try:
        yield
    finally:
        csv.field_size_limit(old)


# -- matching rows to files -----------------------------------------------------------------


def _real(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return os.path.normpath(os.path.abspath(path))


def _candidates(name: str, folder: Path, csv_folder: Path) -> list[Path]:
    names = [name]
    if "\\" in name and os.sep == "/":
        names.append(name.replace("\\", "/"))
    found: list[Path] = []
    for written in names:
        if os.path.isabs(written):
            found.append(Path(os.path.normpath(written)))
        else:
            found += [
                Path(os.path.normpath(folder / written)),
                Path(os.path.normpath(csv_folder / written)),
            ]
    return list(dict.fromkeys(found))


def _lookup(known: dict[str, str], candidates: list[Path]) -> str | None:
    """The source of the first candidate listed, as written or resolved (symlinks)."""
    for candidate in candidates:
        if str(candidate) in known:
            return known[str(candidate)]
    for candidate in candidates:
        if _real(candidate) in known:
            return known[_real(candidate)]
    return None


def _inside(path: Path, folder: Path, real_folder: str) -> bool:
    return path.is_relative_to(folder) or Path(_real(path)).is_relative_to(real_folder)


def _unmatched(name: str, candidates: list[Path], folder: Path, real_folder: str) -> str:
    if not any(_inside(c, folder, real_folder) for c in candidates):
        return (
            f"{candidates[0]} is outside the indexed folder {folder}; only images under it "
            "are indexed (move the image there, or index its folder); the caption is left out"
        )
    existing = [c for c in candidates if c.is_file() and _inside(c, folder, real_folder)]
    if existing:
        return (
            f"{existing[0]} is not an image this run indexed (see its own line, or its "
            "suffix is not an image's); the caption is left out"
        )
    where = " or ".join(dict.fromkeys(str(c) for c in candidates))
    return f"no such image under {folder} (looked for {where}); the caption is left out"
