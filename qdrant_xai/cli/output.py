"""How ``search`` and ``explain`` show their hits: text lines, JSON lines (``--json``), an
HTML report (``--html``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qdrant_client import models

    from qdrant_xai.explain.results import Explanation
    from qdrant_xai.images.load import LoadedImage

__all__ = ["EXIT_PARTIAL", "print_hits"]

#: exit status when the command ran but some hits or points could not be explained or
#: backfilled (each one is reported with its reason)
EXIT_PARTIAL = 3


def print_hits(
    args: argparse.Namespace,
    query: str | LoadedImage,
    hits: Sequence[models.ScoredPoint],
    explanations: Sequence[Explanation] | None,
) -> int:
    """Prints ``hits`` as JSON lines (``--json``) or text lines, and writes the HTML report
    of ``--html`` (which needs explanations). Returns the number of hits that could not be
    explained (each is shown with its reason; a line on stderr counts them)."""
    failed = sum(not e.ok for e in explanations or ())
    if args.json:
        _print_json(hits, explanations)
    else:
        _print_text(hits, explanations)
    if args.html and explanations is not None:
        from qdrant_xai.encoding.checkpoints import DEFAULT_MODEL
        from qdrant_xai.render import write_report
        from qdrant_xai.storage.schema import PayloadKeys

        report_query = query if isinstance(query, str) else query.image
        # --model, else the model recorded with the hits (what load_encoder chose)
        recorded = next(
            (m for h in hits if isinstance(m := (h.payload or {}).get(PayloadKeys.MODEL), str)),
            None,
        )
        path = write_report(
            args.html,
            [(report_query, list(explanations))],
            subtitle=f"collection '{args.collection}'",
            model=getattr(args, "model", None) or recorded or DEFAULT_MODEL,
        )
        print(f"report: {path}", file=sys.stderr)
    elif args.html:
        print("--html needs --explain; no report written", file=sys.stderr)
    if failed:
        first = next(e.error for e in explanations or () if e.error is not None)
        level = "error" if failed == len(hits) else "warning"
        print(
            f"{level}: {failed} of {len(hits)} hits could not be explained (each says why); "
            f"the first: {' '.join(str(first).split())}",
            file=sys.stderr,
        )
    return failed


def _print_json(
    hits: Sequence[models.ScoredPoint], explanations: Sequence[Explanation] | None
) -> None:
    from qdrant_xai.explain.results import unexplained_record

    for rank, hit in enumerate(hits):
        record = (
            explanations[rank].to_dict()
            if explanations is not None
            else unexplained_record(hit, rank)
        )
        print(json.dumps(record, ensure_ascii=False))


def _print_text(
    hits: Sequence[models.ScoredPoint], explanations: Sequence[Explanation] | None
) -> None:
    from qdrant_xai.storage.schema import PayloadKeys

    for rank, hit in enumerate(hits):
        payload = hit.payload or {}
        label = payload.get(PayloadKeys.TEXT) or payload.get(PayloadKeys.SOURCE) or ""
        if explanations is not None and not label:
            e = explanations[rank]  # another tool's payload: what the layout read from it
            label = (e.text if e.words_side == "hit" else None) or e.image_source or ""
        print(f"{rank + 1:>2}. {hit.score:.4f}  {hit.id}  {_label(str(label))}")
        if explanations is not None:
            _print_explanation(explanations[rank])


def _label(value: str) -> str:
    """A hit's label on one line; an image inline in the payload is not printed."""
    from qdrant_xai.images.sniff import looks_like_base64_image

    if value.lstrip()[:5].lower() == "data:" or looks_like_base64_image(value):
        return "(inline image)"
    return _short(value)


def _short(text: str, limit: int = 80) -> str:
    """One line of at most ``limit`` characters (payload values can be huge: base64)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _print_explanation(e: Explanation) -> None:
    if e.error is not None:
        print(f"      not explained ({type(e.error).__name__}): {' '.join(str(e.error).split())}")
        return
    words = ", ".join(f"{w.word} {w.score:+.3f}" for w in e.top_words(3))
    if words:
        print(f"      top words ({e.words_side}): {words}")
    if note := e.left_out_note():
        print(f"      {note}")
    peak = e.peak()
    if peak is not None and e.heatmap is not None:
        rows, cols = e.heatmap.shape
        print(
            f"      heatmap peak ({e.heatmap_side} image, {e.heatmap_method}): "
            f"row {peak[0]}, col {peak[1]} of {rows}x{cols}"
        )
    if e.grounding is not None and e.grounding.words:
        where = "; ".join(f"{w} at {r},{c}" for w, (r, c) in e.grounding.peaks().items())
        print(f"      grounding: {where}")
    if e.rationales:
        because = ", ".join(r.concept for r in e.rationales)
        print(f"      because there is: {because}")
    elif e.rationales is not None:
        print("      no rationale found (no concept both raises the match and is seen)")
