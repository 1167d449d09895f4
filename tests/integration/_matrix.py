"""The shared parts of the output matrix (``test_output_matrix_*.py``, issue 14): every
(query kind, hit kind) pair, on a qdrant-xai collection and on collections langchain-qdrant
wrote, through every output, each checked against the plain Qdrant search.

The world: six scenes of the shapes world (``foreign._base.Scenes``), indexed with the tiny
CLIP of ``tests/conftest.py``

- through the public :class:`~qdrant_xai.Indexer` into ``ours`` (images and captions, two
  named vectors); one caption carries HTML markup;
- through langchain-qdrant's ``QdrantVectorStore`` into ``lc_texts`` (the captions, loaded
  with ``TextLoader``, plus one document whose text and metadata are markup) and
  ``lc_images`` (images by path and inline base64), one unnamed vector each; and its copy
  :data:`UNROOTED`, which is never given image roots (a typed reason for its path images).

On a LangChain collection there is one vector for both kinds, so a "hit kind" is the
collection searched: ``lc_images`` for image hits, ``lc_texts`` for text hits.

A case names its cell: ``qdrant-xai:image(base64)->text`` is an inline base64 image query
for text hits on ``ours``. :data:`LIMIT` is more than any collection holds, so every point
is a hit and the markup always reaches the outputs.
"""

from __future__ import annotations

import base64
import csv
import html.parser
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from langchain_core.documents import Document
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.storage.schema import IMAGE_VECTOR, TEXT_VECTOR
from tests.integration.foreign import langchain_writers
from tests.integration.foreign._base import Scenes, point_key

QueryKind = Literal["text", "image"]
HitKind = Literal["image", "text"]
Form = Literal["text", "path", "base64"]

TEXT_QUERY = "a red circle"
LIMIT = 8
#: HTML in the text of one caption of each collection (and a LangChain metadata value):
#: every HTML output must show it as text, never as markup
MARKUP_CAPTION = 'a red circle <em>big</em> & "loud"'
MARKUP_DOCUMENT = "a blue square <script>alert(1)</script>"
MARKUP_SOURCE = "<img src=x onerror=alert(1)>.txt"
#: a copy of ``lc_images`` only ever explained without image roots
UNROOTED = "lc_images_unrooted"
#: tags the markup above would add if it were not escaped
FORBIDDEN_TAGS = frozenset({"em", "script"})


@dataclass(frozen=True)
class Case:
    """One (collection, query, hit kind) cell of the matrix."""

    collection: Literal["qdrant-xai", "langchain"]
    form: Form
    hit_kind: HitKind

    @property
    def query_kind(self) -> QueryKind:
        return "text" if self.form == "text" else "image"

    @property
    def id(self) -> str:
        query = "text" if self.form == "text" else f"image({self.form})"
        return f"{self.collection}:{query}->{self.hit_kind}"

    def collection_name(self) -> str:
        if self.collection == "qdrant-xai":
            return "ours"
        return "lc_images" if self.hit_kind == "image" else "lc_texts"

    def using(self) -> str | None:
        if self.collection == "langchain":
            return None  # langchain-qdrant's one unnamed vector
        return IMAGE_VECTOR if self.hit_kind == "image" else TEXT_VECTOR

    @property
    def heatmap(self) -> bool:
        """Whether the pair has a heatmap (every pair with an image side)."""
        return "image" in (self.query_kind, self.hit_kind)

    @property
    def words(self) -> bool:
        """Whether the pair has word attributions (every pair with a text side)."""
        return "text" in (self.query_kind, self.hit_kind)

    @property
    def heatmap_side(self) -> str | None:
        if not self.heatmap:
            return None
        return "hit" if self.hit_kind == "image" else "query"

    @property
    def words_side(self) -> str | None:
        if not self.words:
            return None
        # the hit's text whenever the hit is a text (text->text included)
        return "hit" if self.hit_kind == "text" else "query"


CASES = [
    Case(collection, form, hit_kind)
    for collection in ("qdrant-xai", "langchain")
    for form in ("text", "path", "base64")
    for hit_kind in ("image", "text")
]


def cases(*forms: Form) -> list[Any]:
    """The cases whose query is given in one of ``forms``, as ``pytest.param``s with ids."""
    return [pytest.param(c, id=c.id) for c in CASES if c.form in forms]


