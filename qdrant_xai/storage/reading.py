"""Reading payload values another tool wrote: dotted paths into nested payloads (through
JSON-encoded strings such as LlamaIndex's ``_node_content``), and whether a value is an
image rather than a text."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from qdrant_xai.images.sniff import classify_source, looks_like_base64_image

if TYPE_CHECKING:
    from qdrant_xai.images.policy import ImageSourcePolicy

__all__ = ["PayloadReader", "is_image", "names_image", "payload_value"]


def payload_value(payload: Mapping[str, Any], path: str) -> Any:
    """``payload`` at a dotted ``path`` (JSON-encoded objects along the way decoded), or None."""
    return PayloadReader(payload).get(path)


def names_image(value: str, named: Callable[[], str | None] | None) -> bool:
    """Whether a text is an image rather than a text: base64 or a data URI of one, or an
    image's path, URL or file name, one line without spaces, or (``named``: the image source
    the point's image keys hold) the name of that file."""
    text = value.strip()
    if looks_like_base64_image(text):
        return True
    if "\n" in text or len(text) > 4096 or classify_source(text) != "image":
        return False
    if not any(c.isspace() for c in text):
        return True
    source = named() if named is not None else None
    return source is not None and (source == text or source.replace("\\", "/").endswith("/" + text))


def is_image(value: str, sources: ImageSourcePolicy | None) -> bool:
    """Whether a file key's value is an image: judged by ``sources`` (which may look at an
    extensionless file's first bytes), else from the string alone."""
    if sources is not None:
        return sources.is_image_source(value)
    return classify_source(value) == "image"


class PayloadReader:
    """A payload read at dotted paths; each JSON-encoded string along the way is decoded
    once per reader (LlamaIndex's ``_node_content`` is read for several keys)."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.payload = payload
        self._decoded: dict[int, Any] = {}

    def decoded(self, value: Any) -> Any:
        """``value``, or what it decodes to when it is a JSON-encoded object."""
        if not isinstance(value, str) or not value.lstrip().startswith("{"):
            return value
        key = id(value)
        if key not in self._decoded:
            try:
                self._decoded[key] = json.loads(value)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than Python goes
                self._decoded[key] = None
        return self._decoded[key]

    def get(self, path: str) -> Any:
        """The value at a dotted ``path``, or None."""
        value: Any = self.payload
        for part in path.split("."):
            value = self.decoded(value)
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        return value
