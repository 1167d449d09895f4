"""LlamaIndex nodes as its ``QdrantVectorStore`` stores them, read without LlamaIndex.

A node's payload carries the node itself, JSON-encoded, under ``_node_content`` (its text,
metadata, templates and, for an ``ImageNode``, the image fields) and its class under
``_node_type``. What LlamaIndex *embedded* for a text node is not the bare text but
``node.get_content(metadata_mode=MetadataMode.EMBED)``: the metadata lines (each key not in
``excluded_embed_metadata_keys``, formatted with ``metadata_template`` and joined with
``metadata_separator``), then the text, through ``text_template``. :func:`embedded_text`
rebuilds that string from the stored fields, so re-encoding a hit reproduces its vector.

The templates are untrusted payload values, so they are filled by a formatter that allows
plain fields only (no attribute or index access, no huge widths); a template it refuses,
or one LlamaIndex itself could not have filled, gives the bare text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

__all__ = ["IMAGE_NODE_TYPES", "TEXT_NODE_TYPES", "embedded_text", "is_node", "node_text"]

#: ``_node_type`` values of nodes whose vector is an image's
IMAGE_NODE_TYPES = frozenset({"ImageNode", "ImageDocument"})
#: ``_node_type`` values of nodes whose vector is a text's
TEXT_NODE_TYPES = frozenset({"TextNode", "Document", "IndexNode"})

# LlamaIndex's defaults (llama_index.core.schema), for nodes that do not store them
_METADATA_TEMPLATE = "{key}: {value}"
_METADATA_SEPARATOR = "\n"
_TEXT_TEMPLATE = "{metadata_str}\n\n{content}"
_MAX_WIDTH = 10_000
_NUMBERS = re.compile(r"\d+")


def is_node(value: object) -> bool:
    """Whether a decoded ``_node_content`` looks like a node: a mapping with a text."""
    return isinstance(value, Mapping) and isinstance(value.get("text"), str)


def node_text(node: Mapping[str, Any]) -> str:
    """The node's bare text (``node.text``; ``get_content()`` without metadata)."""
    text = node.get("text")
    return text if isinstance(text, str) else ""


def embedded_text(node: Mapping[str, Any]) -> str:
    """``get_content(metadata_mode=MetadataMode.EMBED)`` of the node, from its stored fields
    (``metadata_separator`` is also read under its old spelling ``metadata_seperator``)."""
    text = node_text(node)
    metadata = node.get("metadata")
    if not isinstance(metadata, Mapping) or not metadata:
        return text
    excluded = node.get("excluded_embed_metadata_keys")
    skip = {k for k in excluded if isinstance(k, str)} if isinstance(excluded, list) else set()
    template = _string(node.get("metadata_template"), _METADATA_TEMPLATE)
    separator = _string(
        node.get("metadata_separator", node.get("metadata_seperator")), _METADATA_SEPARATOR
    )
    try:
        metadata_str = separator.join(
            _fill(template, key=str(key), value=str(value))
            for key, value in metadata.items()
            if key not in skip
        ).strip()
        if not metadata_str:
            return text
        return _fill(
            _string(node.get("text_template"), _TEXT_TEMPLATE),
            content=text,
            metadata_str=metadata_str,
        ).strip()
    except (ValueError, KeyError, IndexError, TypeError):
        return text


def _string(value: object, default: str) -> str:
    return value if isinstance(value, str) else default


class _PlainFields(string.Formatter):
    """``str.format`` for untrusted templates: named fields only, no ``{a.b}`` or ``{a[0]}``
    (they reach into objects), no widths or precisions over ``_MAX_WIDTH``."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if not field_name.isidentifier():
            raise ValueError(f"template field {field_name[:40]!r} is not a plain name")
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        if any(int(n) > _MAX_WIDTH for n in _NUMBERS.findall(format_spec)):
            raise ValueError("template width too large")
        return super().format_field(value, format_spec)


_FORMATTER = _PlainFields()


def _fill(template: str, **fields: str) -> str:
    return _FORMATTER.vformat(template, (), fields)
