"""Which tool wrote a collection, from its vector names and a sample of its payloads.

Each tool leaves its signature in the payloads it writes:

========================  =====================================  ==============================
writer                    payload                                vectors
========================  =====================================  ==============================
``llamaindex``            ``_node_content`` (JSON), ``_node_type`` ``text-dense`` or unnamed
``langchain``             ``page_content`` and ``metadata``      unnamed, or ``vector_name``
``fastembed``             ``document`` (and ``metadata``)        ``fast-<model>``
``qdrant-tutorial``       ``image`` / ``caption``                ``image`` and ``text``
``qdrant-xai``            ``xai_kind``, ``xai_fingerprint``       ``image`` and ``text``
========================  =====================================  ==============================

Points backfilled in place keep their writer's keys besides qdrant-xai's, so the foreign
signatures are looked for first. The sample votes; an empty collection is judged by its
vector names (``"unknown"`` when nothing fits: :func:`~qdrant_xai.storage.detect.resolve_layout`
then asks for a layout).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from qdrant_client import models

from qdrant_xai.errors import CollectionError, brief_repr
from qdrant_xai.storage.layouts import (
    ANY_VECTOR,
    LAYOUTS,
    NODE_CONTENT,
    NODE_TYPE,
    UNNAMED,
    CollectionLayout,
    vector_names,
)
from qdrant_xai.storage.schema import IMAGE_VECTOR, TEXT_VECTOR, PayloadKeys

__all__ = [
    "UNKNOWN",
    "WRITERS",
    "detected_layout",
    "named_writer",
    "unknown_layout_error",
    "writer_of",
]

UNKNOWN = "unknown"

#: every writer :func:`detected_layout` can name, with how people call it
WRITERS = {
    "qdrant-xai": "qdrant-xai",
    "langchain": "LangChain (langchain-qdrant QdrantVectorStore)",
    "llamaindex": "LlamaIndex (QdrantVectorStore)",
    "fastembed": "FastEmbed / mcp-server-qdrant",
    "qdrant-tutorial": "Qdrant's multimodal tutorial",
    UNKNOWN: "a tool qdrant-xai does not recognise",
}

_OWN_VECTORS = frozenset({IMAGE_VECTOR, TEXT_VECTOR})


def writer_of(payload: Mapping[str, Any], names: Sequence[str]) -> str | None:
    """The writer whose signature a point's payload carries (None: no known one), given the
    collection's vector names."""
    if NODE_CONTENT in payload or NODE_TYPE in payload:
        return "llamaindex"
    if "page_content" in payload and "metadata" in payload:
        return "langchain"
    if "document" in payload:
        return "fastembed"
    own_vectors = set(names) >= _OWN_VECTORS
    if own_vectors and ("caption" in payload or "image" in payload):
        return "qdrant-tutorial"
    if own_vectors and (PayloadKeys.KIND in payload or PayloadKeys.FINGERPRINT in payload):
        return "qdrant-xai"
    return None


def named_writer(payloads: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str | None:
    """The writer most of ``payloads`` carry the signature of (None: none does)."""
    votes = Counter(w for w in (writer_of(p, names) for p in payloads) if w is not None)
    return votes.most_common(1)[0][0] if votes else None


def detected_layout(
    info: models.CollectionInfo, payloads: Sequence[Mapping[str, Any]], collection_name: str
) -> CollectionLayout:
    """The layout of the writer most sampled points name (by their vector names when there
    are no points), its vectors resolved when they can be; an ``"unknown"`` layout, whose
    ``notes`` say what was seen, when no writer fits.

    A detected layout whose vector is ambiguous (several vectors, no name the writer uses)
    keeps ``"*"``: resolving it raises :class:`CollectionError` asking for the vector.
    """
    names = vector_names(info)
    named = named_writer(payloads, names)
    if named is not None:
        writer = named
    elif payloads:
        writer = UNKNOWN
    else:
        writer = _guess_from_vectors(names)
    if writer == UNKNOWN:
        return CollectionLayout(
            UNKNOWN,
            image_vector=names[0] if len(names) == 1 else ANY_VECTOR,
            text_vector=names[0] if len(names) == 1 else ANY_VECTOR,
            image_keys=(),
            text_keys=(),
            notes=_seen(names, payloads),
        )
    layout = LAYOUTS[writer]
    vector = _vector_for(writer, names)
    if vector is not None:
        layout = replace(layout, image_vector=vector, text_vector=vector)
    if ANY_VECTOR in (layout.image_vector, layout.text_vector) and len(names) != 1:
        return layout  # resolve() will ask which vector
    try:
        return layout.resolved_with(info, collection_name)
    except CollectionError:
        return layout  # vectors the writer would not have made: resolve() says so


def unknown_layout_error(collection_name: str, layout: CollectionLayout) -> CollectionError:
    """What :func:`~qdrant_xai.storage.detect.resolve_layout` raises for a collection whose
    writer was not recognised."""
    presets = ", ".join(LAYOUTS)
    return CollectionError(
        f"cannot tell which tool wrote collection {collection_name!r} ({layout.notes}); pass "
        f"its layout: a preset ({presets}) with layout= or --layout, or describe it: "
        "CollectionLayout(name, image_vector=NAME, text_vector=NAME, image_keys=(KEY,), "
        "text_keys=(KEY,)) in Python, --vector NAME --image-key KEY --text-key KEY on the "
        "command line"
    )


def _guess_from_vectors(names: Sequence[str]) -> str:
    """The writer of an empty collection, from its vector names alone."""
    if set(names) >= _OWN_VECTORS:
        return "qdrant-xai"
    if any(n.startswith("fast-") for n in names):
        return "fastembed"
    if "text-dense" in names:
        return "llamaindex"
    if names == [UNNAMED]:
        return "langchain"  # its default; LlamaIndex's unnamed layout reads the same vector
    return "qdrant-xai"


def _vector_for(writer: str, names: Sequence[str]) -> str | None:
    """The vector ``writer`` searches in a collection with ``names`` (None: the preset's)."""
    if writer in ("qdrant-xai", "qdrant-tutorial"):
        return None
    preferred = {
        "langchain": [UNNAMED],
        "llamaindex": ["text-dense", UNNAMED],
        "fastembed": [n for n in names if n.startswith("fast-")][:1],
    }[writer]
    for name in preferred:
        if name in names:
            return name
    return names[0] if len(names) == 1 else ANY_VECTOR


def _seen(names: Sequence[str], payloads: Sequence[Mapping[str, Any]]) -> str:
    keys = Counter(k for p in payloads for k in p)
    shown_keys = [brief_repr(k) for k, _ in keys.most_common(8)]
    vectors = [n or "(unnamed)" for n in names]
    return (
        f"vectors {brief_repr(vectors)}; payload keys {', '.join(shown_keys) or 'none'} in "
        f"{len(payloads)} sampled points"
    )
