"""What every writer shares: the scenes it writes from, and what it reports it wrote."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qdrant_client import models

from qdrant_xai.demo.world import write_scene_folder

Kind = Literal["image", "text"]


def point_key(point_id: models.ExtendedPointId) -> str:
    """A point id as one comparable string: uuid strings in their canonical dashed form
    (libraries hand out ``uuid4().hex``, Qdrant returns dashes), integers as digits."""
    if isinstance(point_id, int):
        return str(point_id)
    return str(uuid.UUID(str(point_id)))


@dataclass(frozen=True)
class Scene:
    """One picture and its caption, and the caption as a text file (for text loaders)."""

    image: Path
    caption: str
    caption_file: Path

    def base64(self) -> str:
        """The image as raw base64, as ``Chroma.encode_image`` and LlamaIndex's
        ``img_2_b64`` store it."""
        return base64.b64encode(self.image.read_bytes()).decode("utf-8")


@dataclass(frozen=True)
class Scenes:
    """Scenes written under ``root``: ``root/images/*.png`` with ``captions.csv``, and
    ``root/texts/caption_N.txt``. ``root`` is the image root the tests allow: text files
    and the CSV sit beneath it, so a text taken for an image would be read, not refused."""

    root: Path
    csv: Path
    items: tuple[Scene, ...]

    @classmethod
    def write(cls, root: Path, n: int = 6, *, seed: int = 13) -> Scenes:
        images = root / "images"
        csv = write_scene_folder(images, n, seed=seed, size=64)
        texts = root / "texts"
        texts.mkdir(parents=True, exist_ok=True)
        items = []
        for i, line in enumerate(csv.read_text(encoding="utf-8").splitlines()[1:]):
            name, caption = line.split(",", 1)
            caption = caption.strip('"')
            caption_file = texts / f"caption_{i}.txt"
            caption_file.write_text(caption + "\n", encoding="utf-8")
            items.append(Scene(images / name, caption, caption_file))
        return cls(root, csv, tuple(items))


@dataclass(frozen=True)
class WrittenPoint:
    """One point a writer put into Qdrant.

    Attributes:
        id: the point id, as :func:`point_key` writes it.
        kind: ``"image"`` (embedded with the image tower) or ``"text"``.
        embedded_text: for text points, exactly the string the library embedded.
        image: for image points, the file the vector was computed from.
        inline: the image is stored as base64 in the payload.
    """

    id: str
    kind: Kind
    embedded_text: str | None = None
    image: Path | None = None
    inline: bool = False


@dataclass(frozen=True)
class Written:
    """What a writer wrote.

    Attributes:
        writer: the writer's name (the test id), e.g. ``"langchain-csv"``.
        library: the writer qdrant-xai should detect (the layout name: ``"langchain"``,
            ``"llamaindex"``, ``"fastembed"``).
        collection_name: the collection.
        points: every point written.
        scenes: the scenes the points come from.
        using: the vector the library searches (``""``: the unnamed vector).
    """

    writer: str
    library: str
    collection_name: str
    points: tuple[WrittenPoint, ...]
    scenes: Scenes
    using: str

    def of_kind(self, kind: Kind) -> list[WrittenPoint]:
        return [p for p in self.points if p.kind == kind]

    def by_id(self) -> dict[str, WrittenPoint]:
        return {p.id: p for p in self.points}


def text_points(ids: Iterable[models.ExtendedPointId], texts: Iterable[str]) -> list[WrittenPoint]:
    return [
        WrittenPoint(point_key(i), "text", embedded_text=t) for i, t in zip(ids, texts, strict=True)
    ]
