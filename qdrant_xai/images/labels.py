"""How untrusted image sources are named in messages.

A source string comes from a payload or a user, so a message quotes it with control
characters escaped and long strings shortened, and a URL without its credentials, query or
fragment (signed URLs carry secrets there). A ``data:`` URI is named by its length only.
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["CONTROL", "redacted", "shown"]

CONTROL = re.compile(r"[\x00-\x1f\x7f]")
"""Control characters, which a source may not carry into a message (or a URL)."""

_MESSAGE_SOURCE_CHARS = 200


def shown(text: str, limit: int = _MESSAGE_SOURCE_CHARS) -> str:
    """``text`` for a message: control characters escaped, long strings shortened."""
    text = CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 20] + f"...({len(text)} chars)"


def redacted(url: str) -> str:
    """``url`` without userinfo, query or fragment, for messages and labels."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.scheme.lower() == "data":
        return f"data: URI ({len(url)} chars)"
    netloc = parts.netloc.rpartition("@")[2]
    shown_url = (
        f"{parts.scheme}://{netloc}{parts.path}"
        if netloc or parts.path.startswith("/")
        else (f"{parts.scheme}:{parts.path}")
    )
    if parts.query:
        shown_url += "?..."
    return shown(shown_url)
