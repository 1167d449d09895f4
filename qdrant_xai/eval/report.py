"""What an evaluation measured: :class:`EvaluationReport`, as a table or as JSON.

:meth:`EvaluationReport.format_table` prints the paper's Table III layout (Recall@1/5/10
both ways, with and without explanations), mAP and median rank, the ranking-invariance
verdict and the timings; :meth:`EvaluationReport.to_dict` is what ``qdrant-xai eval --json``
writes.
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qdrant_xai.eval.queries import DIRECTION_LABELS
from qdrant_xai.files import write_text_whole

if TYPE_CHECKING:
    from qdrant_xai.eval.datasets import RetrievalDataset
    from qdrant_xai.eval.invariance import Invariance
    from qdrant_xai.eval.retrieval import DirectionMetrics

__all__ = ["EvaluationReport"]


@dataclass
class EvaluationReport:
    """Everything an evaluation measured; :meth:`format_table` prints it, :meth:`to_dict`
    is the JSON."""

    dataset: RetrievalDataset
    collection: str
    model: str
    fingerprint: str
    ks: tuple[int, ...]
    metrics: dict[str, DirectionMetrics]
    explained_metrics: dict[str, DirectionMetrics] | None
    invariance: Invariance | None
    indexing: dict[str, Any]
    timing: dict[str, float]
    settings: dict[str, Any]
    excluded: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.to_dict(),
            "collection": self.collection,
            "model": {"id": self.model, "fingerprint": self.fingerprint},
            "settings": self.settings,
            "indexing": self.indexing,
            "excluded": [list(pair) for pair in self.excluded],
            "counts": {
                "images": self.dataset.n_images - len(self.excluded),
                "captions": self.metrics["text_to_image"].queries,
                "text_to_image_queries": self.metrics["text_to_image"].queries,
                "image_to_text_queries": self.metrics["image_to_text"].queries,
            },
            "metrics": {d: m.to_dict() for d, m in self.metrics.items()},
            "metrics_with_explanations": (
                None
                if self.explained_metrics is None
                else {d: m.to_dict() for d, m in self.explained_metrics.items()}
            ),
            "invariance": None if self.invariance is None else self.invariance.to_dict(),
            "timing": self.timing,
        }

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Writes every figure as JSON to ``path``, whole or not at all (see
        :func:`~qdrant_xai.files.write_text_whole`)."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        return write_text_whole(path, text, what=f"the results {path}")

    def format_table(self) -> str:
        """The results as text: the paper's Table III layout, the full metrics, the
        invariance line and the timings."""
        t2i, i2t = self.metrics["text_to_image"], self.metrics["image_to_text"]
        ks = self.ks
        lines = [
            f"Evaluated {self.dataset.describe()}",
            f"collection {self.collection!r}, model {self.model}",
        ]
        done = self.indexing
        lines.append(
            f"indexed {done['indexed_images']} images and {done['indexed_texts']} captions, "
            f"{done['unchanged']} images already there (reused)"
        )
        if self.excluded:
            first = self.excluded[0]
            lines.append(
                f"{len(self.excluded)} images excluded: they could not be indexed (first: "
                f"{first[0]}: {first[1]})"
            )
        cell = 7
        width = cell * len(ks)
        head = f"{'':<24}{'Text -> Image':<{width + 3}}{'Image -> Text':<{width}}"
        sub = f"{'Method':<24}" + "".join(f"{f'R@{k}':<{cell}}" for k in ks) + "   "
        sub += "".join(f"{f'R@{k}':<{cell}}" for k in ks)
        lines += ["", "Cross-modal retrieval (the paper's Table III layout)", head, sub]
        rows = [("Search (baseline)", self.metrics)]
        if self.explained_metrics is not None:
            rows.append(("Search + explanations", self.explained_metrics))
        for label, metrics in rows:
            a, b = metrics["text_to_image"], metrics["image_to_text"]
            lines.append(
                f"{label:<24}"
                + "".join(f"{a.recall[k]:<{cell}.3f}" for k in ks)
                + "   "
                + "".join(f"{b.recall[k]:<{cell}.3f}" for k in ks)
            )
        lines += [
            "",
            f"{'Direction':<16}{'queries':>8}  "
            + "".join(f"{f'R@{k}':<{cell}}" for k in ks)
            + f"{'mAP':<{cell}}{'median rank':<12}",
        ]
        for m in (t2i, i2t):
            lines.append(
                f"{DIRECTION_LABELS[m.direction]:<16}{m.queries:>8}  "
                + "".join(f"{m.recall[k]:<{cell}.3f}" for k in ks)
                + f"{m.mean_ap:<{cell}.3f}{m.median_rank:g}"
            )
        for m in (t2i, i2t):
            if m.candidates > m.cap:
                lines.append(
                    f"  {DIRECTION_LABELS[m.direction]}: ranks counted up to {m.cap} of "
                    f"{m.candidates} candidates ({m.misses} queries had no relevant item "
                    f"within; a miss for R@K, rank {m.cap + 1} for the median)"
                )
        lines.append("")
        if self.invariance is not None:
            for paragraph in self.invariance.line().split("\n"):
                lines.append(textwrap.fill(paragraph, width=100, subsequent_indent="  "))
        else:
            lines.append("Ranking invariance: not checked (explanations off)")
        timing = self.timing
        text = f"Time: indexing {timing['index_s']:.1f} s; search pass {timing['search_s']:.1f} s"
        if "explained_pass_s" in timing:
            text += (
                f"; search + explain pass {timing['explained_pass_s']:.1f} s "
                f"({timing['explained_pass_s'] / max(timing['search_s'], 1e-9):.1f}x, "
                f"explaining alone {timing['explain_s']:.1f} s)"
            )
        lines.append(text)
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        return self.format_table()
