"""Retrieval datasets: images with captions, read from the formats real datasets come in.

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

    from qdrant_xai.eval.datasets import read_dataset
    dataset = read_dataset("Flickr8k/", split="test")
    print(dataset.describe())

Reading a dataset needs neither torch nor Qdrant (``qdrant-xai eval --help`` imports this
module); :func:`qdrant_xai.eval.retrieval.evaluate` measures retrieval on what it returns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from qdrant_xai.errors import DatasetError, QdrantXaiError
from qdrant_xai.eval.dataset_files import (
    find_csv_file,
    find_image_root,
    find_karpathy_file,
    find_split_files,
    find_token_file,
    first_line,
    is_captions_header,
    karpathy_records,
    locate,
    split_names,
    token_captions,
)

__all__ = [
    "DEFAULT_CAP",
    "FORMATS",
    "DatasetFormat",
    "EvalItem",
    "RetrievalDataset",
    "default_collection",
    "detect_format",
    "read_csv_dataset",
    "read_dataset",
    "read_flickr8k",
    "read_karpathy",
]

DatasetFormat = Literal["flickr8k", "karpathy", "csv"]
FORMATS: tuple[DatasetFormat, ...] = ("flickr8k", "karpathy", "csv")
DEFAULT_CAP = 1000
"""Hits ranked per query when evaluating (see :func:`qdrant_xai.eval.retrieval.evaluate`);
here so that the CLI's help names it without importing the evaluation."""
ALL_SPLITS = "all"

_TOKEN_LINE = re.compile(r"^[^\t#]+#\d+\t")
_SPLIT_ALIASES = {"dev": "val", "val": "dev"}

Pairs = Sequence[tuple[str, str, Sequence[str]]]
"""``(image name, path relative to the image folder, captions)`` of each image."""


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
        return replace(self, items=self.items[:n])

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
        if find_token_file(target) is not None:
            return "flickr8k"
        if find_karpathy_file(target) is not None:
            return "karpathy"
        if find_csv_file(target) is not None:
            return "csv"
        raise DatasetError(
            target,
            "no retrieval dataset found: looked for a Flickr8k token file (*.token.txt), a "
            "Karpathy split JSON (dataset_*.json) and a captions CSV (captions.csv or "
            "captions.txt with header image,caption); pass the file itself, or --format",
        )
    if target.suffix.lower() == ".json":
        return "karpathy"
    first = first_line(target)
    if target.name.endswith((".token.txt", ".token")) or _TOKEN_LINE.match(first):
        return "flickr8k"
    if is_captions_header(first):
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
    target, token = locate(
        path, find_token_file, "no Flickr8k token file (Flickr8k.token.txt or *.token) found here"
    )
    captions = token_captions(token)
    split_files = find_split_files(token.parent, target if target.is_dir() else token.parent)
    chosen = _choose_split(token, split, list(split_files))
    names = list(captions) if chosen is None else split_names(split_files[chosen], token, captions)
    return _dataset(
        "flickr8k",
        token.name.split(".")[0],
        token,
        target,
        [(n, n, captions[n]) for n in names],
        split=chosen,
        splits=tuple(split_files),
        images=images,
        skip_missing=skip_missing,
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
    target, source = locate(
        path, find_karpathy_file, "no Karpathy split JSON (dataset_*.json) found here"
    )
    name, records = karpathy_records(source)
    available = list(dict.fromkeys(s for _, _, s, _ in records))
    chosen = _choose_split(source, split, available)
    return _dataset(
        "karpathy",
        name or source.stem.removeprefix("dataset_"),
        source,
        target,
        [(n, rel, texts) for n, rel, s, texts in records if chosen is None or s == chosen],
        split=chosen,
        splits=tuple(available),
        images=images,
        skip_missing=skip_missing,
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
    # the indexer's reader, so that a CSV means the same to `index` and to `eval`; imported
    # here because the storage room loads torch
    from qdrant_xai.storage.indexer import read_captions_csv

    target, source = locate(
        path, find_csv_file, "no captions CSV (captions.csv or captions.txt) found here"
    )
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
    return _dataset(
        "csv",
        _slug(source.parent.resolve().name or "csv"),
        source,
        target,
        pairs,
        split=None,
        splits=(),
        images=images,
        skip_missing=skip_missing,
    )


def default_collection(dataset: RetrievalDataset) -> str:
    """A collection of its own for evaluating ``dataset`` (``xai_eval_flickr8k``)."""
    return f"xai_eval_{_slug(dataset.name)}"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "dataset"


# -- what the readers share --------------------------------------------------------------


def _dataset(
    format: DatasetFormat,
    name: str,
    source: Path,
    target: Path,
    pairs: Pairs,
    *,
    split: str | None,
    splits: tuple[str, ...],
    images: str | os.PathLike[str] | None,
    skip_missing: bool,
) -> RetrievalDataset:
    """The dataset of ``pairs``, once their image folder is found and their files checked."""
    root = find_image_root(source, images, [rel for _, rel, _ in pairs], extra=[target])
    items, skipped = _items(root, pairs, skip_missing=skip_missing, what=source)
    return RetrievalDataset(
        name=name.lower(),
        format=format,
        path=source,
        image_root=root,
        split=split,
        splits=splits,
        items=items,
        skipped=skipped,
    )


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


def _items(
    root: Path, pairs: Pairs, *, skip_missing: bool, what: Path
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
