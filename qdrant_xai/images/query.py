"""Query images given as strings: a data URI, raw base64 or a local path.

Adapters take queries as strings (a LangChain retriever's input, an MCP tool's argument, a
command line), so one function decodes them all, the same way: data URIs and base64 through
the package's :class:`~qdrant_xai.images.policy.ImageSourcePolicy` (the size is judged from
the length before anything is decoded), local paths only where the caller allows them.

A query image is scaled down right after decoding (:func:`bounded_query_image`): the model
sees a few hundred pixels of it and overlays are shown at display size, while every later
step (the model's preprocessing, heatmap overlays) costs memory per pixel. An 8000x8000
query took an explanation with its overlay from 1.3 to 5.1 GB before this bound.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from qdrant_xai.errors import ImageLoadError, InlineImageError
from qdrant_xai.images.load import ImageLimits, LoadedImage, load_image
from qdrant_xai.images.policy import DataUri, ImageSourcePolicy

__all__ = [
    "QUERY_IMAGE",
    "QUERY_MAX_SIDE",
    "QUERY_MIN_SHORT_SIDE",
    "bounded_query_image",
    "load_query_image",
]

QUERY_IMAGE = "<query image>"
"""The ``source`` of a query image decoded from a data URI or base64, and its name in errors."""

#: the longest side a query image keeps after decoding (it is scaled down beyond)...
QUERY_MAX_SIDE = 1024
#: ...unless that would leave its short side below this (2x CLIP's usual 224 px input, so
#: the model's own resize still only scales down)
QUERY_MIN_SHORT_SIDE = 448

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
        The image, scaled down by :func:`bounded_query_image`; its ``source`` is
        :data:`QUERY_IMAGE` for data URIs and base64, the path as given for files.

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
        return bounded_query_image(load_image(Path(text).expanduser(), limits=limits, name=text))
    return bounded_query_image(ImageSourcePolicy.from_roots(roots, limits=limits).open(text))


def bounded_query_image(loaded: LoadedImage, *, max_side: int = QUERY_MAX_SIDE) -> LoadedImage:
    """``loaded`` scaled down (aspect ratio kept) so that its long side is at most
    ``max_side``, or its short side :data:`QUERY_MIN_SHORT_SIDE` for a very elongated image;
    unchanged when it is smaller already.

    CLIP resizes its input to a short side of 224 px (336 for the largest checkpoints) with
    an antialiasing filter, so a query scaled to at least twice that embeds almost as the
    original (cosine 0.9999+ in our tests); heatmaps and overlays then cover the scaled image.
    """
    width, height = loaded.width, loaded.height
    scale = max(max_side / max(width, height), QUERY_MIN_SHORT_SIDE / min(width, height))
    if scale >= 1.0:
        return loaded
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap: a cheap box reduction first, then bicubic on the small image
    image = loaded.image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return dataclasses.replace(loaded, image=image, width=size[0], height=size[1])


def _decoded(text: str, limits: ImageLimits | None) -> LoadedImage:
    """The image in a data URI or raw base64, through the package's source policy, named
    :data:`QUERY_IMAGE` (in errors too)."""
    try:
        loaded = ImageSourcePolicy(limits=limits).open(text, kind="base64")
    except InlineImageError as exc:
        raise InlineImageError(QUERY_IMAGE, exc.reason, exc.problem) from exc
    except ImageLoadError as exc:
        raise ImageLoadError(QUERY_IMAGE, exc.reason) from exc
    return bounded_query_image(dataclasses.replace(loaded, source=QUERY_IMAGE))
