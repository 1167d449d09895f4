"""Turning explained documents into text for an LLM, chat content blocks, and HTML."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.documents import Document

from langchain_qdrant_xai.documents import xai_value
from qdrant_xai.explain.results import grid_region
from qdrant_xai.storage.layouts import looks_like_base64_image

__all__ = ["describe_document", "describe_documents", "documents_html", "documents_to_content"]


def describe_document(document: Document, number: int | None = None) -> str:
    """One line an LLM can read: what the hit is, its score and why it matched.

    For example ``1. scene_03.png ("a red circle") score 0.612: matched query words
    circle (+0.44), red (+0.28); against: a (-0.02); heatmap peak row 2 col 5 of 8x8
    (top-right; 0-based from the top-left); id 1f0c…``. Rows and columns count from 0 at
    the top left, as in every output of qdrant-xai. A hit that could not be explained says
    why: ``...score 0.412: not explained (FeaturesMissingError: ...); id 7``.
    """
    meta = document.metadata
    number = xai_value(meta, "rank", 0) + 1 if number is None else number
    if xai_value(meta, "kind") == "image":
        source = xai_value(meta, "source")
        name = "image" if not isinstance(source, str) else _file_name(source)
        caption = xai_value(meta, "caption")
        label = f"{name} ({_quoted(caption)})" if caption else name
    else:
        label = _quoted(document.page_content)
    line = f"{number}. {label} score {float(xai_value(meta, 'score', 0.0)):.3f}"
    why = xai_value(meta, "explanation")
    if isinstance(why, Mapping) and why.get("status") == "failed":
        error = why.get("error") or {}
        reason = f"{error.get('type', 'error')}: {error.get('message', '')}"
        line += f": not explained ({_cut(reason, _REASON_LIMIT)})"
    elif isinstance(why, Mapping) and why:
        details = _why(why)
        if details:
            line += ": " + "; ".join(details)
    return f"{line}; id {meta.get('_id')}"


def _why(why: Mapping[str, Any]) -> list[str]:
    """The parts of a line saying why a hit matched: words and where the heatmap peaks."""
    details = []
    scored = [(w[0], float(w[1])) for w in why.get("words") or why.get("top_words") or []]
    ranked = sorted(scored, key=lambda pair: pair[1], reverse=True)
    raised = [pair for pair in ranked if pair[1] > 0][:3]
    of_query = why.get("words_side") == "query"
    if raised:
        whose = "matched query words " if of_query else "matching words "
        details.append(whose + ", ".join(f"{w} ({s:+.2f})" for w, s in raised))
    elif scored:
        details.append(f"no {'query ' if of_query else ''}word raised the score")
    if ranked and ranked[-1][1] < 0:
        word, score = ranked[-1]
        details.append(f"against: {word} ({score:+.2f})")
    peak, grid = why.get("peak"), why.get("grid")
    if peak and grid:
        where = "heatmap peak" if why.get("heatmap_side") == "hit" else "query image peak"
        details.append(
            f"{where} row {peak[0]} col {peak[1]} of {grid[0]}x{grid[1]} "
            f"({grid_region(*peak, *grid)}; 0-based from the top-left)"
        )
    return details


def _file_name(source: str) -> str:
    """The file name of an image source; an inline image (base64, data URI) is "image"."""
    if source.startswith("data:") or looks_like_base64_image(source):
        return "image"
    return _cut(os.path.basename(source), 80) or "image"


def describe_documents(documents: Sequence[Document]) -> str:
    """:func:`describe_document` for every document, one per line ("no hits" if none)."""
    if not documents:
        return "no hits"
    return "\n".join(describe_document(d, i + 1) for i, d in enumerate(documents))


def documents_to_content(
    documents: Sequence[Document],
    *,
    question: str | None = None,
    images: bool = True,
    overlays: bool = False,
    block_format: Literal["standard", "openai"] = "standard",
) -> list[dict[str, Any]]:
    """Content blocks of a multimodal ``HumanMessage``: the question, then per hit its
    description (:func:`describe_document`), its image and optionally its heatmap overlay.

    Images come from ``metadata["image"]`` and ``metadata["explanation"]["overlay"]``
    (retrieve with ``include_image=True`` / ``include_overlay=True``). ``block_format``
    ``"standard"`` gives LangChain's ``{"type": "image", "base64": ..., "mime_type": ...}``
    blocks; ``"openai"`` gives ``{"type": "image_url", "image_url": {"url": ...}}``.
    """
    blocks: list[dict[str, Any]] = []
    if question is not None:
        blocks.append({"type": "text", "text": f"Question: {question}"})
    if not documents:
        blocks.append({"type": "text", "text": "Retrieved: no hits."})
        return blocks
    blocks.append(
        {
            "type": "text",
            "text": "Retrieved hits, best first, with why each matched (word attributions "
            "and where the heatmap over the image peaks):",
        }
    )
    for i, document in enumerate(documents):
        blocks.append({"type": "text", "text": describe_document(document, i + 1)})
        image = xai_value(document.metadata, "image")
        if images and isinstance(image, str):
            blocks.append(_image_block(image, block_format))
        overlay = (xai_value(document.metadata, "explanation") or {}).get("overlay")
        if overlays and isinstance(overlay, str):
            blocks.append({"type": "text", "text": f"heatmap of hit {i + 1}:"})
            blocks.append(_image_block(overlay, block_format))
    return blocks


def documents_html(
    documents: Sequence[Document] | Mapping[str, Sequence[Document]],
    *,
    title: str = "qdrant-xai retrieval",
    answer: str | None = None,
) -> str:
    """A self-contained HTML page showing documents, their images, overlays and why they
    matched.

    Args:
        documents: the documents, or sections of them by heading (e.g. query -> hits).
        title: the page title.
        answer: a model's answer, shown at the end.
    """
    sections = documents if isinstance(documents, Mapping) else {"": documents}
    body = []
    for heading, docs in sections.items():
        if heading:
            body.append(f"<h2>{html.escape(heading)}</h2>")
        body += [_document_html(d, i + 1) for i, d in enumerate(docs)] or ["<p>no hits</p>"]
    if answer is not None:
        body.append(f"<h2>Answer</h2><p class='text'>{html.escape(answer)}</p>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(body)}</body></html>"
    )


def _document_html(document: Document, number: int) -> str:
    meta = document.metadata
    images = [
        f"<img src='{html.escape(uri)}' alt='{alt}'>"
        for uri, alt in (
            (xai_value(meta, "image"), "hit"),
            ((xai_value(meta, "explanation") or {}).get("overlay"), "heatmap"),
        )
        if isinstance(uri, str) and uri.startswith("data:image/")
    ]
    return (
        "<div class='hit'>"
        f"<div class='rank'>#{number}</div>{''.join(images)}<div>"
        f"<div class='text'>{html.escape(document.page_content)}</div>"
        f"<div class='meta'>{html.escape(describe_document(document, number))}</div>"
        "</div></div>"
    )


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}"
    ".hit{display:flex;gap:1rem;align-items:flex-start;border-top:1px solid #ddd;padding:1rem 0}"
    ".hit img{width:180px;height:auto;border-radius:4px}.rank{font-weight:600;min-width:2.5rem}"
    ".meta{color:#555;font-size:.85rem}.text{font-size:1.05rem}h2{font-size:1.05rem}"
)


def _image_block(uri: str, block_format: str) -> dict[str, Any]:
    if block_format == "openai":
        return {"type": "image_url", "image_url": {"url": uri}}
    header, _, data = uri.partition(",")
    mime = header.removeprefix("data:").split(";")[0] or "image/png"
    return {"type": "image", "base64": data, "mime_type": mime}


def _quoted(text: str, limit: int = 80) -> str:
    return f'"{_cut(" ".join(str(text).split()), limit)}"'


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: the most characters of a failure's reason a line quotes
_REASON_LIMIT = 240
