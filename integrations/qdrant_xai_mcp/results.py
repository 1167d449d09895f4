"""What the MCP tools return: the pydantic result models and the text of ``explain_hit``.

:class:`SearchResult` (with its :class:`Hit`, :class:`Region` and :class:`WordScore`) is
the structured output of ``search_images`` and ``search_texts``; :func:`hit_of` and
:func:`unexplained_hit` build a hit from an :class:`~qdrant_xai.explain.Explanation`, or
from a point that could not be explained (its ``status`` is ``"failed"`` and ``error`` says
why); :func:`explanation_text` is the text block of ``explain_hit``; :func:`with_mcp_hint`
words an error for this server. Every payload value and error message is shortened on the
way out: an inline base64 image in a payload (or quoted by an error) would flood the
model's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from qdrant_client import models

from qdrant_xai.errors import (
    FeaturesMissingError,
    PointNotFoundError,
    QdrantXaiError,
    SourceNotAllowedError,
    brief_repr,
)
from qdrant_xai.explain import Explanation
from qdrant_xai.images.load import LoadedImage
from qdrant_xai.storage.layouts import CollectionLayout, looks_like_base64_image
from qdrant_xai.storage.schema import PayloadKeys

__all__ = [
    "Hit",
    "HitError",
    "Region",
    "SearchResult",
    "WordScore",
    "explanation_text",
    "hit_of",
    "short_text",
    "unexplained_hit",
    "user_payload",
    "with_mcp_hint",
]

#: longest error message a tool returns (messages quote payload values briefly already)
MAX_ERROR_CHARS = 1000


class WordScore(BaseModel):
    """How much one word moved the similarity (positive: it raised the match)."""

    word: str
    score: float


class Region(BaseModel):
    """The heatmap's hottest patch: grid cell and a plain-words position."""

    row: int
    col: int
    rows: int
    cols: int
    where: str = Field(description="position in the image, e.g. 'top-left', 'center'")


class HitError(BaseModel):
    """Why a hit could not be explained."""

    type: str = Field(description="the error's class, e.g. 'FeaturesMissingError'")
    message: str = Field(description="what went wrong and what to do")


class Hit(BaseModel):
    """One hit, with why it matched (or why that could not be explained)."""

    rank: int = Field(description="1 = best match")
    id: str | int = Field(description="point id; pass it to explain_hit")
    score: float = Field(description="cosine similarity of query and hit (higher = closer)")
    kind: Literal["image", "text"] = Field(description="what the point is")
    source: str | None = Field(description="the image's path or URL (image points)")
    text: str | None = Field(description="the text (caption or document) of text points")
    image_id: str | None = Field(description="id of the image a caption belongs to, if any")
    payload: dict[str, Any] = Field(description="the point's own payload fields")
    status: Literal["ok", "failed"] = Field(
        description="'ok': explained; 'failed': found but not explained, see error"
    )
    error: HitError | None = Field(description="why the hit could not be explained")
    why: str = Field(description="one-line explanation of the match (or why there is none)")
    top_words: list[WordScore] = Field(
        description="words that raised the match most: the query's for a text query, the "
        "hit's text for an image query"
    )
    peak: Region | None = Field(description="image region that matched best (see peak_on)")
    peak_on: Literal["hit image", "query image"] | None = Field(
        description="whose image `peak` is in"
    )


class SearchResult(BaseModel):
    """Hits of a query, best first."""

    query: str = Field(description="the text query, or a label of the query image")
    collection: str
    hits: list[Hit]
    failed: int = Field(description="how many hits could not be explained (status 'failed')")


# -- hits -------------------------------------------------------------------------------------


