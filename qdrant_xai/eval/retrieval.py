"""Retrieval evaluation: Recall@K, mAP and median rank, and proof that explaining changes nothing.

Reads a retrieval dataset in one of the common formats, indexes it (or reuses a collection
that already holds it), and measures text→image and image→text retrieval through Qdrant
the way the paper this project follows reports it (its Table III: Recall@1/5/10 on the
Flickr8k test split). Then it runs every query again with the :class:`~qdrant_xai.Explainer`
in the loop (the top hits of each query are explained before the next search) and checks
that every ranking is identical, ids and scores bit for bit.

Formats (detected from the path, or given explicitly):

* ``flickr8k``: ``Flickr8k.token.txt`` (lines ``image.jpg#k<TAB>caption``), an image
  folder (``Flicker8k_Dataset/``, ``Flickr8k_Dataset/``, ``Images/`` … or ``images=``) and
  optional split files ``Flickr_8k.{train,dev,test}Images.txt``. Flickr30k's
  ``results_20130124.token`` reads the same way.
* ``karpathy``: the Karpathy-split JSON (``dataset_flickr8k.json``, ``dataset_flickr30k.json``,
  ``dataset_coco.json``): ``images[]`` with ``filename``, optional ``filepath``, ``split`` and
  ``sentences[].raw``.
* ``csv``: a CSV with header ``image,caption`` (several rows per image), image names relative
  to the CSV's folder, e.g. Kaggle's Flickr8k ``captions.txt`` next to ``Images/``.

Use::

    from qdrant_xai.eval.retrieval import evaluate, read_dataset
    dataset = read_dataset("Flickr8k/", split="test")
    report = evaluate(client, encoder, dataset, collection_name="eval_flickr8k")
    print(report.format_table())

Ranks are counted up to ``cap`` (default 1000) hits per query: a relevant item ranked
beyond the cap counts as a miss for Recall@K, adds nothing to average precision, and a
query whose first relevant item lies beyond it gets rank ``cap + 1`` for the median. When a
direction has at most ``cap`` candidates every rank is exact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import DatasetError, ImageLoadError, QdrantXaiError
from qdrant_xai.images.load import LoadedImage, load_image
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.codec import Codec
from qdrant_xai.storage.indexer import ImageRecord, Indexer, Profile, read_captions_csv
from qdrant_xai.storage.schema import (
    IMAGE_VECTOR,
    TEXT_VECTOR,
    PayloadKeys,
    image_point_id,
    text_point_id,
)

__all__ = [
    "DEFAULT_CAP",
    "DEFAULT_KS",
    "FORMATS",
    "DatasetError",
    "DatasetFormat",
    "DirectionMetrics",
    "EvalItem",
    "EvaluationReport",
    "Invariance",
    "RetrievalDataset",
    "average_precision",
    "default_collection",
    "detect_format",
    "evaluate",
    "read_csv_dataset",
    "read_dataset",
    "read_flickr8k",
    "read_karpathy",
    "summarize_ranks",
]

DatasetFormat = Literal["flickr8k", "karpathy", "csv"]
FORMATS: tuple[DatasetFormat, ...] = ("flickr8k", "karpathy", "csv")
DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
DEFAULT_CAP = 1000
SCORE_NOISE = 1e-6
"""Largest score difference still counted as backend noise (see :class:`Invariance`)."""
ALL_SPLITS = "all"

Direction = Literal["text_to_image", "image_to_text"]
DIRECTIONS: tuple[Direction, ...] = ("text_to_image", "image_to_text")
_LABELS = {"text_to_image": "text -> image", "image_to_text": "image -> text"}

# folders that hold the images of the usual distributions, looked for next to the captions
_IMAGE_FOLDERS = (
    "Flicker8k_Dataset",  # sic: the official Flickr8k archive spells it so
    "Flickr8k_Dataset",
    "Flickr8k_Dataset/Flicker8k_Dataset",
    "Images",
    "images",
    "flickr30k-images",
    "flickr30k_images",
)
_SPLIT_FILE = re.compile(r"(train|dev|val|test)Images\.txt$", re.IGNORECASE)
_TOKEN_LINE = re.compile(r"^[^\t#]+#\d+\t")
_SPLIT_ALIASES = {"dev": "val", "val": "dev"}


# -- datasets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    """One image of a retrieval dataset and its captions.

    Attributes:
        name: the image as the dataset names it (``1000268201_693b08cb0e.jpg``).
        path: where the image file is (absolute).
        captions: its captions, in the dataset's order, without duplicates.
    """

    name: str
    path: Path
    captions: tuple[str, ...]


@dataclass(frozen=True)
class RetrievalDataset:
    """Images with captions, as read by :func:`read_dataset`.

    Attributes:
        name: short name (``flickr8k``, ``coco``, or the CSV's folder).
        format: the format it was read from.
        path: the captions file it was read from.
        image_root: the folder its images are under.
        split: the split selected (``None``: every image, the format has no splits).
        splits: the splits the dataset defines.
        items: the images, in the dataset's order.
        skipped: ``(image name, reason)`` of images left out (missing, with ``skip_missing``).
    """

    name: str
    format: DatasetFormat
    path: Path
    image_root: Path
    split: str | None
    splits: tuple[str, ...]
    items: tuple[EvalItem, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def n_images(self) -> int:
        return len(self.items)

    @property
    def n_captions(self) -> int:
        return sum(len(item.captions) for item in self.items)

    def limited(self, n: int | None) -> RetrievalDataset:
        """The first ``n`` images (all when ``n`` is None)."""
        if n is None:
            return self
        if n < 1:
            raise ValueError(f"max_images must be at least 1, got {n}")
        return RetrievalDataset(
            name=self.name,
            format=self.format,
            path=self.path,
            image_root=self.image_root,
            split=self.split,
            splits=self.splits,
            items=self.items[:n],
            skipped=self.skipped,
        )

    def describe(self) -> str:
        split = f"split {self.split}" if self.split else "all images"
        return (
            f"{self.name} ({self.format}, {split}): {self.n_images} images, "
            f"{self.n_captions} captions"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "path": str(self.path),
            "image_root": str(self.image_root),
            "split": self.split,
            "splits": list(self.splits),
            "images": self.n_images,
            "captions": self.n_captions,
            "skipped": [list(pair) for pair in self.skipped],
        }


def read_dataset(
    path: str | os.PathLike[str],
    *,
    format: DatasetFormat | None = None,
    split: str | None = None,
    max_images: int | None = None,
    images: str | os.PathLike[str] | None = None,
    skip_missing: bool = False,
) -> RetrievalDataset:
    """Reads a retrieval dataset, detecting its format from ``path`` unless given.

    Args:
        path: the captions file (``Flickr8k.token.txt``, ``dataset_coco.json``, a CSV) or
            a folder holding one.
        format: ``"flickr8k"``, ``"karpathy"`` or ``"csv"``; detected when None.
        split: the split to evaluate (``"test"``, ``"val"``/``"dev"``, ``"train"``,
            ``"restval"``) or ``"all"``. Default: ``"test"`` when the dataset has one,
            else every image.
        max_images: keep the first ``max_images`` images of the split (quick runs).
        images: the image folder, when it is not next to the captions file.
        skip_missing: leave out images whose file is missing (listed in ``skipped``)
            instead of failing.

    Raises:
        DatasetError: the path holds no known format, a line or record is malformed, the
            split is unknown, or images are missing; the message says where and what to do.
    """
    fmt = format or detect_format(path)
    readers: dict[str, Callable[..., RetrievalDataset]] = {
        "flickr8k": read_flickr8k,
        "karpathy": read_karpathy,
        "csv": read_csv_dataset,
    }
    if fmt not in readers:
        raise DatasetError(path, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return readers[fmt](path, split=split, images=images, skip_missing=skip_missing).limited(
        max_images
    )


def detect_format(path: str | os.PathLike[str]) -> DatasetFormat:
    """The format of the dataset at ``path`` (a captions file or a folder holding one)."""
    target = Path(path)
    if not target.exists():
        raise DatasetError(target, "no such file or folder")
    if target.is_dir():
        if _token_file(target) is not None:
            return "flickr8k"
        if _karpathy_file(target) is not None:
            return "karpathy"
        if _csv_file(target) is not None:
            return "csv"
        raise DatasetError(
            target,
            "no retrieval dataset found: looked for a Flickr8k token file (*.token.txt), a "
            "Karpathy split JSON (dataset_*.json) and a captions CSV (captions.csv or "
            "captions.txt with header image,caption); pass the file itself, or --format",
        )
    if target.suffix.lower() == ".json":
        return "karpathy"
    first = _first_line(target)
    if target.name.endswith((".token.txt", ".token")) or _TOKEN_LINE.match(first):
        return "flickr8k"
    if {"image", "caption"} <= {c.strip().lower() for c in first.split(",")}:
        return "csv"
    raise DatasetError(
        target,
        f"cannot tell the format from its first line {first[:60]!r}: expected "
        "'IMAGE#N<TAB>caption' (flickr8k), JSON (karpathy) or the header 'image,caption' "
        "(csv); pass --format",
    )


def read_flickr8k(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    images: str | os.PathLike[str] | None = None,
    skip_missing: bool = False,
) -> RetrievalDataset:
    """Reads Flickr8k (or Flickr30k) from its token file, image folder and split files.

    Args:
        path: the token file, or the folder holding it (searched two levels deep).
        split: see :func:`read_dataset`; splits come from ``*{train,dev,test}Images.txt``
            next to the token file.
        images: the image folder (default: looked for next to the token file).
        skip_missing: see :func:`read_dataset`.
    """
    target = Path(path)
    token = _token_file(target) if target.is_dir() else target
    if token is None or not token.is_file():
        raise DatasetError(
            target, "no Flickr8k token file (Flickr8k.token.txt or *.token) found here"
        )
    token = token.absolute()
    captions: dict[str, list[str]] = {}
    for number, line in _lines(token):
        if not line.strip():
            continue
        name, tab, caption = line.partition("\t")
        image, hash_, index = name.rpartition("#")
        if not tab or not hash_ or not image.strip() or not index.strip().isdigit():
            raise DatasetError(
                token,
                f"expected 'IMAGE#N<TAB>caption', got {line[:80]!r}",
                line=number,
            )
        if not caption.strip():
            raise DatasetError(token, f"empty caption for {image.strip()}", line=number)
        captions.setdefault(image.strip(), []).append(caption.strip())
    if not captions:
        raise DatasetError(token, "no captions in the token file")
    split_files = _split_files(token.parent, target if target.is_dir() else token.parent)
    chosen = _choose_split(token, split, list(split_files))
    if chosen is None:
        names = list(captions)
    else:
        split_path = split_files[chosen]
        names = [line.strip() for _, line in _lines(split_path) if line.strip()]
        unknown = [n for n in names if n not in captions]
        if unknown:
            raise DatasetError(
                split_path,
                f"{len(unknown)} images listed here have no captions in {token.name} "
                f"(first: {', '.join(unknown[:3])}); is it the split file of another dataset?",
            )
    pairs = [(n, n, captions[n]) for n in names]
    root = _image_root(token, images, [n for n, _, _ in pairs], extra=[target])
    items, skipped = _items(root, pairs, skip_missing=skip_missing, what=token)
    return RetrievalDataset(
        name=token.name.split(".")[0].lower(),
        format="flickr8k",
        path=token,
        image_root=root,
        split=chosen,
        splits=tuple(split_files),
        items=items,
        skipped=skipped,
    )


def read_karpathy(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    images: str | os.PathLike[str] | None = None,
    skip_missing: bool = False,
) -> RetrievalDataset:
    """Reads a Karpathy-split JSON (``dataset_flickr8k.json``, ``dataset_coco.json`` …).

    Args:
        path: the JSON file, or a folder holding one ``dataset_*.json``.
        split: see :func:`read_dataset` (``dev`` and ``val`` name the same split).
        images: the image folder; an image is ``images/filepath/filename`` (``filepath``
            when present, as in COCO). Default: looked for next to the JSON.
        skip_missing: see :func:`read_dataset`.
    """
    target = Path(path)
    source = _karpathy_file(target) if target.is_dir() else target
    if source is None or not source.is_file():
        raise DatasetError(target, "no Karpathy split JSON (dataset_*.json) found here")
    source = source.absolute()
    try:
        with source.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DatasetError(source, f"not valid JSON ({exc.msg})", line=exc.lineno) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(source, f"cannot read it ({exc})") from exc
    records = data.get("images") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise DatasetError(
            source, "expected a JSON object with an 'images' list (the Karpathy split format)"
        )
    parsed: list[tuple[str, str, str, list[str]]] = []  # name, relative path, split, captions
    for i, record in enumerate(records):
        where = f"images[{i}]"
        if not isinstance(record, dict) or not isinstance(record.get("filename"), str):
            raise DatasetError(source, f"{where} has no 'filename' string")
        filename = record["filename"]
        filepath = record.get("filepath")
        if filepath is not None and not isinstance(filepath, str):
            raise DatasetError(source, f"{where} ({filename}): 'filepath' is not a string")
        record_split = record.get("split")
        if not isinstance(record_split, str):
            raise DatasetError(source, f"{where} ({filename}) has no 'split' string")
        sentences = record.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise DatasetError(source, f"{where} ({filename}) has no 'sentences' list")
        texts = []
        for j, sentence in enumerate(sentences):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if (
                raw is None
                and isinstance(sentence, dict)
                and isinstance(sentence.get("tokens"), list)
            ):
                raw = " ".join(str(t) for t in sentence["tokens"])
            if not isinstance(raw, str) or not raw.strip():
                raise DatasetError(
                    source, f"{where} ({filename}): sentences[{j}] has no 'raw' text"
                )
            texts.append(raw.strip())
        relative = f"{filepath}/{filename}" if filepath else filename
        parsed.append((filename, relative, record_split, texts))
    if not parsed:
        raise DatasetError(source, "the 'images' list is empty")
    available = list(dict.fromkeys(s for _, _, s, _ in parsed))
    chosen = _choose_split(source, split, available)
    pairs = [(n, rel, texts) for n, rel, s, texts in parsed if chosen is None or s == chosen]
    root = _image_root(source, images, [rel for _, rel, _ in pairs], extra=[target])
    items, skipped = _items(root, pairs, skip_missing=skip_missing, what=source)
    name = data.get("dataset") if isinstance(data.get("dataset"), str) else None
    return RetrievalDataset(
        name=(name or source.stem.removeprefix("dataset_")).lower(),
        format="karpathy",
        path=source,
        image_root=root,
        split=chosen,
        splits=tuple(available),
        items=items,
        skipped=skipped,
    )


def read_csv_dataset(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    images: str | os.PathLike[str] | None = None,
    skip_missing: bool = False,
) -> RetrievalDataset:
    """Reads a CSV with header ``image,caption`` (one row per caption).

    Args:
        path: the CSV, or a folder holding ``captions.csv`` (or Kaggle's ``captions.txt``).
        split: a CSV has no splits: only None or ``"all"``.
        images: the image folder (default: the CSV's folder, or ``Images/`` in it).
        skip_missing: see :func:`read_dataset`.
    """
    target = Path(path)
    source = _csv_file(target) if target.is_dir() else target
    if source is None or not source.is_file():
        raise DatasetError(target, "no captions CSV (captions.csv or captions.txt) found here")
    source = source.absolute()
    if split not in (None, ALL_SPLITS):
        raise DatasetError(
            source, f"a CSV dataset has no splits (asked for {split!r}); drop --split"
        )
    try:
        by_image = read_captions_csv(source)
    except DatasetError:
        raise
    except QdrantXaiError as exc:
        raise DatasetError(source, str(exc).removeprefix(f"{source}: ")) from exc
    if "" in by_image:
        raise DatasetError(source, "a row has an empty 'image' column")
    pairs = []
    for name, texts in by_image.items():
        kept = list(dict.fromkeys(t.strip() for t in texts))
        if "" in kept:
            raise DatasetError(source, f"image {name} has an empty caption")
        pairs.append((name, name, kept))
    if not pairs:
        raise DatasetError(source, "no rows after the header")
    root = _image_root(source, images, [name for name, _, _ in pairs], extra=[target])
    items, skipped = _items(root, pairs, skip_missing=skip_missing, what=source)
    return RetrievalDataset(
        name=_slug(source.parent.resolve().name or "csv"),
        format="csv",
        path=source,
        image_root=root,
        split=None,
        splits=(),
        items=items,
        skipped=skipped,
    )


def default_collection(dataset: RetrievalDataset) -> str:
    """A collection of its own for evaluating ``dataset`` (``xai_eval_flickr8k``)."""
    return f"xai_eval_{_slug(dataset.name)}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "dataset"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, line in enumerate(handle, 1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DatasetError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DatasetError(path, f"cannot read it ({exc})") from exc


def _first_line(path: Path) -> str:
    for _, line in _lines(path):
        if line.strip():
            return line.lstrip("\ufeff")
    return ""


def _near(folder: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` in ``folder`` and its subfolders, two levels deep."""
    found: list[Path] = []
    for level in ("", "*/", "*/*/"):
        found += sorted(p for p in folder.glob(level + pattern) if p.is_file())
    return found


def _token_file(folder: Path) -> Path | None:
    for pattern in ("Flickr8k.token.txt", "*.token.txt", "*.token"):
        for path in _near(folder, pattern):
            if "lemma" not in path.name.lower():
                return path
    return None


def _karpathy_file(folder: Path) -> Path | None:
    found = _near(folder, "dataset_*.json")
    return found[0] if found else None


def _csv_file(folder: Path) -> Path | None:
    for pattern in ("captions.csv", "captions.txt", "*.csv"):
        for path in _near(folder, pattern):
            header = _first_line(path)
            if {"image", "caption"} <= {c.strip().lower() for c in header.split(",")}:
                return path
    return None


def _split_files(*folders: Path) -> dict[str, Path]:
    """Split name -> split file, from ``*{train,dev,test}Images.txt`` in ``folders``."""
    splits: dict[str, Path] = {}
    for folder in folders:
        for path in _near(folder, "*Images.txt"):
            match = _SPLIT_FILE.search(path.name)
            if match:
                splits.setdefault(match.group(1).lower(), path)
    return splits


def _choose_split(source: Path, split: str | None, available: list[str]) -> str | None:
    """The split to read (None: every image)."""
    if split is None:
        return "test" if "test" in available else None
    if split == ALL_SPLITS:
        return None
    if split in available:
        return split
    alias = _SPLIT_ALIASES.get(split)
    if alias in available:
        return alias
    have = ", ".join(available) if available else "none"
    raise DatasetError(
        source,
        f"unknown split {split!r}; this dataset has: {have} (or use 'all' for every image)",
    )


def _image_root(
    source: Path, images: str | os.PathLike[str] | None, relatives: list[str], extra: list[Path]
) -> Path:
    """The folder the images are under: ``images``, or one next to the captions file where
    the first images exist."""
    if images is not None:
        root = Path(images)
        if not root.is_dir():
            raise DatasetError(root, "the image folder given does not exist")
        return root.resolve()
    bases = list(dict.fromkeys([source.parent, *(p for p in extra if p.is_dir())]))
    candidates = [base / sub for base in bases for sub in ("", *_IMAGE_FOLDERS)]
    candidates += [base.parent / sub for base in bases for sub in _IMAGE_FOLDERS]
    probe = relatives[:5]
    for candidate in candidates:
        if candidate.is_dir() and any((candidate / rel).is_file() for rel in probe):
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates if c.is_dir()) or str(source.parent)
    raise DatasetError(
        source,
        f"cannot find the images: none of {', '.join(probe)} is in {looked}; pass the image "
        "folder (images=..., CLI --images DIR)",
    )


def _items(
    root: Path,
    pairs: Sequence[tuple[str, str, Sequence[str]]],
    *,
    skip_missing: bool,
    what: Path,
) -> tuple[tuple[EvalItem, ...], tuple[tuple[str, str], ...]]:
    items = []
    missing = []
    for name, relative, captions in pairs:
        path = (root / relative).resolve()
        if not path.is_file():
            missing.append(name)
            continue
        items.append(EvalItem(name=name, path=path, captions=tuple(dict.fromkeys(captions))))
    if missing and not skip_missing:
        raise DatasetError(
            what,
            f"{len(missing)} of {len(pairs)} images are missing under {root} (first: "
            f"{', '.join(missing[:3])}); pass the right image folder (--images DIR), or "
            "--skip-missing to evaluate without them",
        )
    if not items:
        raise DatasetError(what, "no images to evaluate")
    return tuple(items), tuple((name, f"no file under {root}") for name in missing)


# -- metrics ----------------------------------------------------------------------------


def average_precision(positions: Sequence[int], n_relevant: int) -> float:
    """Average precision of one ranking.

    Args:
        positions: 1-based ranks of the relevant items that were retrieved, ascending.
            Relevant items not retrieved (beyond the cap) are simply absent.
        n_relevant: how many relevant items exist (the denominator).

    Returns:
        ``sum(i / positions[i-1]) / n_relevant``: precision at each relevant item's rank,
        averaged over all relevant items (missing ones count 0).
    """
    if n_relevant < 1:
        raise ValueError("n_relevant must be at least 1")
    ranks = sorted(positions)
    return sum((i + 1) / rank for i, rank in enumerate(ranks)) / n_relevant


@dataclass(frozen=True)
class DirectionMetrics:
    """Retrieval quality in one direction.

    Attributes:
        direction: ``"text_to_image"`` or ``"image_to_text"``.
        queries: how many queries were run.
        candidates: how many points each query ranks (images, or captions).
        cap: ranks counted per query (``min(cap, candidates)`` hits were requested).
        recall: Recall@K by K: share of queries with a relevant item in the top K.
        mean_ap: mean average precision (all relevant items of a query count).
        median_rank: median rank of each query's first relevant item (``cap + 1`` when
            none is within the cap).
        misses: queries with no relevant item within the cap.
    """

    direction: str
    queries: int
    candidates: int
    cap: int
    recall: dict[int, float]
    mean_ap: float
    median_rank: float
    misses: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recall"] = {f"R@{k}": v for k, v in self.recall.items()}
        return data


def summarize_ranks(
    positions: Sequence[Sequence[int]],
    n_relevant: Sequence[int],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    cap: int,
    direction: str = "",
    candidates: int | None = None,
) -> DirectionMetrics:
    """Recall@K, mAP and median rank from the ranks of each query's relevant items.

    Args:
        positions: per query, the 1-based ranks (``<= cap``) of its relevant items found.
        n_relevant: per query, how many relevant items it has.
        ks: the K of Recall@K.
        cap: ranks were counted up to ``cap``; a query without a relevant item within it
            ranks ``cap + 1`` for the median.
        direction, candidates: recorded in the result.
    """
    if len(positions) != len(n_relevant):
        raise ValueError("positions and n_relevant must have one entry per query")
    if not positions:
        raise ValueError("no queries")
    firsts = np.array([min(p) if p else cap + 1 for p in positions], dtype=np.float64)
    recall = {k: float(np.mean(firsts <= k)) for k in ks}
    aps = [average_precision(p, n) for p, n in zip(positions, n_relevant, strict=True)]
    return DirectionMetrics(
        direction=direction,
        queries=len(positions),
        candidates=candidates if candidates is not None else cap,
        cap=cap,
        recall=recall,
        mean_ap=float(np.mean(aps)),
        median_rank=float(np.median(firsts)),
        misses=int(np.sum(firsts > cap)),
    )


# -- the evaluation ---------------------------------------------------------------------


@dataclass
class Invariance:
    """Whether explaining the hits changed any ranking.

    The same queries run twice: once as plain searches, once with the top hits of each
    query explained between searches. A ranking is *identical* when the ids and the scores
    come back bit for bit. A Qdrant server is bit-reproducible; the embedded backend
    (qdrant-client's local mode) is not, because every cosine search re-normalises the
    stored vectors in place and some flip between two neighbouring floats. So the same
    chunk of queries is also searched twice in a row, with nothing in between, as a
    control: when even that differs, scores that differ in the last bits are the backend's
    noise, and the verdict is *identical up to backend noise* provided every id is in the
    same place and no score moved by more than :data:`SCORE_NOISE`.

    Attributes:
        queries_compared: queries run both without and with the explainer in the loop.
        bit_identical: of those, how many returned the same ids and scores, bit for bit.
        same_ids: how many returned the same ids in the same order.
        max_score_difference: the largest score difference between the two runs.
        query_vectors_identical: the encoder embedded every query bit-identically in both
            runs (explaining did not change the model).
        hits_untouched: ``explain`` left every hit list it was given as it was (ids, scores
            and order, bit for bit), and its explanations carry those hits in that order.
        backend_repeatable: the control (the same searches twice in a row) was bit-identical.
        explained_queries, explained_hits: how much was explained.
        heatmap_method, word_method, top: what was explained (the top ``top`` hits).
        differences: the first few queries whose rankings differed.
    """

    queries_compared: int = 0
    bit_identical: int = 0
    same_ids: int = 0
    max_score_difference: float = 0.0
    query_vectors_identical: bool = True
    hits_untouched: bool = True
    backend_repeatable: bool = True
    explained_queries: int = 0
    explained_hits: int = 0
    heatmap_method: str = ""
    word_method: str = ""
    top: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def rankings_identical(self) -> bool:
        """Every ranking came back bit for bit, and the explainer left its hits alone."""
        return (
            self.queries_compared > 0
            and self.bit_identical == self.queries_compared
            and self.hits_untouched
            and self.query_vectors_identical
        )

    @property
    def verdict(self) -> Literal["identical", "identical up to backend noise", "changed"]:
        if self.rankings_identical:
            return "identical"
        if (
            self.queries_compared > 0
            and self.same_ids == self.queries_compared
            and self.hits_untouched
            and self.query_vectors_identical
            and not self.backend_repeatable
            and self.max_score_difference <= SCORE_NOISE
        ):
            return "identical up to backend noise"
        return "changed"

    @property
    def invariant(self) -> bool:
        """Explaining changed no ranking (bit for bit, or up to the backend's own noise)."""
        return self.verdict != "changed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rankings_identical": self.rankings_identical,
            "verdict": self.verdict,
            "invariant": self.invariant,
            **asdict(self),
        }

    def line(self) -> str:
        n = self.queries_compared
        what = (
            f"top {self.top} hits of each query explained with {self.heatmap_method} + "
            f"{self.word_method} between searches, {self.explained_hits} hits"
        )
        if self.verdict == "identical":
            return (
                f"Ranking invariance: IDENTICAL for {self.bit_identical} of {n} queries, ids "
                f"and scores bit for bit ({what})"
            )
        if self.verdict == "identical up to backend noise":
            return (
                f"Ranking invariance: IDENTICAL up to backend noise: same ids in the same "
                f"order for {self.same_ids} of {n} queries, scores bit-identical for "
                f"{self.bit_identical} and within {self.max_score_difference:.1e} for the "
                "rest; the same searches twice in a row already differ on this backend "
                "(embedded Qdrant re-normalises stored vectors on every cosine search), so "
                "use a Qdrant server (--url) for the bit-for-bit check. Query vectors were "
                f"bit-identical and the explainer left its hits untouched ({what})"
            )
        problems = []
        if self.same_ids < n:
            problems.append(f"{n - self.same_ids} of {n} queries returned other ids or order")
        if self.bit_identical < n:
            problems.append(
                f"{n - self.bit_identical} of {n} queries other scores (max difference "
                f"{self.max_score_difference:.1e})"
            )
        if not self.query_vectors_identical:
            problems.append("query vectors changed (the model changed while explaining)")
        if not self.hits_untouched:
            problems.append("the explainer altered the hits it was given")
        text = f"Ranking invariance: CHANGED: {'; '.join(problems)} ({what})"
        if self.differences:
            text += "\n  first: " + self.differences[0]
        return text


@dataclass
class EvaluationReport:
    """Everything an evaluation measured; :meth:`format_table` prints it, :meth:`to_dict`
    is the JSON."""

    dataset: RetrievalDataset
    collection: str
    model: str
    fingerprint: str
    ks: tuple[int, ...]
    metrics: dict[str, DirectionMetrics]
    explained_metrics: dict[str, DirectionMetrics] | None
    invariance: Invariance | None
    indexing: dict[str, Any]
    timing: dict[str, float]
    settings: dict[str, Any]
    excluded: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.to_dict(),
            "collection": self.collection,
            "model": {"id": self.model, "fingerprint": self.fingerprint},
            "settings": self.settings,
            "indexing": self.indexing,
            "excluded": [list(pair) for pair in self.excluded],
            "counts": {
                "images": self.dataset.n_images - len(self.excluded),
                "captions": self.metrics["text_to_image"].queries,
                "text_to_image_queries": self.metrics["text_to_image"].queries,
                "image_to_text_queries": self.metrics["image_to_text"].queries,
            },
            "metrics": {d: m.to_dict() for d, m in self.metrics.items()},
            "metrics_with_explanations": (
                None
                if self.explained_metrics is None
                else {d: m.to_dict() for d, m in self.explained_metrics.items()}
            ),
            "invariance": None if self.invariance is None else self.invariance.to_dict(),
            "timing": self.timing,
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return out

    def format_table(self) -> str:
        """The results as text: the paper's Table III layout, the full metrics, the
        invariance line and the timings."""
        t2i, i2t = self.metrics["text_to_image"], self.metrics["image_to_text"]
        ks = self.ks
        lines = [
            f"Evaluated {self.dataset.describe()}",
            f"collection {self.collection!r}, model {self.model}",
        ]
        done = self.indexing
        lines.append(
            f"indexed {done['indexed_images']} images and {done['indexed_texts']} captions, "
            f"{done['unchanged']} images already there (reused)"
        )
        if self.excluded:
            first = self.excluded[0]
            lines.append(
                f"{len(self.excluded)} images excluded: they could not be indexed (first: "
                f"{first[0]}: {first[1]})"
            )
        cell = 7
        width = cell * len(ks)
        head = f"{'':<24}{'Text -> Image':<{width + 3}}{'Image -> Text':<{width}}"
        sub = f"{'Method':<24}" + "".join(f"{f'R@{k}':<{cell}}" for k in ks) + "   "
        sub += "".join(f"{f'R@{k}':<{cell}}" for k in ks)
        lines += ["", "Cross-modal retrieval (the paper's Table III layout)", head, sub]
        rows = [("Search (baseline)", self.metrics)]
        if self.explained_metrics is not None:
            rows.append(("Search + explanations", self.explained_metrics))
        for label, metrics in rows:
            a, b = metrics["text_to_image"], metrics["image_to_text"]
            lines.append(
                f"{label:<24}"
                + "".join(f"{a.recall[k]:<{cell}.3f}" for k in ks)
                + "   "
                + "".join(f"{b.recall[k]:<{cell}.3f}" for k in ks)
            )
        lines += [
            "",
            f"{'Direction':<16}{'queries':>8}  "
            + "".join(f"{f'R@{k}':<{cell}}" for k in ks)
            + f"{'mAP':<{cell}}{'median rank':<12}",
        ]
        for m in (t2i, i2t):
            lines.append(
                f"{_LABELS[m.direction]:<16}{m.queries:>8}  "
                + "".join(f"{m.recall[k]:<{cell}.3f}" for k in ks)
                + f"{m.mean_ap:<{cell}.3f}{m.median_rank:g}"
            )
        for m in (t2i, i2t):
            if m.candidates > m.cap:
                lines.append(
                    f"  {_LABELS[m.direction]}: ranks counted up to {m.cap} of {m.candidates} "
                    f"candidates ({m.misses} queries had no relevant item within; a miss for "
                    f"R@K, rank {m.cap + 1} for the median)"
                )
        lines.append("")
        if self.invariance is not None:
            for paragraph in self.invariance.line().split("\n"):
                lines.append(textwrap.fill(paragraph, width=100, subsequent_indent="  "))
        else:
            lines.append("Ranking invariance: not checked (explanations off)")
        timing = self.timing
        text = f"Time: indexing {timing['index_s']:.1f} s; search pass {timing['search_s']:.1f} s"
        if "explained_pass_s" in timing:
            text += (
                f"; search + explain pass {timing['explained_pass_s']:.1f} s "
                f"({timing['explained_pass_s'] / max(timing['search_s'], 1e-9):.1f}x, "
                f"explaining alone {timing['explain_s']:.1f} s)"
            )
        lines.append(text)
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        return self.format_table()


@dataclass
class _Query:
    """One query: a caption (text→image) or an image (image→text)."""

    text: str | None
    image: Path | None
    relevant: frozenset[str]


@dataclass
class _Plan:
    """The queries of one direction and how to search them."""

    direction: Direction
    queries: list[_Query]
    using: str
    candidates: int
    filter: models.Filter | None


@dataclass
class _PassResult:
    """What one pass over one direction's queries returned."""

    positions: list[list[int]] = field(default_factory=list)
    id_digests: list[bytes] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    vector_digests: list[bytes] = field(default_factory=list)


def evaluate(
    client: QdrantClient,
    encoder: ClipEncoder,
    dataset: RetrievalDataset,
    *,
    collection_name: str,
    reuse: bool = True,
    explain: bool = True,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 32,
    cap: int = DEFAULT_CAP,
    explain_top: int = 10,
    heatmap_method: str = "decomposition",
    word_method: str = "occlusion",
    codec: Codec = "fp16",
    profile: Profile = "standard",
    exact: bool = True,
    progress: bool = False,
    retry: RetryPolicy | None = None,
) -> EvaluationReport:
    """Indexes ``dataset`` and measures text→image and image→text retrieval through Qdrant.

    Every caption is a text→image query whose relevant image is its own; every image is an
    image→text query whose relevant items are its captions. Queries are embedded in chunks
    of ``batch_size`` and sent with ``query_batch_points``. With ``explain``, the same
    queries run again, and after each chunk's search the top ``explain_top`` hits of each
    query are explained (the explainer reads stored features, runs the encoder and reads
    Qdrant) before the next chunk is searched; every ranking must come back identical (see
    :class:`Invariance`).

    Memory: the scores of every query are kept for the comparison, 8 bytes per query and
    rank (``min(cap, candidates)`` ranks).

    Args:
        client: any ``QdrantClient``.
        encoder: the CLIP model to evaluate.
        dataset: from :func:`read_dataset`.
        collection_name: where the dataset is indexed. Points of other images in it are
            filtered out of the rankings.
        reuse: keep points already indexed with this model (only new ones are encoded);
            False deletes the dataset's points first and indexes them again (other points
            of the collection are left alone).
        explain: run the explained pass and the invariance check.
        ks: the K of Recall@K.
        batch_size: images per indexing batch, and queries per search batch.
        cap: ranks counted per query (see the module docstring).
        explain_top: hits explained per query.
        heatmap_method, word_method: the explanation methods.
        codec, profile: how features are stored when indexing (see :class:`Indexer`).
        exact: exact (brute force) search, so that the metrics are the model's; False
            searches through the HNSW index as a deployment would.
        progress: show progress bars.
        retry: how Qdrant calls are retried on transient failures (default
            :class:`~qdrant_xai.RetryPolicy`); every call here is a read or an idempotent
            write.

    Raises:
        DatasetError: no image of the dataset could be indexed.
    """
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1:
        raise ValueError("ks must be positive integers")
    if cap < ks[-1]:
        raise ValueError(f"cap ({cap}) must be at least the largest K ({ks[-1]})")
    if batch_size < 1 or explain_top < 1:
        raise ValueError("batch_size and explain_top must be at least 1")

    retry = retry or RetryPolicy()
    started = time.perf_counter()
    exists = retry.call(
        client.collection_exists, collection_name, what="checking the collection", client=client
    )
    if not reuse and exists:
        ids = [image_point_id(str(item.path)) for item in dataset.items] + [
            text_point_id(c, str(item.path)) for item in dataset.items for c in item.captions
        ]
        for chunk in _chunks(ids, 1000):
            retry.call(
                client.delete,
                collection_name,
                what=f"deleting {len(chunk)} points before re-indexing",
                client=client,
                points_selector=models.PointIdsList(points=list(chunk)),
            )
    indexer = Indexer(
        client,
        encoder,
        collection_name=collection_name,
        codec=codec,
        batch_size=batch_size,
        profile=profile,
        retry=retry,
    )
    summary = indexer.index(
        (ImageRecord(str(item.path), item.captions) for item in dataset.items),
        total=dataset.n_images,
        progress=progress,
    )
    index_s = time.perf_counter() - started

    sources = [str(i.path) for i in dataset.items]
    present = _present_images(client, collection_name, sources, retry)
    failed = dict(summary.failed)
    items = [item for item in dataset.items if str(item.path) in present]
    excluded = [
        (item.name, failed.get(str(item.path), "not in the collection after indexing"))
        for item in dataset.items
        if str(item.path) not in present
    ]
    if not items:
        raise DatasetError(
            dataset.path,
            f"none of the {dataset.n_images} images could be indexed (first failure: "
            f"{excluded[0][1] if excluded else 'unknown'})",
        )
    plans = _plans(client, collection_name, items, retry)
    search_params = models.SearchParams(exact=True) if exact else None
    invariance = Invariance(heatmap_method=heatmap_method, word_method=word_method, top=explain_top)

    def search(plan: _Plan, vectors: np.ndarray) -> list[list[models.ScoredPoint]]:
        requests = [
            models.QueryRequest(
                query=vector.tolist(),
                using=plan.using,
                limit=min(cap, plan.candidates),
                filter=plan.filter,
                params=search_params,
                with_payload=False,
                with_vector=False,
            )
            for vector in vectors
        ]
        with warnings.catch_warnings():
            # the embedded backend always searches exactly and says so for every request
            warnings.filterwarnings("ignore", message="Local mode performs exact")
            responses = retry.call(
                client.query_batch_points,
                collection_name,
                what=f"a batch of {len(requests)} searches",
                client=client,
                requests=requests,
            )
        return [response.points for response in responses]

    def run_pass(plan: _Plan, explainer: Any) -> tuple[_PassResult, float]:
        result = _PassResult()
        explain_s = 0.0
        label = f"{_LABELS[plan.direction]}{', explained' if explainer else ''}"
        bar = _progress(len(plan.queries), progress, label)
        for number, chunk in enumerate(_chunks(plan.queries, batch_size)):
            loaded: list[LoadedImage] = []
            if plan.direction == "text_to_image":
                vectors = encoder.embed_texts([q.text or "" for q in chunk])
            else:
                loaded = [_load(q.image) for q in chunk]
                vectors = encoder.embed_images(loaded)
            result.vector_digests.append(hashlib.blake2b(vectors.tobytes()).digest())
            rankings = search(plan, vectors)
            if explainer is None and number == 0:  # the control: the same searches again
                invariance.backend_repeatable &= [_ranking_key(r) for r in rankings] == [
                    _ranking_key(r) for r in search(plan, vectors)
                ]
            for query, points in zip(chunk, rankings, strict=True):
                result.positions.append(
                    [r + 1 for r, p in enumerate(points) if str(p.id) in query.relevant]
                )
                result.id_digests.append(_id_digest(points))
                result.scores.append(np.array([p.score for p in points], dtype=np.float64))
            if explainer is not None:
                tick = time.perf_counter()
                kind: Literal["image", "text"] = (
                    "image" if plan.direction == "text_to_image" else "text"
                )
                for row, (query, points) in enumerate(zip(chunk, rankings, strict=True)):
                    hits = points[:explain_top]
                    before = _ranking_key(hits)
                    explanations = explainer.explain(
                        query.text if query.text is not None else loaded[row], hits, hit_kind=kind
                    )
                    invariance.explained_queries += 1
                    invariance.explained_hits += len(explanations)
                    if not (
                        _ranking_key(hits) == before
                        and _ranking_key([e.hit for e in explanations]) == before
                    ):
                        invariance.hits_untouched = False
                explain_s += time.perf_counter() - tick
            bar.update(len(chunk))
        bar.close()
        return result, explain_s

    tick = time.perf_counter()
    baseline = {plan.direction: run_pass(plan, None)[0] for plan in plans}
    timing = {"index_s": index_s, "search_s": time.perf_counter() - tick}
    metrics = _metrics(baseline, plans, ks, cap)

    explained_metrics: dict[str, DirectionMetrics] | None = None
    if explain:
        from qdrant_xai.explain import Explainer

        explainer = Explainer(
            encoder,
            client,
            collection_name=collection_name,
            image_roots=[dataset.image_root],
            heatmap_method=heatmap_method,
            word_method=word_method,
            retry=retry,
        )
        tick = time.perf_counter()
        explained: dict[Direction, _PassResult] = {}
        explain_s = 0.0
        for plan in plans:
            explained[plan.direction], seconds = run_pass(plan, explainer)
            explain_s += seconds
        timing["explained_pass_s"] = time.perf_counter() - tick
        timing["explain_s"] = explain_s
        explained_metrics = _metrics(explained, plans, ks, cap)
        for plan in plans:
            _compare(plan, baseline[plan.direction], explained[plan.direction], invariance)
    return EvaluationReport(
        dataset=dataset,
        collection=collection_name,
        model=encoder.model_id,
        fingerprint=encoder.fingerprint.key,
        ks=ks,
        metrics=metrics,
        explained_metrics=explained_metrics,
        invariance=invariance if explain else None,
        indexing={
            "indexed_images": summary.indexed_images,
            "indexed_texts": summary.indexed_texts,
            "unchanged": summary.unchanged,
            "failed": [list(pair) for pair in summary.failed],
        },
        timing=timing,
        settings={
            "ks": list(ks),
            "cap": cap,
            "exact": exact,
            "batch_size": batch_size,
            "explain": explain,
            "explain_top": explain_top,
            "heatmap_method": heatmap_method,
            "word_method": word_method,
            "codec": codec,
            "profile": profile,
            "filtered": {plan.direction: plan.filter is not None for plan in plans},
            "machine": _machine(encoder),
        },
        excluded=excluded,
    )


def _plans(
    client: QdrantClient, collection: str, items: Sequence[EvalItem], retry: RetryPolicy
) -> list[_Plan]:
    """The queries of both directions, restricted to the dataset's points."""
    image_ids = {str(item.path): image_point_id(str(item.path)) for item in items}
    text_queries = [
        _Query(text=c, image=None, relevant=frozenset({image_ids[str(item.path)]}))
        for item in items
        for c in item.captions
    ]
    image_queries = [
        _Query(
            text=None,
            image=item.path,
            relevant=frozenset(text_point_id(c, str(item.path)) for c in item.captions),
        )
        for item in items
    ]
    text_ids = {pid for query in image_queries for pid in query.relevant}
    filters = _candidate_filters(client, collection, set(image_ids.values()), text_ids, retry)
    return [
        _Plan(
            "text_to_image", text_queries, IMAGE_VECTOR, len(image_ids), filters["text_to_image"]
        ),
        _Plan("image_to_text", image_queries, TEXT_VECTOR, len(text_ids), filters["image_to_text"]),
    ]


def _compare(plan: _Plan, before: _PassResult, after: _PassResult, check: Invariance) -> None:
    """Adds one direction's comparison of the plain and the explained pass to ``check``."""
    if before.vector_digests != after.vector_digests:
        check.query_vectors_identical = False
    for i, query in enumerate(plan.queries):
        check.queries_compared += 1
        a, b = before.scores[i], after.scores[i]
        same_ids = before.id_digests[i] == after.id_digests[i]
        check.same_ids += same_ids
        if same_ids and a.tobytes() == b.tobytes():
            check.bit_identical += 1
            continue
        delta = float(np.max(np.abs(a - b), initial=0.0)) if a.shape == b.shape else math.inf
        check.max_score_difference = max(check.max_score_difference, delta)
        if len(check.differences) < 5:
            what = query.text if query.text is not None else str(query.image)
            check.differences.append(
                f"{_LABELS[plan.direction]} query {i} ({what!r}): "
                f"{'same ids' if same_ids else 'other ids or order'}, largest score "
                f"difference {delta:.3g}"
            )


def _metrics(
    results: dict[Direction, _PassResult], plans: list[_Plan], ks: tuple[int, ...], cap: int
) -> dict[str, DirectionMetrics]:
    return {
        plan.direction: summarize_ranks(
            results[plan.direction].positions,
            [len(q.relevant) for q in plan.queries],
            ks=ks,
            cap=min(cap, plan.candidates),
            direction=plan.direction,
            candidates=plan.candidates,
        )
        for plan in plans
    }


def _present_images(
    client: QdrantClient, collection: str, sources: list[str], retry: RetryPolicy
) -> set[str]:
    """The sources among ``sources`` whose image point is in the collection."""
    by_id = {image_point_id(s): s for s in sources}
    present: set[str] = set()
    for chunk in _chunks(list(by_id), 1000):
        records = retry.call(
            client.retrieve,
            collection,
            what=f"reading {len(chunk)} points",
            client=client,
            ids=chunk,
            with_payload=False,
        )
        for record in records:
            present.add(by_id[str(record.id)])
    return present


def _candidate_filters(
    client: QdrantClient,
    collection: str,
    image_ids: set[str],
    text_ids: set[str],
    retry: RetryPolicy,
) -> dict[Direction, models.Filter | None]:
    """Per direction, a filter keeping the rankings to the dataset's points, or None when
    the collection holds nothing else."""
    total = retry.call(
        client.count, collection, what="counting points", client=client, exact=True
    ).count
    if total == len(image_ids) + len(text_ids):
        return {"text_to_image": None, "image_to_text": None}
    extra: dict[str, list[str]] = {"image": [], "text": []}
    offset: Any = None
    while True:
        records, offset = retry.call(
            client.scroll,
            collection,
            what="listing the collection's points",
            client=client,
            limit=1000,
            offset=offset,
            with_payload=[PayloadKeys.KIND],
        )
        for record in records:
            pid = str(record.id)
            if pid not in image_ids and pid not in text_ids:
                kind = (record.payload or {}).get(PayloadKeys.KIND)
                extra["text" if kind == "text" else "image"].append(pid)
        if offset is None:
            break

    def keep(ours: set[str], others: list[str]) -> models.Filter | None:
        if not others:
            return None
        if len(others) <= len(ours):
            return models.Filter(must_not=[models.HasIdCondition(has_id=list(others))])
        return models.Filter(must=[models.HasIdCondition(has_id=sorted(ours))])

    return {
        "text_to_image": keep(image_ids, extra["image"]),
        "image_to_text": keep(text_ids, extra["text"]),
    }


def _id_digest(points: Sequence[models.ScoredPoint]) -> bytes:
    """A hash of a ranking's ids, in order."""
    return hashlib.blake2b("\n".join(str(p.id) for p in points).encode()).digest()


def _ranking_key(points: Sequence[models.ScoredPoint]) -> list[tuple[str, bytes]]:
    """A ranking's ids and the exact bits of its scores, in order."""
    return [(str(p.id), struct.pack("<d", p.score)) for p in points]


def _load(path: Path | None) -> LoadedImage:
    if path is None:  # pragma: no cover - image queries always have a path
        raise ValueError("image query without a path")
    try:
        return load_image(path)
    except ImageLoadError as exc:  # pragma: no cover - it was indexed a moment ago
        raise DatasetError(path, f"cannot read the query image: {exc.reason}") from exc


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _machine(encoder: ClipEncoder) -> dict[str, Any]:
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(encoder.device),
        "dtype": str(encoder.dtype).removeprefix("torch."),
    }


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="query", desc=desc, disable=not enabled)
