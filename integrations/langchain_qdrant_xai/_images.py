"""Image queries given as strings, and images as data URIs for chat messages.

LangChain passes retriever and tool inputs as strings, so an image query is one of: a data
URI (``data:image/png;base64,...``), raw base64 of an encoded image, or a local path. Data
URIs and base64 are always accepted: they are decoded by the package's
:class:`~qdrant_xai.images.policy.ImageSourcePolicy` (the size is checked from the length before
anything is decoded, then the image limits apply); local paths are read only when the
caller allows them (see :func:`load_query_image`).
"""

from __future__ import annotations

import binascii
import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from qdrant_xai import (
    ImageLimits,
    ImageLoadError,
    LoadedImage,
    SourceNotAllowedError,
    load_image,
)
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.render import png_data_uri

__all__ = ["image_data_uri", "load_query_image"]

_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^;,]*)*),(?P<data>.*)$", re.S
)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}\s*$")
#: a raw base64 query shorter than this is taken for a path (a PNG is never this small)
_MIN_BASE64 = 64
#: the source of images decoded from a data URI or base64
QUERY_IMAGE = "<query image>"


def load_query_image(
    value: str,
    *,
    roots: Sequence[str | os.PathLike[str]] | None = None,
    limits: ImageLimits | None = None,
) -> LoadedImage:
    """Decodes an image query given as a data URI, raw base64 or a local path.

    Args:
        value: ``data:image/...;base64,...``, the base64 of an encoded image, or a path.
        roots: folders local paths may be read from; ``None`` reads any local path (the
            caller's own input), an empty sequence reads none (input from an LLM or a user).
        limits: decoding bounds.

    Raises:
        ImageLoadError: not decodable as an image, or too large.
        SourceNotAllowedError: a local path outside ``roots``.
    """
    text = value.strip()
    if text.startswith("data:"):
        _check_data_uri(text)
        return _decoded(text, limits)
    if len(text) >= _MIN_BASE64 and _BASE64.match(text) and not os.path.exists(text):
        try:
            return _decoded(text, limits)
        except _NotBase64:
            pass  # not base64 after all: a path
    if roots is None:
        return load_image(Path(text).expanduser(), limits=limits, name=text)
    if not roots:
        raise SourceNotAllowedError(
            f"{text[:80]}: image paths are not read here; pass the image as a data URI "
            "(data:image/png;base64,...) or raw base64, or allow its folder with "
            "query_image_roots=[...]"
        )
    return ImageSourcePolicy.from_roots(roots, limits=limits).open(text)


class _NotBase64(ImageLoadError):
    """A string that looked like base64 but does not decode as base64."""


def _decoded(text: str, limits: ImageLimits | None) -> LoadedImage:
    """The image in a data URI or raw base64, through the package's source policy.

    Raises:
        _NotBase64: ``text`` is not valid base64.
        ImageLoadError: too large (judged from the length, before decoding), or not an image.
    """
    try:
        loaded = ImageSourcePolicy(limits=limits).open(text, kind="base64")
    except ImageLoadError as exc:
        if isinstance(exc.__cause__, binascii.Error):
            raise _NotBase64(QUERY_IMAGE, exc.reason) from exc
        raise ImageLoadError(QUERY_IMAGE, exc.reason) from exc
    return dataclasses.replace(loaded, source=QUERY_IMAGE)


def _check_data_uri(uri: str) -> None:
    """Refuses data URIs that are not base64 images, with a message saying so."""
    match = _DATA_URI.match(uri)
    if match is None:
        raise ImageLoadError(
            "<query image>", "malformed data URI; expected data:image/...;base64,..."
        )
    mime = match["mime"] or ""
    if not mime.startswith("image/"):
        raise ImageLoadError("<query image>", f"data URI of type {mime or '?'!r} is not an image")
    if ";base64" not in match["params"]:
        raise ImageLoadError("<query image>", "only base64 data URIs are supported")


def image_data_uri(image: Image.Image, max_side: int | None = None) -> str:
    """``data:image/png;base64,...`` of ``image``, shrunk to ``max_side`` pixels if larger."""
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return png_data_uri(image)
