"""Where a collection keeps its vectors, image sources and texts: qdrant-xai's own layout and
the layouts other tools write, so their hits can be explained and backfilled.

A :class:`CollectionLayout` names the vector(s) and the payload keys (dotted paths into
nested payloads, first match wins). Presets (vectors; image source; text):

* ``qdrant-xai``: ``image``/``text``; ``source``; ``text``.
* ``langchain`` (langchain-qdrant's ``QdrantVectorStore``): the unnamed vector;
  ``metadata.source`` and kin, or a base64 image as ``page_content``; ``page_content``.
* ``llamaindex`` (LlamaIndex's ``QdrantVectorStore``): ``text-dense`` or the unnamed vector;
  ``image_path``/``image_url``/``image`` inside the JSON of ``_node_content``;
  ``_node_content`` → ``text``, or ``text``.
* ``fastembed`` (qdrant-client's FastEmbed helpers, the official Qdrant MCP server): the
  first ``fast-*`` vector; ``metadata.source`` and kin; ``document``.
* ``qdrant-tutorial`` (Qdrant's multimodal tutorial, both vectors on one point):
  ``image``/``text``; ``image``; ``caption``.

Image sources found in payloads may be local paths, URLs or base64; they are read only
through an :class:`~qdrant_xai.images.policy.ImageSourcePolicy`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from qdrant_client import AsyncQdrantClient, QdrantClient, models

from qdrant_xai.errors import CollectionError
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.schema import IMAGE_VECTOR, TEXT_VECTOR, PayloadKeys

__all__ = ["LAYOUTS", "UNNAMED", "CollectionLayout", "layout_named", "looks_like_base64_image"]

#: the unnamed (default) vector of a collection
UNNAMED = ""


@dataclass(frozen=True)
class CollectionLayout:
    """How a collection stores what explaining its hits needs.

    Args:
        name: the preset's name (or yours).
        image_vector: the vector image points are searched with (``""``: the unnamed
            vector; ``"fast-*"``: the first vector whose name matches the prefix).
        text_vector: the vector text points are searched with (often the same vector).
        image_keys: payload paths of the image source (local path, URL or base64).
        text_keys: payload paths of the text; a path through a JSON-encoded string (such as
            LlamaIndex's ``_node_content``) is followed.
        base64_text_images: treat a ``text`` that is a base64 image as the image (LangChain
            stores images added to some vector stores that way).
    """

    name: str
    image_vector: str = IMAGE_VECTOR
    text_vector: str = TEXT_VECTOR
    image_keys: tuple[str, ...] = (PayloadKeys.SOURCE,)
    text_keys: tuple[str, ...] = (PayloadKeys.TEXT,)
    base64_text_images: bool = False
    notes: str = field(default="", compare=False)

    # -- reading payloads ---------------------------------------------------------------

    def image_source(self, payload: Mapping[str, Any]) -> str | None:
        """The image source of a point, or None."""
        for key in self.image_keys:
            value = _lookup(payload, key)
            if isinstance(value, str) and value.strip():
                return value
        if self.base64_text_images:
            text = self._raw_text(payload)
            if text is not None and looks_like_base64_image(text):
                return text
        return None

    def text(self, payload: Mapping[str, Any]) -> str | None:
        """The text of a point (None for image points)."""
        text = self._raw_text(payload)
        if text is None or (self.base64_text_images and looks_like_base64_image(text)):
            return None
        return text

    def _raw_text(self, payload: Mapping[str, Any]) -> str | None:
        for key in self.text_keys:
            value = _lookup(payload, key)
            if isinstance(value, str) and value.strip():
                return value
        return None

    def kind_of(
        self, payload: Mapping[str, Any], *, default: Literal["image", "text"] = "image"
    ) -> Literal["image", "text"]:
        """What a point is: the kind qdrant-xai recorded (``xai_kind``), else what its payload
        holds (an image source or a text), else ``default`` (it holds both or neither)."""
        recorded = payload.get(PayloadKeys.KIND)
        if recorded == "image" or recorded == "text":
            return recorded
        source, text = self.image_source(payload), self.text(payload)
        if source is not None and text is None:
            return "image"
        if text is not None and source is None:
            return "text"
        return default

    def payload_keys(self) -> list[str]:
        """Top-level payload keys to fetch for these paths."""
        return list(dict.fromkeys(k.split(".", 1)[0] for k in (*self.image_keys, *self.text_keys)))

    # -- vectors ------------------------------------------------------------------------

    def resolve(
        self, client: QdrantClient, collection_name: str, *, retry: RetryPolicy | None = None
    ) -> CollectionLayout:
        """This layout with ``fast-*`` prefixes and missing names resolved against the
        collection's actual vectors.

        Raises:
            CollectionError: the collection has no vector this layout can use.
            QdrantUnavailableError: Qdrant did not answer through ``retry``.
        """
        info = (retry or RetryPolicy()).call(
            client.get_collection,
            collection_name,
            what=f"reading collection {collection_name!r}",
            client=client,
        )
        return self.resolved_with(info, collection_name)

    async def aresolve(
        self, client: AsyncQdrantClient, collection_name: str, *, retry: RetryPolicy | None = None
    ) -> CollectionLayout:
        """Async :meth:`resolve`, for an ``AsyncQdrantClient``."""
        info = await (retry or RetryPolicy()).acall(
            client.get_collection, collection_name, what=f"reading collection {collection_name!r}"
        )
        return self.resolved_with(info, collection_name)

    def resolved_with(self, info: models.CollectionInfo, collection_name: str) -> CollectionLayout:
        """This layout resolved against a collection's info (see :meth:`resolve`)."""
        vectors: Any = info.config.params.vectors
        names = sorted(vectors) if isinstance(vectors, dict) else [UNNAMED]
        return replace(
            self,
            image_vector=_pick(self.image_vector, names, self, collection_name),
            text_vector=_pick(self.text_vector, names, self, collection_name),
        )

    def vector_of(self, vector: Any, kind: Literal["image", "text"]) -> list[float] | None:
        """The stored vector of a point for ``kind`` (from ``Record.vector``)."""
        name = self.image_vector if kind == "image" else self.text_vector
        if isinstance(vector, dict):
            value = vector.get(name)
        elif name == UNNAMED:
            value = vector
        else:
            value = None
        return value if isinstance(value, list) and value and isinstance(value[0], float) else None

    def vector_request(self) -> bool | list[str]:
        """``with_vectors`` for a retrieve call."""
        names = {self.image_vector, self.text_vector}
        return True if UNNAMED in names else sorted(names)

    def using(self, kind: Literal["image", "text"]) -> str | None:
        """``using`` for ``query_points`` (None: the unnamed vector)."""
        name = self.image_vector if kind == "image" else self.text_vector
        return name or None


def _pick(wanted: str, names: Sequence[str], layout: CollectionLayout, collection: str) -> str:
    if wanted.endswith("*"):
        matches = [n for n in names if n.startswith(wanted[:-1])]
        if matches:
            return matches[0]
    elif wanted in names:
        return wanted
    if wanted == "text-dense" and UNNAMED in names:
        return UNNAMED  # LlamaIndex without hybrid search uses the unnamed vector
    raise CollectionError(
        f"collection {collection!r} has vectors {[n or '(unnamed)' for n in names]}, none "
        f"matching {wanted or '(unnamed)'!r} of the {layout.name!r} layout; pass a layout "
        "with the right vector name (CollectionLayout(..., image_vector=NAME))"
    )


def _lookup(payload: Mapping[str, Any], path: str) -> Any:
    """``payload`` at a dotted path; JSON-encoded strings along the way are decoded."""
    value: Any = payload
    for part in path.split("."):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than Python goes
                return None
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM")


def looks_like_base64_image(text: str) -> bool:
    """Whether a payload string is an inline image (a data URI, or base64 whose first bytes
    are a PNG, JPEG, GIF, WebP or BMP signature) rather than text or a path."""
    if text.startswith("data:image/"):
        return True
    if len(text) < 64 or any(c.isspace() for c in text[:64]):
        return False
    try:
        head = base64.b64decode(text[:64], validate=True)
    except (binascii.Error, ValueError):
        return False
    return head.startswith(_IMAGE_MAGIC)


_SOURCE_KEYS = (
    "metadata.source",
    "metadata.image",
    "metadata.image_path",
    "metadata.image_url",
    "metadata.uri",
    "metadata.url",
    "metadata.path",
)

LAYOUTS: dict[str, CollectionLayout] = {
    layout.name: layout
    for layout in (
        CollectionLayout("qdrant-xai"),
        CollectionLayout(
            "langchain",
            image_vector=UNNAMED,
            text_vector=UNNAMED,
            image_keys=_SOURCE_KEYS,
            text_keys=("page_content",),
            base64_text_images=True,
            notes="langchain-qdrant's QdrantVectorStore (dense, default vector name)",
        ),
        CollectionLayout(
            "llamaindex",
            image_vector="text-dense",
            text_vector="text-dense",
            image_keys=(
                "_node_content.image_path",
                "_node_content.image_url",
                "_node_content.image",
                "image_path",
                "file_path",
            ),
            text_keys=("_node_content.text", "text"),
            notes="LlamaIndex's QdrantVectorStore",
        ),
        CollectionLayout(
            "fastembed",
            image_vector="fast-*",
            text_vector="fast-*",
            image_keys=_SOURCE_KEYS,
            text_keys=("document",),
            notes="qdrant-client's FastEmbed helpers and the official Qdrant MCP server",
        ),
        CollectionLayout(
            "qdrant-tutorial",
            image_vector="image",
            text_vector="text",
            image_keys=("image", "image_url", "url"),
            text_keys=("caption", "text"),
            notes="Qdrant's multimodal tutorial: both vectors on one point",
        ),
    )
}


def layout_named(layout: str | CollectionLayout) -> CollectionLayout:
    """The preset called ``layout`` (a layout is returned as is)."""
    if isinstance(layout, CollectionLayout):
        return layout
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[layout]
