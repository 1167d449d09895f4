"""HTML reports: one self-contained file, each image in it once, every untrusted value escaped.

Each hit is a :class:`~qdrant_xai.render.pictures.HitPicture`: a small JPEG of its image,
letterboxed in a fixed box, with the heatmap as a transparent layer over the model's crop box
(outlined; the rest is dimmed) and a strip of grounding layers over the same picture. Every
distinct picture is written once, as a CSS variable on the element that holds the page, and
every drawing refers to that variable: a query image under the heatmaps of all its hits costs
one JPEG.
No script, no font or file from the network.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from qdrant_xai.errors import ImageLoadError, brief_repr
from qdrant_xai.images.sniff import looks_like_base64_image
from qdrant_xai.render.legend import LEGEND, STYLE
from qdrant_xai.render.pictures import (
    HitPicture,
    Thumbnail,
    hit_picture,
    picture_of,
    thumbnail,
)

if TYPE_CHECKING:
    from qdrant_xai.explain.results import Explanation, WordAttribution

__all__ = ["render_report", "render_section", "words_html", "write_report"]

Query = str | Image.Image

#: the box a hit's picture is letterboxed in, and the picture's longest side, in pixels
HIT_BOX, PICTURE_SIZE = 240, 256
#: a picture's short side is shown at least this fraction of its box (a 1600x90 photo is
#: shown in part, centred on the model's crop, rather than as a sliver)
MIN_SHORT = 0.25
#: the longest picture an extreme aspect ratio may ask for
MAX_PICTURE_SIZE = 1024


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


@dataclass
class _Pictures:
    """The distinct images of a page, each written once, as a CSS variable of the element
    that holds them all (an attribute, like an image's ``src``); every drawing of an image
    refers to its variable."""

    names: dict[str, str] = field(default_factory=dict)

    def var_of(self, uri: str) -> str:
        name = self.names.get(uri)
        if name is None:
            digest = hashlib.sha1(uri.encode("ascii"), usedforsecurity=False).hexdigest()
            name = self.names[uri] = f"--i{digest[:12]}"
        return f"var({name})"

    def attribute(self) -> str:
        """`` style='...'`` defining every variable ('' when there is none)."""
        if not self.names:
            return ""
        # a data URI of base64 holds no quote, bracket or backslash: safe inside url("")
        rules = ";".join(f'{n}:url("{u}")' for u, n in self.names.items())
        return f" style='{rules}'"


def render_section(query: Query, explanations: Sequence[Explanation]) -> str:
    """HTML for one query: the query, then every hit in rank order with its score, heatmap,
    grounding and highlighted words (the pictures it draws are defined on its element)."""
    pictures = _Pictures()
    body = _section(query, explanations, pictures)
    return f"<section{pictures.attribute()}>{body}</section>"


def _section(query: Query, explanations: Sequence[Explanation], pictures: _Pictures) -> str:
    shown: Thumbnail | None = None
    if isinstance(query, str):
        query_html = f"<p class='text'>Query: <b>{html.escape(query)}</b></p>"
    else:
        shown = thumbnail(query, _picture_size(query.size))
        box = _picture_html(_plain(shown), pictures, "mid")
        query_html = f"<div class='query'>Query image:{box}</div>"
    drawn = _draw_all(explanations, query, shown)
    blocks = [_hit_html(e, d, pictures) for e, d in zip(explanations, drawn, strict=True)]
    return f"{query_html}{''.join(blocks)}"


def _plain(shown: Thumbnail) -> HitPicture:
    small = shown.image
    return HitPicture(shown.uri, small.width, small.height, None, None, ())


@dataclass(frozen=True)
class _Drawn:
    """A hit's picture, or why it has none."""

    picture: HitPicture | None = None
    original_size: tuple[int, int] | None = None
    failure: str | None = None


def _draw_all(
    explanations: Sequence[Explanation], query: Query, shown: Thumbnail | None
) -> list[_Drawn]:
    """Each hit's picture; photos decode and shrink in threads (Pillow lets go of the GIL),
    so ten large photos cost about the time of the slowest few."""
    if len(explanations) <= 1:
        return [_draw(e, query, shown) for e in explanations]
    workers = min(4, os.cpu_count() or 1, len(explanations))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qdrant-xai-render") as pool:
        return list(pool.map(lambda e: _draw(e, query, shown), explanations))


def _draw(explanation: Explanation, query: Query, shown: Thumbnail | None) -> _Drawn:
    if explanation.error is not None or explanation.heatmap is None:
        return _Drawn()
    try:
        if explanation.heatmap_side == "query" and shown is not None:
            return _Drawn(picture_of(explanation, shown), shown.original_size)
        image = explanation.original_image()
        picture = hit_picture(explanation, image, size=_picture_size(image.size))
        return _Drawn(picture, image.size)
    except Exception as exc:  # one unreadable image must not lose the rest of the report
        return _Drawn(failure=_reason(exc))


def _picture_size(size: tuple[int, int]) -> int:
    """The longest side to shrink an image of ``size`` to: :data:`PICTURE_SIZE`, more for
    an extreme aspect ratio (so that its short side is not a sliver), at most
    :data:`MAX_PICTURE_SIZE`."""
    long, short = max(size), max(1, min(size))
    wanted = math.ceil(MIN_SHORT * HIT_BOX * long / short)
    return min(MAX_PICTURE_SIZE, max(PICTURE_SIZE, wanted))


def _picture_html(
    picture: HitPicture,
    pictures: _Pictures,
    size: str,
    *,
    layer: str | None = None,
    alt: str = "heatmap",
    label: str = "image",
) -> str:
    """The picture letterboxed in a box of class ``size``, the crop outlined, ``layer``
    (a data URI) stretched over the crop."""
    box = {"big": HIT_BOX, "mid": 160, "sm": 96}[size]
    left, top, width, height = _placed(picture, box)
    crop = picture.crop
    x0, y0, x1, y1 = crop or (0.0, 0.0, 1.0, 1.0)
    whole = " whole" if crop is None or crop == (0.0, 0.0, 1.0, 1.0) else ""
    heat = f"<img src='{layer}' alt='{html.escape(alt, quote=True)}'>" if layer else ""
    return (
        f"<div class='pic {size}' role='img' aria-label='{html.escape(label, quote=True)}'>"
        f"<div class='img' style='background-image:{pictures.var_of(picture.image)};"
        f"left:{left:.1f}px;"
        f"top:{top:.1f}px;width:{width:.1f}px;height:{height:.1f}px'>"
        f"<div class='crop{whole}' style='left:{x0 * 100:.3f}%;top:{y0 * 100:.3f}%;"
        f"width:{(x1 - x0) * 100:.3f}%;height:{(y1 - y0) * 100:.3f}%'>{heat}</div>"
        "</div></div>"
    )


def _placed(picture: HitPicture, box: int) -> tuple[float, float, float, float]:
    """``(left, top, width, height)`` of the picture in a square box of ``box`` pixels:
    letterboxed whole, or, when its short side would be under :data:`MIN_SHORT` of the box,
    enlarged to that and cut, centred on the crop box."""
    w, h = picture.width, picture.height
    scale = box / max(w, h)
    if min(w, h) * scale < MIN_SHORT * box:
        scale = MIN_SHORT * box / min(w, h)
    width, height = w * scale, h * scale
    x0, y0, x1, y1 = picture.crop or (0.0, 0.0, 1.0, 1.0)
    return (
        _offset(width, box, (x0 + x1) / 2),
        _offset(height, box, (y0 + y1) / 2),
        width,
        height,
    )


def _offset(length: float, box: int, centre: float) -> float:
    if length <= box:
        return (box - length) / 2
    return min(0.0, max(box - length, box / 2 - centre * length))


def _hit_html(explanation: Explanation, drawn: _Drawn, pictures: _Pictures) -> str:
    image_html = ""
    if explanation.error is not None:
        image_html = (
            f"<p class='meta'>not explained ({type(explanation.error).__name__}): "
            f"{html.escape(_reason(explanation.error))}</p>"
        )
    elif drawn.failure is not None:
        image_html = f"<p class='meta'>no overlay: {html.escape(drawn.failure)}</p>"
    elif drawn.picture is not None:
        whose = "the query image" if explanation.heatmap_side == "query" else "the hit's image"
        image_html = _picture_html(
            drawn.picture, pictures, "big", layer=drawn.picture.heatmap, label=f"{whose}, heatmap"
        )
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
    about = [f"score {explanation.score:.4f}", f"id {html.escape(_short(str(explanation.id)))}"]
    if name := _file_name(explanation):
        about.append(html.escape(name))
    if drawn.original_size is not None and explanation.heatmap_side == "hit":
        about.append("{}×{} px".format(*drawn.original_size))
    return (
        "<div class='hit'>"
        f"<div class='rank'>#{explanation.rank + 1}</div>{image_html}<div>"
        f"<div class='meta'>{' · '.join(about)}</div>{caption}"
        f"{_grounding_html(drawn.picture, pictures)}{_rationales_html(explanation)}"
        f"<div class='meta'>heatmap: {html.escape(explanation.heatmap_method or '-')} "
        f"({explanation.heatmap_side or '-'}) · words: "
        f"{html.escape(explanation.word_method or '-')}</div>"
        "</div></div>"
    )


def _file_name(explanation: Explanation) -> str:
    """The name of the hit's image file: the payload's ``source``, else the image source the
    layout read (LangChain, LlamaIndex); "inline image" for one held in the payload."""
    source = explanation.payload.get("source")
    if not isinstance(source, str) or not source:
        source = explanation.image_source if explanation.hit_kind == "image" else None
    if not source:
        return ""
    if source.lstrip()[:5].lower() == "data:" or looks_like_base64_image(source):
        return "inline image"
    if "://" in source:
        source = source.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return _short(source.replace("\\", "/").rsplit("/", 1)[-1] or source)


def _short(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


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


def _grounding_html(picture: HitPicture | None, pictures: _Pictures) -> str:
    """A strip of small pictures, one per grounded word, on the hit's common scale."""
    if picture is None or not picture.grounding:
        return ""
    figures = []
    for g in picture.grounding:
        word = html.escape(g.word)
        label = f"where “{g.word}” is found"
        box = _picture_html(picture, pictures, "sm", layer=g.layer, alt=g.word, label=label)
        if g.near_zero:
            figures.append(
                f"<figure class='nz' title='peak {g.strength:.2f} of the strongest word'>"
                f"{box}<figcaption>{word} · near zero</figcaption></figure>"
            )
        else:
            figures.append(
                f"<figure title='peak {g.strength:.2f} of the strongest word'>{box}"
                f"<figcaption>{word} {g.strength:.2f}</figcaption></figure>"
            )
    return (
        "<div class='top'>where each word is found (one scale for all words):</div>"
        f"<div class='strip'>{''.join(figures)}</div>"
    )


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
    sections: Sequence[tuple[Query, Sequence[Explanation]]],
    *,
    title: str = "qdrant-xai report",
    subtitle: str = "",
    model: str | None = None,
) -> str:
    """A self-contained HTML page with one section per ``(query, explanations)``: the model
    (when given) and ``subtitle`` under the title, a legend, then the sections."""
    pictures = _Pictures()
    body = "<hr>".join(f"<section>{_section(q, e, pictures)}</section>" for q, e in sections)
    about = " · ".join(
        html.escape(part) for part in (f"model {model}" if model else "", subtitle) if part
    )
    styles = "".join(f"<style>{block}</style>" for block in STYLE)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title>{styles}</head>"
        f"<body{pictures.attribute()}><h1>{html.escape(title)}</h1><p class='meta'>{about}</p>"
        f"{LEGEND}{body}</body></html>"
    )


def write_report(
    path: str | os.PathLike[str],
    sections: Sequence[tuple[Query, Sequence[Explanation]]],
    *,
    title: str = "qdrant-xai report",
    subtitle: str = "",
    model: str | None = None,
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

    text = render_report(sections, title=title, subtitle=subtitle, model=model)
    return write_text_whole(path, text, what=f"the report {path}")