def hit_of(e: Explanation) -> Hit:
    """The hit an explanation explains, with its top words, peak region and ``why``; for a
    hit that could not be explained, ``status`` ``"failed"`` and the reason."""
    if e.error is not None:
        reason = with_mcp_hint(e.error)
        return Hit(
            **_shown(e.hit, e.rank, e.hit_kind, e.image_source, e.text, e.payload),
            **_failure(type(e.error).__name__, reason),
        )
    top = [w for w in e.top_words(3) if w.score > 0]
    peak = region_of(e)
    peak_on: Literal["hit image", "query image"] | None = None
    if peak is not None:
        peak_on = "hit image" if e.heatmap_side == "hit" else "query image"
    words_of = "query" if e.words_side == "query" else "text"
    return Hit(
        **_shown(e.hit, e.rank, e.hit_kind, e.image_source, e.text, e.payload),
        status="ok",
        error=None,
        why=_why(top, peak, peak_on, words_of=words_of if e.words else None)
        + (
            f" ({e.words_left_out:,} {words_of} words past the model's context not attributed)"
            if e.words_left_out
            else ""
        ),
        top_words=[WordScore(word=w.word, score=round(w.score, 4)) for w in top],
        peak=peak,
        peak_on=peak_on,
    )


def unexplained_hit(
    point: models.ScoredPoint,
    rank: int,
    hit_kind: Literal["image", "text"],
    layout: CollectionLayout,
    reason: str,
    *,
    error_type: str = "QdrantXaiError",
) -> Hit:
    """A hit that could not be explained (``rank`` 0-based; ``hit_kind`` the searched kind,
    for points that hold both an image and a text), with ``reason`` as its error."""
    payload = point.payload or {}
    kind = layout.kind_of(payload, default=hit_kind)
    return Hit(
        **_shown(point, rank, kind, layout.image_source(payload), layout.text(payload), payload),
        **_failure(error_type, reason),
    )


def _failure(error_type: str, reason: str) -> dict[str, Any]:
    message = short_text(reason, MAX_ERROR_CHARS)
    return {
        "status": "failed",
        "error": HitError(type=error_type, message=message),
        "why": f"not explained: {message}",
        "top_words": [],
        "peak": None,
        "peak_on": None,
    }


def _shown(
    point: models.ScoredPoint,
    rank: int,
    kind: Literal["image", "text"],
    source: str | None,
    text: str | None,
    payload: dict[str, Any],
) -> dict[str, Any]:
    """The fields every hit has, shortened for the model's context."""
    image_id = payload.get(PayloadKeys.IMAGE_ID)
    return {
        "rank": rank + 1,
        "id": point.id if isinstance(point.id, int) else str(point.id),
        "score": round(point.score, 4),
        "kind": kind,
        "source": short_text(source) if kind == "image" and source else None,
        "text": short_text(text, 2000) if kind == "text" and text else None,
        "image_id": short_text(image_id, 100) if isinstance(image_id, str) else None,
        "payload": user_payload(payload),
    }


def _why(
    words: Sequence[Any], peak: Region | None, peak_on: str | None, *, words_of: str | None
) -> str:
    parts = []
    if words:
        listed = ", ".join(f"'{w.word}' ({w.score:+.3f})" for w in words)
        parts.append(f"{words_of} words that raised the match: {listed}")
    elif words_of:
        parts.append(f"no single {words_of} word raised the match much")
    if peak is not None:
        parts.append(f"strongest region of the {peak_on}: {peak.where}")
    return "; ".join(parts) or "no explanation available for this pair"


def region_of(e: Explanation) -> Region | None:
    """The heatmap's hottest cell, or None without a heatmap."""
    position, where = e.peak(), e.peak_region()
    if position is None or where is None or e.heatmap is None:
        return None
    rows, cols = e.heatmap.shape
    return Region(row=position[0], col=position[1], rows=rows, cols=cols, where=where)


# -- payloads ---------------------------------------------------------------------------------

_INTERNAL_KEYS = {PayloadKeys.CROP_BOX, PayloadKeys.CAPTION_IDS, PayloadKeys.WORDS}


