"""Rendering explanations for people: highlighted words, data URIs, HTML reports.

Reports are single self-contained HTML files (images inlined as PNG data URIs); each hit is
drawn with :meth:`~qdrant_xai.explain.results.Explanation.overlay` (the drawing itself is
:func:`qdrant_xai.images.overlay.overlay_heatmap`). Untrusted text is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from qdrant_xai.errors import ImageLoadError, brief_repr
from qdrant_xai.images.overlay import overlay_heatmap

if TYPE_CHECKING:
    from qdrant_xai.explain.results import Explanation, WordAttribution

__all__ = [
    "png_data_uri",
    "render_report",
    "render_section",
    "words_html",
    "write_report",
]


def png_data_uri(image: Image.Image, max_side: int | None = None) -> str:
    """``data:image/png;base64,...`` for embedding an image in HTML or chat messages.

    Args:
        image: the image; it is not changed.
        max_side: shrink the image (aspect kept, Lanczos) so that no side is longer.
    """
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def words_html(text: str, words: Sequence[WordAttribution]) -> str:
    """``text`` as HTML with each attributed word shaded by its score.

    Orange raises the similarity, blue lowers it; opacity is ``|score| / max |score|``.
    The raw score is in each span's ``title``.
    """
    scale = max((abs(w.score) for w in words), default=0.0) or 1.0
    parts, cursor = [], 0
    for word in sorted(words, key=lambda w: w.span[0]):
        start, end = word.span
        parts.append(html.escape(text[cursor:start]))
        strength = min(1.0, abs(word.score) / scale)
        rgb = "255,140,0" if word.score >= 0 else "60,120,255"
        parts.append(
            f'<span class="w" style="background:rgba({rgb},{strength:.2f})" '
            f'title="{word.score:+.4f}">{html.escape(text[start:end])}</span>'
        )
        cursor = end
    parts.append(html.escape(text[cursor:]))
    return "".join(parts)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}
h1{font-size:1.3rem} .meta{color:#666;font-size:.9rem}
.hit{display:flex;gap:1.2rem;align-items:flex-start;border-top:1px solid #ddd;padding:1rem 0}
.hit img{width:200px;height:auto;image-rendering:auto;border-radius:4px}
.rank{font-weight:600;font-size:1.1rem;min-width:2.5rem}
.text{font-size:1.05rem;line-height:1.8} .w{border-radius:3px;padding:0 2px}
.top{color:#555;font-size:.85rem} .query img{width:160px}
.strip{display:flex;gap:.5rem;flex-wrap:wrap;margin:.4rem 0}
.strip figure{margin:0;text-align:center;font-size:.8rem;color:#444}
.strip img{width:84px;height:auto}
.why{font-size:.9rem} .why b{color:#7a3e00}
"""


def render_section(query: str | Image.Image, explanations: Sequence[Explanation]) -> str:
    """HTML for one query: the query, then every hit in rank order with its score, heatmap
    overlay and highlighted words."""
    if isinstance(query, str):
        query_html = f"<p class='text'>Query: <b>{html.escape(query)}</b></p>"
    else:
        query_html = f"<div class='query'>Query image:<br><img src='{png_data_uri(query)}'></div>"
    blocks = [_hit_html(e, query) for e in explanations]
    return f"<section>{query_html}{''.join(blocks)}</section>"


