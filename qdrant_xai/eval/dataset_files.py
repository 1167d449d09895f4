"""A retrieval dataset's files: where they are and what their lines and records hold.

The readers of :mod:`qdrant_xai.eval.datasets` take a file or a folder; these helpers find
the captions file in a folder (two levels deep, the way the usual archives unpack), the
Flickr split files next to it and the folder its images are in, and parse a Flickr token
file, a split file and a Karpathy JSON, with errors that name the file and line. Nothing
here needs torch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from qdrant_xai.errors import DatasetError

__all__ = [
    "find_csv_file",
    "find_image_root",
    "find_karpathy_file",
    "find_split_files",
    "find_token_file",
    "first_line",
    "is_captions_header",
    "karpathy_records",
    "locate",
    "read_lines",
    "split_names",
    "token_captions",
]

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


def locate(
    path: str | os.PathLike[str], find: Callable[[Path], Path | None], missing: str
) -> tuple[Path, Path]:
    """``(path as given, the captions file)``: ``path`` itself, or the file ``find`` finds
    in the folder ``path`` names; ``missing`` is the error when there is none."""
    target = Path(path)
    source = find(target) if target.is_dir() else target
    if source is None or not source.is_file():
        raise DatasetError(target, missing)
    return target, source.absolute()


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line without its end)`` of a UTF-8 text file."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, line in enumerate(handle, 1):
                yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DatasetError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DatasetError(path, f"cannot read it ({exc})") from exc


def token_captions(token: Path) -> dict[str, list[str]]:
    """Captions by image name from a Flickr token file (``IMAGE#N<TAB>caption`` lines)."""
    captions: dict[str, list[str]] = {}
    for number, line in read_lines(token):
        if not line.strip():
            continue
        name, tab, caption = line.partition("\t")
        image, hash_, index = name.rpartition("#")
        if not tab or not hash_ or not image.strip() or not index.strip().isdigit():
            raise DatasetError(
                token, f"expected 'IMAGE#N<TAB>caption', got {line[:80]!r}", line=number
            )
        if not caption.strip():
            raise DatasetError(token, f"empty caption for {image.strip()}", line=number)
        captions.setdefault(image.strip(), []).append(caption.strip())
    if not captions:
        raise DatasetError(token, "no captions in the token file")
    return captions


def split_names(split_path: Path, token: Path, captions: dict[str, list[str]]) -> list[str]:
    """The image names a Flickr split file lists, each of which must have captions."""
    names = [line.strip() for _, line in read_lines(split_path) if line.strip()]
    unknown = [n for n in names if n not in captions]
    if unknown:
        raise DatasetError(
            split_path,
            f"{len(unknown)} images listed here have no captions in {token.name} "
            f"(first: {', '.join(unknown[:3])}); is it the split file of another dataset?",
        )
    return names


def karpathy_records(source: Path) -> tuple[str | None, list[tuple[str, str, str, list[str]]]]:
    """The JSON's dataset name and ``(name, relative path, split, captions)`` per image."""
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
    parsed: list[tuple[str, str, str, list[str]]] = []
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
    name = data.get("dataset")
    return (name if isinstance(name, str) else None), parsed


def first_line(path: Path) -> str:
    """The first non-blank line of ``path`` (without a byte-order mark), or ``""``."""
    for _, line in read_lines(path):
        if line.strip():
            return line.lstrip("\ufeff")
    return ""


def is_captions_header(line: str) -> bool:
    """Whether ``line`` is a CSV header with the columns ``image`` and ``caption``."""
    return {"image", "caption"} <= {c.strip().lower() for c in line.split(",")}


def find_token_file(folder: Path) -> Path | None:
    """A Flickr token file (``Flickr8k.token.txt``, ``*.token``; not the lemmatised one)."""
    for pattern in ("Flickr8k.token.txt", "*.token.txt", "*.token"):
        for path in _near(folder, pattern):
            if "lemma" not in path.name.lower():
                return path
    return None


def find_karpathy_file(folder: Path) -> Path | None:
    """A Karpathy split JSON (``dataset_*.json``)."""
    found = _near(folder, "dataset_*.json")
    return found[0] if found else None


def find_csv_file(folder: Path) -> Path | None:
    """A CSV with the header ``image,caption`` (``captions.csv``, Kaggle's ``captions.txt``)."""
    for pattern in ("captions.csv", "captions.txt", "*.csv"):
        for path in _near(folder, pattern):
            if is_captions_header(first_line(path)):
                return path
    return None


def find_split_files(*folders: Path) -> dict[str, Path]:
    """Split name -> split file, from ``*{train,dev,test}Images.txt`` in ``folders``."""
    splits: dict[str, Path] = {}
    for folder in folders:
        for path in _near(folder, "*Images.txt"):
            match = _SPLIT_FILE.search(path.name)
            if match:
                splits.setdefault(match.group(1).lower(), path)
    return splits


def find_image_root(
    source: Path, images: str | os.PathLike[str] | None, relatives: list[str], extra: list[Path]
) -> Path:
    """The folder the images are under: ``images``, or one next to the captions file
    ``source`` (or next to a folder in ``extra``) where the first images exist."""
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


def _near(folder: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` in ``folder`` and its subfolders, two levels deep."""
    found: list[Path] = []
    for level in ("", "*/", "*/*/"):
        found += sorted(p for p in folder.glob(level + pattern) if p.is_file())
    return found
