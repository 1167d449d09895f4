"""Rendering explanations: heatmap overlays, highlighted words, HTML reports.

Overlays use a perceptually uniform colormap (matplotlib's ``inferno``), upsampled
smoothly (bicubic) onto the region of the image the model saw; the rest of the image is
dimmed. Reports are single self-contained HTML files (images inlined as PNG data URIs).
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from qdrant_xai.errors import ImageLoadError
from qdrant_xai.images.load import load_image

if TYPE_CHECKING:
    from qdrant_xai.explain.results import Explanation, WordAttribution

__all__ = [
    "overlay_for",
    "overlay_heatmap",
    "png_data_uri",
    "render_report",
    "render_section",
    "words_html",
    "write_report",
]


def overlay_heatmap(
    image: Image.Image,
    heatmap: np.ndarray,
    crop_box: tuple[int, int, int, int] | None = None,
    *,
    alpha: float = 0.55,
    colormap: str = "inferno",
) -> Image.Image:
    """Draws ``heatmap`` ([gh, gw]) over ``crop_box`` of ``image`` (default: all of it).

    Values are divided by the heatmap's maximum, and patches that lowered the score are
    drawn as zero (only evidence for the match is coloured); the area outside the crop box
    is dimmed because the model never saw it.
    """
    from matplotlib import colormaps

    base = image.convert("RGB")
    x0, y0, x1, y1 = crop_box or (0, 0, base.width, base.height)
    if not (0 <= x0 < x1 <= base.width and 0 <= y0 < y1 <= base.height):
        raise ValueError(
            f"crop box {(x0, y0, x1, y1)} does not fit inside the {base.width}x{base.height} "
            "image; pass the box of this image (ClipEncoder.crop_box(width, height))"
        )
    width, height = x1 - x0, y1 - y0
    values = np.asarray(heatmap, dtype=np.float32)
    peak = float(values.max())
    scaled = np.clip(values, 0.0, None) / peak if peak > 0 else np.zeros_like(values)
    smooth = Image.fromarray(scaled, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    levels = np.clip(np.asarray(smooth), 0.0, 1.0)
    colours = (colormaps[colormap](levels)[..., :3] * 255.0).astype(np.float32)
    pixels = np.asarray(base, dtype=np.float32) * 0.45  # dim everything, then redraw the box
    region = np.asarray(base.crop((x0, y0, x1, y1)), dtype=np.float32)
    pixels[y0 : y0 + height, x0 : x0 + width] = (1 - alpha) * region + alpha * colours
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def overlay_for(
    explanation: Explanation, image: Image.Image | None = None, *, alpha: float = 0.55
) -> Image.Image:
    """The explanation's heatmap over its image (read from ``image_source`` if not given)."""
    if explanation.heatmap is None:
        raise ValueError(f"the explanation of hit {explanation.id} has no heatmap")
    if image is None:
        image = _original(explanation)
    box = explanation.crop_box
    if box is not None and not (box[2] <= image.width and box[3] <= image.height):
        raise ImageLoadError(
            explanation.image_source or f"the image of hit {explanation.id}",
            f"is {image.width}x{image.height}, smaller than the crop box {box} recorded when "
            "the hit was indexed: the file changed since; re-index or backfill it",
        )
    return overlay_heatmap(image, explanation.heatmap, box, alpha=alpha)


def _original(explanation: Explanation) -> Image.Image:
    """The image under the heatmap: the one the explainer read, else the source named by
    the hit's payload, read under the explainer's source policy when it had one (so a
    planted path cannot put a file outside ``image_roots`` into a report), else as a local
    file (qdrant-xai's own collections store local paths)."""
    if explanation.image is not None:
        return explanation.image.image
    source = explanation.image_source
    if not source:
        raise ImageLoadError(
            f"hit {explanation.id}", "no image given and no image source known in its payload"
        )
    if explanation.sources is not None:
        return explanation.sources.open(source).image
    if "://" in source or source.startswith("data:"):
        raise ImageLoadError(source[:60], "not a local file; pass the image to overlay(image=...)")
    return load_image(source).image


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
    if explanation.heatmap is not None:
        original = (
            query if explanation.heatmap_side == "query" and not isinstance(query, str) else None
        )
        try:
            if original is None:
                original = _original(explanation)
            overlay = explanation.overlay(original)
            image_html = f"<img src='{png_data_uri(overlay)}' alt='heatmap'>"
            if explanation.heatmap_side == "hit" and original is not None:
                image_html = f"<img src='{png_data_uri(original)}' alt='hit'>" + image_html
        except Exception as exc:  # one unreadable image must not lose the rest of the report
            image_html = f"<p class='meta'>no overlay: {html.escape(str(exc))}</p>"
            original = None
    caption = ""
    if explanation.text is not None:
        whose = "query" if explanation.words_side == "query" else "hit text"
        top = ", ".join(f"{w.word} {w.score:+.3f}" for w in explanation.top_words(3))
        caption = (
            f"<div class='text'>{explanation.words_html()}</div>"
            f"<div class='top'>{whose}; top words: {html.escape(top)}</div>"
        )
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
    if not explanation.rationales:
        return ""
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
    """Writes :func:`render_report` to ``path`` (folders created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(sections, title=title, subtitle=subtitle), encoding="utf-8")
    return out