def user_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without qdrant-xai's bookkeeping (features, fingerprints, spans), with
    long keys, strings, lists and numbers shortened (inline base64 images would flood the
    model's context)."""
    kept = [
        (k, v) for k, v in payload.items() if not k.startswith("xai_") and k not in _INTERNAL_KEYS
    ]
    shown = {short_text(str(k), 100): _compact(v) for k, v in kept[:_MAX_KEYS]}
    if len(kept) > _MAX_KEYS:
        shown["..."] = f"{len(kept) - _MAX_KEYS} more keys"
    return shown


_MAX_KEYS, _MAX_ITEMS, _MAX_DEPTH = 50, 20, 4


def _compact(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return short_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**64:
        return brief_repr(value)  # JSON and the model have no use for 10,000 digits
    if depth >= _MAX_DEPTH:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())
        shown = {short_text(str(k), 100): _compact(v, depth + 1) for k, v in items[:_MAX_KEYS]}
        if len(items) > _MAX_KEYS:
            shown["..."] = f"{len(items) - _MAX_KEYS} more keys"
        return shown
    if isinstance(value, list):
        listed = [_compact(v, depth + 1) for v in value[:_MAX_ITEMS]]
        extra = len(value) - _MAX_ITEMS
        return [*listed, f"... {extra} more"] if extra > 0 else listed
    return value


def short_text(text: str, limit: int = 500) -> str:
    """``text`` itself when short, else a prefix and its length (an inline image: only its
    length). Every untrusted string a tool returns passes through here."""
    if len(text) <= limit:
        return text
    if text.startswith("data:") or looks_like_base64_image(text):
        return f"<inline image, {len(text)} chars>"
    return f"{text[:limit]}... ({len(text)} chars)"


# -- the text of explain_hit --------------------------------------------------------------------


def explanation_text(
    e: Explanation, query: str | LoadedImage, collection_name: str, note: str
) -> str:
    """What ``explain_hit`` says about one explanation: the score, the heatmap's peak and
    share of supporting mass, ``note`` (about the PNG), and every word attribution."""
    asked = (
        f"the text query {short_text(query, 200)!r}"
        if isinstance(query, str)
        else f"the query image {short_text(query.source, 200)}"
    )
    shown = e.image_source if e.hit_kind == "image" else e.text
    hit = short_text(shown or "", 200)
    lines = [
        f"Point {e.id} ({e.hit_kind} hit{f': {hit}' if hit else ''}) in collection "
        f"{collection_name!r} for {asked}: cosine score {e.score:.4f}."
    ]
    region = region_of(e)
    if e.heatmap is not None and region is not None:
        whose = "the hit's image" if e.heatmap_side == "hit" else "the query image"
        lines.append(
            f"Heatmap ({e.heatmap_method}) over {whose}: strongest at the {region.where} "
            f"(row {region.row}, col {region.col} of a {region.rows}x{region.cols} grid). "
            "The attached PNG draws it over the image: bright = raised the match."
        )
        heat = np.asarray(e.heatmap, dtype=np.float64)
        positive = float(np.clip(heat, 0, None).sum())
        total = float(np.abs(heat).sum()) or 1.0
        lines.append(f"Share of the heatmap's mass supporting the match: {positive / total:.0%}.")
    if note:
        lines.append(note)
    if e.words:
        whose_words = "query" if e.words_side == "query" else "hit's text"
        lines.append(
            f"Word attributions of the {whose_words} ({e.word_method}; positive = raised the "
            "similarity, negative = lowered it):"
        )
        lines += [f"  {w.word}: {w.score:+.4f}" for w in e.words]
    left_out = e.left_out_note()
    if left_out:
        lines.append(left_out)
    return "\n".join(lines)


def with_mcp_hint(exc: QdrantXaiError) -> str:
    """The error's message, pointing at this server's tools and settings where it names
    the library's, and cut to :data:`MAX_ERROR_CHARS`."""
    message = str(exc)
    if isinstance(exc, (SourceNotAllowedError, FeaturesMissingError)) and (
        "QDRANT_XAI_IMAGE_ROOTS" not in message
    ):
        message += " (on this MCP server, allow image folders with QDRANT_XAI_IMAGE_ROOTS)"
    elif isinstance(exc, PointNotFoundError):
        message += " (search_images or search_texts return them)"
    return short_text(message, MAX_ERROR_CHARS)
