"""Query images given as strings: a data URI, raw base64 or a local path.

Adapters take queries as strings (a LangChain retriever's input, an MCP tool's argument, a
command line), so one function decodes them all, the same way: data URIs and base64 through
the package's :class:`~qdrant_xai.images.policy.ImageSourcePolicy` (the size is judged from
the length before anything is decoded), local paths only where the caller allows them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

from qdrant_xai.errors import ImageLoadError, InlineImageError
from qdrant_xai.images.load import ImageLimits, LoadedImage, load_image
from qdrant_xai.images.policy import DataUri, ImageSourcePolicy

__all__ = ["QUERY_IMAGE", "load_query_image"]

QUERY_IMAGE = "<query image>"
"""The ``source`` of a query image decoded from a data URI or base64, and its name in errors."""

_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}\s*$")
#: where paths may be read, a raw base64 query shorter than this is taken for a path (a PNG is
#: never this small)
_MIN_BASE64 = 64


def load_query_image(
    value: str,
    *,
    roots: Sequence[str | os.PathLike[str]] | None = None,
    limits: ImageLimits | None = None,
) -> LoadedImage:
    """Decodes an image query given as a data URI, raw base64 or a local path.

    Use::

        load_query_image("data:image/png;base64,iVBORw0...")      # from a chat message
        load_query_image(b64_text, roots=[])                      # base64 only, no files
        load_query_image("cat.png")                                # the caller's own file
        load_query_image("photos/cat.png", roots=["photos/"])     # files beneath roots only

    Args:
        value: ``data:image/...;base64,...``, the base64 of an encoded image, or a path.
        roots: folders local paths may be read from; ``None`` reads any local path (the
            caller's own input); an empty sequence reads none (input from an LLM or a user):
            then anything that is not a data URI is decoded as base64.
        limits: decoding bounds (``limits.max_bytes`` also caps the decoded base64).

    Returns:
        The image; its ``source`` is :data:`QUERY_IMAGE` for data URIs and base64, the path
        as given for files.

    Raises:
        InlineImageError: a data URI or base64 that cannot be decoded; its ``problem`` says
            why: ``"data_uri"`` (malformed, or not a base64 data URI), ``"media_type"`` (not
            ``image/*``), ``"not_base64"``, ``"too_large"`` (judged before decoding) or
            ``"empty"``.
        ImageLoadError: decoded bytes that are not a usable image, or an unreadable file.
        SourceNotAllowedError: a local path outside ``roots``.
    """
    text = value.strip()
    if text[:5].lower() == "data:":
        uri = DataUri.parse(text)
        if uri.payload is None:
            raise InlineImageError(
                QUERY_IMAGE, "malformed data URI; expected data:image/...;base64,...", "data_uri"
            )
        if not uri.is_image:
            raise InlineImageError(
                QUERY_IMAGE, f"data URI of type {uri.media!r} is not an image", "media_type"
            )
        if not uri.is_base64:
            raise InlineImageError(QUERY_IMAGE, "only base64 data URIs are supported", "data_uri")
        return _decoded(text, limits)
    if roots is not None and not roots:
        try:
            return _decoded(text, limits)
        except InlineImageError as exc:
            if exc.problem != "not_base64":
                raise
            raise InlineImageError(
                QUERY_IMAGE,
                f"{exc.reason}; image paths are not read here: pass the image as a data URI "
                "(data:image/png;base64,...) or raw base64",
                "not_base64",
            ) from exc
    if len(text) >= _MIN_BASE64 and _BASE64.match(text) and not os.path.exists(text):
        try:
            return _decoded(text, limits)
        except InlineImageError as exc:
            if exc.problem != "not_base64":
                raise
            # not base64 after all: a path
    if roots is None:
        return load_image(Path(text).expanduser(), limits=limits, name=text)
    return ImageSourcePolicy.from_roots(roots, limits=limits).open(text)


def _decoded(text: str, limits: ImageLimits | None) -> LoadedImage:
    """The image in a data URI or raw base64, through the package's source policy, named
    :data:`QUERY_IMAGE` (in errors too)."""
    try:
        loaded = ImageSourcePolicy(limits=limits).open(text, kind="base64")
    except InlineImageError as exc:
        raise InlineImageError(QUERY_IMAGE, exc.reason, exc.problem) from exc
    except ImageLoadError as exc:
        raise ImageLoadError(QUERY_IMAGE, exc.reason) from exc
    return dataclasses.replace(loaded, source=QUERY_IMAGE)
