"""``qdrant-xai demo``: the offline demo (bundled model, synthetic shapes) and its report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qdrant_xai.encoding.checkpoints import quiet_transformers

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

#: the demo opens its own embedded Qdrant
NEEDS_CLIENT = False

_VERDICTS = {
    True: "; heatmap peak on the named shape",
    False: "; heatmap peak NOT on the named shape",
    None: "; the top hit does not show that shape",
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run the offline demo and write an HTML report")
    parser.add_argument("--out", default="qdrant-xai-demo", help="output folder")
    parser.add_argument(
        "--model", default=None, help="CLIP checkpoint (default: the bundled shapes model)"
    )
    parser.add_argument("--images", metavar="DIR", help="your own images instead of shapes")
    parser.add_argument("--captions", metavar="CSV", help="captions for --images")
    parser.add_argument(
        "--query",
        action="append",
        dest="queries",
        metavar="TEXT",
        help="text query; repeatable (default: shape queries, or the first captions of --captions)",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace, client: Any = None) -> int:
    """Runs the demo; ``client`` is unused (see :data:`NEEDS_CLIENT`)."""
    quiet_transformers()
    from qdrant_xai.demo.run import run_demo
    from qdrant_xai.storage.schema import PayloadKeys

    result = run_demo(
        args.out,
        model=args.model or None,
        images=args.images,
        captions=args.captions,
        queries=args.queries,
        progress=not args.no_progress,
    )
    print(result.summary)
    for query, explanations in result.explanations.items():
        if not explanations:
            print(f"{query!r}: no hits")
            continue
        top = explanations[0]
        verdict = _VERDICTS[result.on_target.get(query)] if result.synthetic else ""
        words = ", ".join(f"{w.word} {w.score:+.3f}" for w in top.top_words(2))
        print(
            f"{query!r}: top hit {Path(str(top.payload.get(PayloadKeys.SOURCE, ''))).name} "
            f"score {top.score:.3f}; top words {words}{verdict}"
        )
    if result.synthetic:
        hits = sum(v is True for v in result.on_target.values())
        print(f"pointing: {hits}/{len(result.on_target)} top-hit heatmaps on the named shape")
    if result.overlay:
        print(f"overlay: {result.overlay}")
    print(f"report: {result.report.resolve()}")
    if result.synthetic:
        out = Path(args.out)
        print(
            f"explore it in a browser: qdrant-xai serve --path {out / 'qdrant_data'} "
            f"--collection demo --image-root {out / 'images'} --grounding"
        )
    return 0
