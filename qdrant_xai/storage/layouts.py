"""Where a collection keeps its vectors, image sources and texts: qdrant-xai's own layout and
the layouts other tools write, so their hits can be explained and backfilled.

A :class:`CollectionLayout` names the vector(s) and the payload keys (dotted paths into
nested payloads, first match wins; a path through a JSON-encoded string is followed).
Presets (vectors; image source; text embedded):

* ``qdrant-xai``: ``image``/``text``; ``source``; ``text``.
* ``langchain`` (langchain-qdrant's ``QdrantVectorStore``): the unnamed vector (or the one
  passed as ``vector_name``); ``metadata.image``/``image_path``/``image_url``, or
  ``metadata.source``/``file_path``/``path``/``url``/``uri`` when its value is an image, or
  an image as ``page_content`` (base64, or its path or file name); ``page_content``.
* ``llamaindex`` (LlamaIndex's ``QdrantVectorStore``): ``text-dense`` or the unnamed vector;
  ``image``/``image_path``/``image_url`` inside the JSON of ``_node_content``, or
  ``file_path`` when it is an image; the metadata lines and text the node embedded
  (``get_content(metadata_mode=EMBED)``, rebuilt from ``_node_content``, see
  :mod:`qdrant_xai.storage.nodes`).
* ``fastembed`` (qdrant-client's FastEmbed helpers, mcp-server-qdrant): the first ``fast-*``
  vector; image-like ``metadata`` keys (or top-level ones) when their value is an image;
  ``document``.
* ``qdrant-tutorial`` (Qdrant's multimodal tutorial, both vectors on one point):
  ``image``/``text``; ``image``; ``caption``.

Two kinds of image keys: ``image_keys`` always hold an image (a key named for one);
``file_keys`` name the file or URL a document came from, an image only when the value is
one (an image extension, a data URI, base64 of an image, or an extensionless local file
whose first bytes are an image's; see :mod:`qdrant_xai.images.sniff`). A LangChain
``CSVLoader`` row (``metadata.source="captions.csv"``) or a LlamaIndex text file node
(``file_path=".../notes.txt"``) is a text point.

Image sources found in payloads may be local paths, URLs or base64; they are read only
through an :class:`~qdrant_xai.images.policy.ImageSourcePolicy`. Collections whose writer
is not known in advance: :mod:`qdrant_xai.storage.detect`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from qdrant_client import AsyncQdrantClient, QdrantClient, models

from qdrant_xai.errors import CollectionError, brief_repr
from qdrant_xai.images.sniff import looks_like_base64_image
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.nodes import (
    IMAGE_NODE_TYPES,
    TEXT_NODE_TYPES,
    embedded_text,
    is_node,
    node_text,
)
from qdrant_xai.storage.reading import PayloadReader, is_image, names_image, payload_value
from qdrant_xai.storage.schema import IMAGE_VECTOR, TEXT_VECTOR, PayloadKeys

if TYPE_CHECKING:
    from qdrant_xai.images.policy import ImageSourcePolicy

__all__ = [
    "AUTO",
    "LAYOUTS",
    "UNNAMED",
    "CollectionLayout",
    "LayoutSpec",
    "custom_layout",
    "layout_named",
    "looks_like_base64_image",
    "payload_value",
    "vector_names",
]

#: the unnamed (default) vector of a collection
UNNAMED = ""
#: the layout argument that asks for detection (:func:`qdrant_xai.storage.detect.resolve_layout`)
AUTO = "auto"
#: a vector name matching whichever single vector the collection has
ANY_VECTOR = "*"
#: LlamaIndex's payload keys: the node as JSON, and its class
NODE_CONTENT = "_node_content"
NODE_TYPE = "_node_type"


@dataclass(frozen=True)
class CollectionLayout:
    """How a collection stores what explaining its hits needs.

    Args:
        name: the preset's name, the detected writer, or yours.
        image_vector: the vector image points are searched with (``""``: the unnamed
            vector; ``"fast-*"``: the first vector whose name starts so; ``"*"``: the
            collection's only vector).
        text_vector: the vector text points are searched with (often the same vector).
        image_keys: payload paths that hold an image source (local path, URL or base64)
            whatever it looks like.
        text_keys: payload paths of the text the writer embedded; a path ending in
            ``_node_content`` reads a LlamaIndex node (its metadata lines and text).
        text_images: treat a text that is an image as the point's image, not its text:
            base64 or a data URI (how ``Chroma.add_images`` stores images), or the path, URL
            or file name of an image (without spaces, or the name of the file the point's
            image keys name): LangChain keeps what it embedded as ``page_content``.
        file_keys: payload paths of the file or URL a document came from: an image source
            only when the value is an image.
    """

    name: str
    image_vector: str = IMAGE_VECTOR
    text_vector: str = TEXT_VECTOR
    image_keys: tuple[str, ...] = (PayloadKeys.SOURCE,)
    text_keys: tuple[str, ...] = (PayloadKeys.TEXT,)
    text_images: bool = False
    file_keys: tuple[str, ...] = ()
    notes: str = field(default="", compare=False)

    # -- reading payloads ---------------------------------------------------------------

    def image_source(
        self, payload: Mapping[str, Any], *, sources: ImageSourcePolicy | None = None
    ) -> str | None:
        """The image source of a point, or None (see :meth:`image_entry`)."""
        found = self.image_entry(payload, sources=sources)
        return found[1] if found else None

    def image_entry(
        self, payload: Mapping[str, Any], *, sources: ImageSourcePolicy | None = None
    ) -> tuple[str, str] | None:
        """``(payload path, image source)`` of a point, or None.

        ``image_keys`` count whatever they hold; ``file_keys`` only when the value is an
        image (an extensionless local path is looked at, beneath the roots of ``sources``,
        when given) and the writer did not record the point as a text (a LlamaIndex
        ``TextNode``); a text that is an image counts with ``text_images``.
        """
        reader = PayloadReader(payload)
        for key in self.image_keys:
            value = reader.get(key)
            if isinstance(value, str) and value.strip():
                return key, value
        # the file a text was read from is not its image (a LlamaIndex TextNode's file_path)
        file_keys = self.file_keys if self.recorded_kind(payload) != "text" else ()
        for key in file_keys:
            value = reader.get(key)
            if isinstance(value, str) and value.strip() and is_image(value, sources):
                return key, value
        if self.text_images:
            for key in self.text_keys:
                value = reader.get(key)
                if isinstance(value, str) and names_image(value, None):
                    return key, value
        return None

    def text(self, payload: Mapping[str, Any]) -> str | None:
        """The text the writing library embedded for the point (None for image points):
        for a LlamaIndex node its metadata lines and text as ``get_content(metadata_mode=
        MetadataMode.EMBED)`` returns them."""
        found = self.text_entry(payload)
        return found[1] if found else None

    def display_text(self, payload: Mapping[str, Any]) -> str | None:
        """The point's text as people read it: a LlamaIndex node's bare text (without the
        metadata lines it was embedded with; those when its text is empty), else
        :meth:`text`."""
        found = self.text_entry(payload, embedded=False)
        return found[1] if found else self.text(payload)

    def text_entry(
        self, payload: Mapping[str, Any], *, embedded: bool = True
    ) -> tuple[str, str] | None:
        """``(payload path, text)`` of a point (``embedded``: the text the writer embedded,
        else the bare text), or None."""
        reader = PayloadReader(payload)
        for key in self.text_keys:
            value = reader.get(key)
            if key.rsplit(".", 1)[-1] == NODE_CONTENT:
                node = reader.decoded(value)
                if not is_node(node):
                    continue
                if _node_type(payload, node) in IMAGE_NODE_TYPES:
                    return None  # an image node: its vector is the image's
                value = embedded_text(node) if embedded else node_text(node)
            if not isinstance(value, str) or not value.strip():
                continue
            if self.text_images and names_image(value, lambda: self.image_source(payload)):
                return None  # the text is the image, or names it
            return key, value
        return None

    def kind_of(
        self,
        payload: Mapping[str, Any],
        *,
        default: Literal["image", "text"] = "image",
        sources: ImageSourcePolicy | None = None,
    ) -> Literal["image", "text"]:
        """What a point is: the kind qdrant-xai recorded (``xai_kind``) or LlamaIndex's node
        class (``_node_type``), else what its payload holds (an image source or a text),
        else ``default`` (it holds both or neither)."""
        recorded = self.recorded_kind(payload)
        if recorded is not None:
            return recorded
        source, text = self.image_source(payload, sources=sources), self.text(payload)
        if source is not None and text is None:
            return "image"
        if text is not None and source is None:
            return "text"
        return default

    @staticmethod
    def recorded_kind(payload: Mapping[str, Any]) -> Literal["image", "text"] | None:
        """The kind the writer recorded: qdrant-xai's ``xai_kind``, or the class of a
        LlamaIndex node (``_node_type``); None when neither says."""
        recorded = payload.get(PayloadKeys.KIND)
        if recorded == "image" or recorded == "text":
            return recorded
        node_type = payload.get(NODE_TYPE)
        if node_type in IMAGE_NODE_TYPES:
            return "image"
        if node_type in TEXT_NODE_TYPES:
            return "text"
        return None

    def payload_keys(self) -> list[str]:
        """Top-level payload keys to fetch for these paths (and LlamaIndex's node class)."""
        paths = (*self.image_keys, *self.file_keys, *self.text_keys)
        keys = [k.split(".", 1)[0] for k in paths]
        if NODE_CONTENT in keys:
            keys.append(NODE_TYPE)
        return list(dict.fromkeys(keys))

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
        names = vector_names(info)
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


LayoutSpec = str | CollectionLayout | None
"""What every ``layout`` argument takes: a preset name, a layout, or ``"auto"``/``None``
(detect it)."""


def vector_names(info: models.CollectionInfo) -> list[str]:
    """The names of a collection's dense vectors, sorted (``[""]``: one unnamed vector)."""
    vectors: Any = info.config.params.vectors
    if isinstance(vectors, dict):
        return sorted(vectors)
    return [UNNAMED] if vectors is not None else []


def _pick(wanted: str, names: Sequence[str], layout: CollectionLayout, collection: str) -> str:
    shown = [n or "(unnamed)" for n in names]
    if wanted == ANY_VECTOR:
        if len(names) == 1:
            return names[0]
        raise CollectionError(
            f"collection {collection!r} has vectors {shown}; say which one the "
            f"{layout.name!r} layout searches (CLI: --vector NAME; Python: "
            "CollectionLayout(..., image_vector=NAME, text_vector=NAME))"
        )
    if wanted.endswith("*"):
        matches = [n for n in names if n.startswith(wanted[:-1])]
        if matches:
            return matches[0]
    elif wanted in names:
        return wanted
    if wanted == "text-dense" and UNNAMED in names:
        return UNNAMED  # LlamaIndex without hybrid search uses the unnamed vector
    raise CollectionError(
        f"collection {collection!r} has vectors {shown}, none matching "
        f"{wanted or '(unnamed)'!r} of the {layout.name!r} layout; pass a layout with the "
        "right vector name (CLI: --vector NAME; Python: CollectionLayout(..., "
        "image_vector=NAME))"
    )


def _node_type(payload: Mapping[str, Any], node: Mapping[str, Any]) -> object:
    return payload.get(NODE_TYPE, node.get("class_name"))


_IMAGE_METADATA = ("metadata.image", "metadata.image_path", "metadata.image_url")
_FILE_METADATA = (
    "metadata.source",
    "metadata.file_path",
    "metadata.path",
    "metadata.url",
    "metadata.uri",
)

LAYOUTS: dict[str, CollectionLayout] = {
    layout.name: layout
    for layout in (
        CollectionLayout("qdrant-xai"),
        CollectionLayout(
            "langchain",
            image_vector=UNNAMED,
            text_vector=UNNAMED,
            image_keys=_IMAGE_METADATA,
            file_keys=_FILE_METADATA,
            text_keys=("page_content",),
            text_images=True,
            notes="langchain-qdrant's QdrantVectorStore (dense, default vector name)",
        ),
        CollectionLayout(
            "llamaindex",
            image_vector="text-dense",
            text_vector="text-dense",
            image_keys=(
                f"{NODE_CONTENT}.image",
                f"{NODE_CONTENT}.image_path",
                f"{NODE_CONTENT}.image_url",
                "image_path",
            ),
            file_keys=("file_path",),
            text_keys=(NODE_CONTENT, "text"),
            notes="LlamaIndex's QdrantVectorStore",
        ),
        CollectionLayout(
            "fastembed",
            image_vector="fast-*",
            text_vector="fast-*",
            image_keys=(*_IMAGE_METADATA, "image", "image_path", "image_url"),
            file_keys=(*_FILE_METADATA, "source", "file_path", "path", "url", "uri"),
            text_keys=("document",),
            notes="qdrant-client's FastEmbed helpers and mcp-server-qdrant",
        ),
        CollectionLayout(
            "qdrant-tutorial",
            image_vector="image",
            text_vector="text",
            image_keys=("image", "image_url"),
            file_keys=("url",),
            text_keys=("caption", "text"),
            notes="Qdrant's multimodal tutorial: both vectors on one point",
        ),
    )
}


def layout_named(layout: str | CollectionLayout) -> CollectionLayout:
    """The preset called ``layout`` (a layout is returned as is).

    Raises:
        ValueError: an unknown name, or ``"auto"`` (detection needs the collection: use
            :func:`qdrant_xai.storage.detect.resolve_layout`).
    """
    if isinstance(layout, CollectionLayout):
        return layout
    if layout == AUTO:
        raise ValueError(
            "layout 'auto' is detected from the collection; call "
            "qdrant_xai.storage.detect.resolve_layout(client, collection_name, 'auto')"
        )
    if layout not in LAYOUTS:
        raise ValueError(
            f"unknown layout {brief_repr(layout)}; choose one of {', '.join(LAYOUTS)} or "
            f"{AUTO!r}, or describe yours: CollectionLayout(name, image_vector=..., "
            "image_keys=(...), text_keys=(...))"
        )
    return LAYOUTS[layout]


def custom_layout(
    *,
    vector: str | None = None,
    image_keys: Sequence[str] = (),
    text_keys: Sequence[str] = (),
    base: str | CollectionLayout | None = None,
) -> CollectionLayout:
    """A layout from the three things a user can name (CLI ``--vector``, ``--image-key``,
    ``--text-key``; environment variables of the MCP server): the vector every point is
    searched with (``""``: the unnamed one; default: the collection's only vector, or the
    preset's), the payload paths of image sources and of texts. Given keys replace the
    ``base`` preset's (default: none of them).

    Raises:
        ValueError: nothing given, an empty key, or an unknown ``base``.
    """
    if vector is None and not image_keys and not text_keys:
        raise ValueError("a custom layout needs a vector name, an image key or a text key")
    keys = [*image_keys, *text_keys]
    if any(not isinstance(k, str) or not k.strip() or k.strip(".") != k for k in keys):
        raise ValueError(f"payload keys must be dotted paths such as metadata.source: {keys}")
    start = (
        CollectionLayout(
            "custom", image_vector=ANY_VECTOR, text_vector=ANY_VECTOR, image_keys=(), text_keys=()
        )
        if base is None or base == AUTO
        else layout_named(base)
    )
    custom = base in (None, AUTO)
    changes: dict[str, Any] = {"name": "custom" if custom else f"{start.name} (custom)"}
    if vector is not None:
        changes.update(image_vector=vector, text_vector=vector)
    if image_keys:
        changes.update(image_keys=tuple(image_keys), file_keys=())
    if text_keys:
        changes.update(text_keys=tuple(text_keys))
    return replace(start, **changes)
