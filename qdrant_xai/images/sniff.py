"""Whether a payload string is an image, judged from the string (and a file's first bytes).

Payload keys such as LangChain's ``metadata.source`` or LlamaIndex's ``file_path`` name the
document a point was made from, which is an image only sometimes: a CSV loader sets
``source="captions.csv"``, ``SimpleDirectoryReader`` sets ``file_path=".../notes.txt"``.
:func:`classify_source` tells them apart without reading anything:

* ``data:image/...`` URIs, and raw base64 whose first decoded bytes are an image signature
  (PNG, JPEG, GIF, WebP, BMP, TIFF, PPM), are images;
* paths and URLs are images when their extension is one (``.png``, ``.jpg``, ...);
* a local path without an extension is ``"unknown"``: only its first bytes can tell
  (:meth:`~qdrant_xai.images.policy.ImageSourcePolicy.looks_like_image_file` reads them,
  beneath the allowed roots);
* anything else is not an image.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import urllib.parse
from typing import Literal, NamedTuple

from qdrant_xai.errors import InlineImageError
from qdrant_xai.images.labels import shown
from qdrant_xai.images.load import IMAGE_SUFFIXES

__all__ = [
    "DataUri",
    "SourceVerdict",
    "classify_source",
    "decode_base64",
    "image_signature",
    "looks_like_base64_image",
]

SourceVerdict = Literal["image", "not_image", "unknown"]
"""What :func:`classify_source` says of a string (``"unknown"``: a local path whose bytes
would tell)."""

# A scheme needs two characters or more, so a Windows drive ("C:\\x.png") stays a path.
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")
_WHITESPACE = re.compile(r"[ \t\r\n]")
_BASE64_HEAD = re.compile(r"^[A-Za-z0-9+/\-_]+$")
#: the shortest raw base64 taken for an image (no image file is smaller than 48 bytes)
MIN_BASE64 = 64
#: extensions Pillow reads besides the ones the indexer lists
_MORE_SUFFIXES = frozenset({".jfif", ".jpe", ".pbm", ".pnm", ".ico", ".tga"})
_BMP_HEADERS = frozenset({12, 40, 52, 56, 64, 108, 124})


class DataUri(NamedTuple):
    """The parts of a ``data:`` URI, as the policy reads them (RFC 2397, case-insensitive)."""

    media: str  # the lower-case media type; "text/plain" when the URI names none
    is_base64: bool  # ";base64" is among its parameters
    payload: str | None  # the text after the first comma; None without a comma
    label: str  # how messages name it: the media type and the length, never the payload

    @classmethod
    def parse(cls, source: str) -> DataUri:
        """``source``, which starts with ``data:`` (any case), split into its parts."""
        header, comma, payload = source.partition(",")
        params = [p.strip().lower() for p in header[5:].split(";")]
        media = params[0] or "text/plain"
        label = f"data:{shown(media, 40)} URI ({len(source)} chars)"
        return cls(media, "base64" in params[1:], payload if comma else None, label)

    @property
    def is_image(self) -> bool:
        """An ``image/*`` media type and a payload."""
        return self.payload is not None and self.media.startswith("image/")


def image_signature(head: bytes) -> str | None:
    """The image format whose signature ``head`` (a file's first 32 bytes or more) starts
    with (``"png"``, ``"jpeg"``, ``"gif"``, ``"webp"``, ``"bmp"``, ``"tiff"``, ``"ppm"``),
    or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADERS:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:1] == b"P" and head[1:2] in (b"4", b"5", b"6") and head[2:3].isspace():
        return "ppm"
    return None


def looks_like_base64_image(text: str) -> bool:
    """Whether ``text`` is an inline image: a base64 ``data:image/...`` URI, or raw base64
    (standard or URL-safe alphabet, wrapped lines allowed) whose first decoded bytes are an
    image signature. Only the first few hundred characters are looked at."""
    start = text[:16].lstrip()
    if start[:5].lower() == "data:":
        uri = DataUri.parse(text.strip()[:512] + ",")  # the header is enough
        return uri.media.startswith("image/") and uri.is_base64
    if len(text) < MIN_BASE64:
        return False
    head = _WHITESPACE.sub("", text[:512])[:64]
    if len(head) < 48 or not _BASE64_HEAD.match(head):
        return False
    head = head[: len(head) // 4 * 4]
    urlsafe = "-" in head or "_" in head
    try:
        data = base64.b64decode(head, altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError):
        return False
    return image_signature(data) is not None


def classify_source(value: str) -> SourceVerdict:
    """Whether a payload string names an image, from the string alone (see the module)."""
    text = value.strip()
    if not text or "\x00" in text:
        return "not_image"
    if looks_like_base64_image(text):
        return "image"
    scheme = SCHEME.match(text)
    if scheme is not None:
        if scheme.group(1).lower() == "data":
            return "not_image"
        try:
            path = urllib.parse.urlsplit(text).path
        except ValueError:
            return "not_image"
        return "image" if _suffix(path) in IMAGE_SUFFIXES | _MORE_SUFFIXES else "not_image"
    suffix = _suffix(text)
    if suffix in IMAGE_SUFFIXES | _MORE_SUFFIXES:
        return "image"
    return "unknown" if not suffix else "not_image"


def _suffix(path: str) -> str:
    """The lower-case extension of ``path``; ``""`` when there is none, or when what follows
    the last dot is not a word of letters (``IMG_2024.09``, ``v1.2``)."""
    name = re.split(r"[/\\]", path)[-1]
    suffix = os.path.splitext(name)[1].lower()
    return suffix if len(suffix) > 1 and suffix[1:].isalpha() and len(suffix) <= 6 else ""


def decode_base64(text: str, *, label: str, limit: int) -> bytes:
    """The bytes of raw base64 (standard or URL-safe, wrapped lines and missing padding
    allowed), refused from its length alone when it would decode to more than ``limit``
    bytes.

    Raises:
        InlineImageError: ``"too_large"`` (before any decoding), ``"not_base64"`` or
            ``"empty"``; messages name ``label``, never the payload.
    """
    # An upper bound of the decoded size, from the length alone, before any work.
    estimate = len(text.rstrip().rstrip("=")) * 3 // 4
    if estimate > limit:
        raise InlineImageError(
            label,
            f"decodes to about {estimate} bytes, over the {limit}-byte limit; downscale the "
            "image or raise max_bytes / ImageLimits.max_bytes",
            "too_large",
        )
    compact = _WHITESPACE.sub("", text)
    urlsafe = "-" in compact or "_" in compact
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InlineImageError(label, f"invalid base64 ({exc})", "not_base64") from exc
    if not data:
        raise InlineImageError(label, "empty image data", "empty")
    return data