# -- the world ---------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Scenes under ``root`` (the image root every output is given) and an embedded Qdrant
    at ``qdrant_path`` holding the three collections."""

    root: Path
    scenes: Scenes
    qdrant_path: Path

    @contextmanager
    def open(self) -> Iterator[QdrantClient]:
        client = QdrantClient(path=str(self.qdrant_path))
        try:
            yield client
        finally:
            client.close()

    @property
    def query_image(self) -> Path:
        return self.scenes.items[0].image

    def query(self, case: Case) -> str:
        """The query as a string: the text, the image's path, or its raw base64."""
        if case.form == "text":
            return TEXT_QUERY
        if case.form == "path":
            return str(self.query_image)
        return base64.b64encode(self.query_image.read_bytes()).decode("ascii")

    def query_input(self, case: Case) -> str | Path | bytes:
        """The query as the Python API takes it: text, a ``Path``, or the image's bytes."""
        if case.form == "text":
            return TEXT_QUERY
        if case.form == "path":
            return self.query_image
        return self.query_image.read_bytes()


def build_world(root: Path, encoder: ClipEncoder) -> World:
    scenes = Scenes.write(root)
    _mark_up_first_caption(scenes.csv)
    world = World(root, scenes, root / "qdrant")
    with world.open() as client:
        summary = Indexer(client, encoder, collection_name="ours").index_folder(
            scenes.root / "images", captions=scenes.csv, progress=False
        )
        assert summary.indexed_images == len(scenes.items) and not summary.failed
        langchain_writers.write_text(client, "lc_texts", encoder, scenes)
        store = langchain_writers.open_store(client, "lc_texts", encoder)
        store.add_documents([Document(MARKUP_DOCUMENT, metadata={"source": MARKUP_SOURCE})])
        langchain_writers.write_images(client, "lc_images", encoder, scenes)
        langchain_writers.write_images(client, UNROOTED, encoder, scenes)
    return world


def _mark_up_first_caption(path: Path) -> None:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    rows[1][1] = MARKUP_CAPTION
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)


# -- what every output is checked against ---------------------------------------------------


def plain_hits(
    client: QdrantClient, encoder: ClipEncoder, world: World, case: Case
) -> list[tuple[str, float]]:
    """``(point key, score)`` of the plain Qdrant search for the case, best first: the
    query embedded with CLIP, ``query_points`` on the vector its hits are searched with."""
    query = world.query_input(case)
    if isinstance(query, str):
        vector = encoder.embed_texts([query])[0]
    else:
        vector = encoder.embed_images([query if isinstance(query, Path) else world.query_image])[0]
    points = client.query_points(
        case.collection_name(), query=vector.tolist(), using=case.using(), limit=LIMIT
    ).points
    assert len(points) >= 2
    return [(point_key(p.id), p.score) for p in points]


def assert_same_hits(got: Sequence[tuple[Any, float]], plain: Sequence[tuple[str, float]]) -> None:
    """The same ids in the same order, with the same scores (to float32 precision)."""
    assert [point_key(i) for i, _ in got] == [i for i, _ in plain]
    assert [s for _, s in got] == pytest.approx([s for _, s in plain], abs=1e-5)


def markup_shown(case: Case) -> str | None:
    """The markup text a report of the case's hits shows (the text of a text hit)."""
    if case.hit_kind != "text":
        return None
    return MARKUP_CAPTION if case.collection == "qdrant-xai" else MARKUP_DOCUMENT


def assert_record(record: dict[str, Any], case: Case) -> None:
    """An explanation record (``Explanation.to_dict`` and what is built on it: the CLI's
    JSON lines, the LangChain and LlamaIndex metadata) for the case's pair: explained,
    with a heatmap exactly when the pair has an image side, words exactly when it has a
    text side."""
    assert record["status"] == "ok", record.get("error")
    assert record["error"] is None
    heatmap = record["heatmap"]
    if case.heatmap:
        grid = np.asarray(heatmap, dtype=float)
        assert grid.ndim == 2 and grid.size > 1 and np.isfinite(grid).all()
    else:
        assert heatmap is None
    assert record["heatmap_side"] == case.heatmap_side
    assert bool(record["words"]) == case.words
    assert record["words_side"] == case.words_side
    for word, score, (start, end) in record["words"]:
        assert record["text"][start:end] == word and np.isfinite(score)


# -- HTML -----------------------------------------------------------------------------------


class Page(html.parser.HTMLParser):
    """What a page holds: its tags, the ``alt`` of its images, its hit sections, its text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.alts: list[str] = []
        self.hits = 0
        self.words = 0
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        classes = (values.get("class") or "").split()
        self.hits += "hit" in classes
        self.words += "w" in classes
        if tag == "img":
            self.alts.append(values.get("alt") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def assert_escaped(self) -> None:
        """No markup of the payloads became a tag; it is all there as text."""
        assert not FORBIDDEN_TAGS & set(self.tags), set(self.tags)
        assert not any(t.startswith("on") for t in self.tags)

    def shows(self, text: str) -> bool:
        return text in "".join(self.text)