def _hit_html(explanation: Explanation, query: str | Image.Image) -> str:
    image_html = ""
    original: Image.Image | None = None
    if explanation.error is not None:
        image_html = (
            f"<p class='meta'>not explained ({type(explanation.error).__name__}): "
            f"{html.escape(_reason(explanation.error))}</p>"
        )
    elif explanation.heatmap is not None:
        original = (
            query if explanation.heatmap_side == "query" and not isinstance(query, str) else None
        )
        try:
            if original is None:
                original = explanation.original_image()
            overlay = explanation.overlay(original)
            image_html = f"<img src='{png_data_uri(overlay)}' alt='heatmap'>"
            if explanation.heatmap_side == "hit" and original is not None:
                image_html = f"<img src='{png_data_uri(original)}' alt='hit'>" + image_html
        except Exception as exc:  # one unreadable image must not lose the rest of the report
            image_html = f"<p class='meta'>no overlay: {html.escape(_reason(exc))}</p>"
            original = None
    caption = ""
    if explanation.text is not None:
        whose = "query" if explanation.words_side == "query" else "hit text"
        top = ", ".join(f"{w.word} {w.score:+.3f}" for w in explanation.top_words(3))
        caption = (
            f"<div class='text'>{words_html(explanation.text or '', explanation.words)}</div>"
            f"<div class='top'>{whose}; top words: {html.escape(top)}</div>"
        )
        if note := explanation.left_out_note():
            caption += f"<div class='meta'>{html.escape(note)}</div>"
    name = os.path.basename(str(explanation.payload.get("source", "")))
    return (
        "<div class='hit'>"
        f"<div class='rank'>#{explanation.rank + 1}</div>{image_html}<div>"
        f"<div class='meta'>score {explanation.score:.4f} · id {html.escape(str(explanation.id))}"
        f" · {html.escape(name)}</div>{caption}"
        f"{_grounding_html(explanation, original)}{_rationales_html(explanation)}"
        f"<div class='meta'>heatmap: {explanation.heatmap_method or '-'} "
        f"({explanation.heatmap_side or '-'}) · words: {explanation.word_method or '-'}</div>"
        "</div></div>"
    )


#: the longest reason a report gives for a hit it cannot draw or explain
_MAX_REASON = 1000


def _reason(exc: BaseException) -> str:
    """Why a hit is not drawn or explained, in at most :data:`_MAX_REASON` characters: an
    image's source (a path, a URL, a whole inline image...) quoted briefly."""
    if isinstance(exc, ImageLoadError):
        text = f"{brief_repr(exc.source)}: {exc.reason}"
    else:
        text = str(exc)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def _grounding_html(explanation: Explanation, image: Image.Image | None) -> str:
    """A strip of small overlays, one per grounded word."""
    grounding = explanation.grounding
    if grounding is None or not grounding.words or image is None:
        return ""
    figures = [
        f"<figure><img src='{png_data_uri(overlay_heatmap(image, m, explanation.crop_box))}' "
        f"alt='{html.escape(w.text)}'><figcaption>{html.escape(w.text)}</figcaption></figure>"
        for w, m in zip(grounding.words, grounding.maps, strict=True)
    ]
    strip = "".join(figures)
    return f"<div class='top'>where each word is found:</div><div class='strip'>{strip}</div>"


def _rationales_html(explanation: Explanation) -> str:
    if explanation.rationales is None:
        return ""
    if not explanation.rationales:
        return "<div class='why'>no rationale found</div>"
    items = ", ".join(
        f"<b title='score {r.score:.4f}, concept alone {r.concept_score:.4f}, "
        f"gain {r.gain:+.4f}'>{html.escape(r.concept)}</b>"
        for r in explanation.rationales
    )
    return f"<div class='why'>matched because there is: {items}</div>"


def render_report(
    sections: Sequence[tuple[str | Image.Image, Sequence[Explanation]]],
    *,
    title: str = "qdrant-xai report",
    subtitle: str = "",
) -> str:
    """A self-contained HTML page with one section per ``(query, explanations)``."""
    body = "<hr>".join(render_section(q, e) for q, e in sections)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(subtitle)}</p>"
        f"{body}</body></html>"
    )


def write_report(
    path: str | os.PathLike[str],
    sections: Sequence[tuple[str | Image.Image, Sequence[Explanation]]],
    *,
    title: str = "qdrant-xai report",
    subtitle: str = "",
) -> Path:
    """Writes :func:`render_report` to ``path`` (folders created); returns the path.

    The file is written whole or not at all: to a temporary file beside it, renamed over
    ``path`` when complete, removed on failure, so a failed write leaves no partial report
    and a previous one intact. ``path`` naming a device or a pipe (``/dev/stdout``) is
    written to directly.

    Raises:
        DiskFullError: the disk filled up (nothing is left behind).
        OSError: another reason the file cannot be written (no permission, ...).
    """
    from qdrant_xai.files import write_text_whole

    text = render_report(sections, title=title, subtitle=subtitle)
    return write_text_whole(path, text, what=f"the report {path}")
