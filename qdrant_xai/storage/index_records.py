"""What the indexer works on and reports: an image with its captions, a batch ready to check
and encode, and the summary of a run (shared by the single-process indexer and the Ray
engine, :mod:`qdrant_xai.storage.distributed`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["BatchPlan", "ImageRecord", "IndexSummary"]

# what would break a summary entry into several lines: C0/C1 controls, Unicode separators
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class ImageRecord:
    """One image to index and its captions (may be empty)."""

    source: str
    captions: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchPlan:
    """A batch ready to check and encode (:meth:`Indexer.plan_batch`): its storable
    records, their image point ids and caption point ids by source, and the digests of
    their files by image point id (None: unreadable, loading reports why)."""

    records: list[ImageRecord]
    ids: dict[str, str]
    caption_ids: dict[str, list[str]]
    digests: dict[str, str | None]


@dataclass
class IndexSummary:
    """What an indexing run did.

    Attributes:
        indexed_images, indexed_texts: points written in this run.
        unchanged: images (with their captions) already present for this model, skipped.
        failed: ``(source, reason)`` for every image, caption or CSV row that was skipped.
        notes: ``(source, remark)`` for items indexed with a caveat (truncated captions,
            the first page of a multi-page file).

    ``str()`` gives one line per entry: control characters in names (a newline in a file
    name) are shown escaped, as ``repr`` shows them.
    """

    indexed_images: int = 0
    indexed_texts: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"indexed {self.indexed_images} images and {self.indexed_texts} texts; "
            f"{self.unchanged} unchanged; {len(self.failed)} skipped"
        ]
        lines += [f"  skipped {_one_line(s)}: {_one_line(r)}" for s, r in self.failed]
        lines += [f"  note {_one_line(s)}: {_one_line(r)}" for s, r in self.notes]
        return "\n".join(lines)


def _one_line(text: str) -> str:
    """``text`` on one line: control characters and line separators escaped as repr does."""
    return _LINE_BREAKING.sub(lambda m: repr(m.group())[1:-1], text)
