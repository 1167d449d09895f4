"""``qdrant-xai eval PATH``: retrieval quality on a dataset, with and without explanations."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from qdrant_xai.cli import options
from qdrant_xai.errors import QdrantXaiError
from qdrant_xai.eval.datasets import DEFAULT_CAP, FORMATS

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

NEEDS_CLIENT = True


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure text->image and image->text retrieval on a dataset, with and without "
        "explanations",
        description="Indexes a retrieval dataset (or reuses the collection that holds it) and "
        "reports Recall@1/5/10, mAP and median rank for text->image and image->text, in the "
        "layout of the paper's Table III. Then runs every query again with the explainer in "
        "the loop and checks that every ranking is identical, ids and scores bit for bit "
        "(embedded Qdrant is not bit-reproducible itself: there, up to its own noise, "
        "measured by searching twice in a row). Exit status 2 when a ranking changed.",
    )
    parser.add_argument(
        "dataset",
        metavar="PATH",
        help="Flickr8k folder or token file, Karpathy split JSON (dataset_coco.json ...), "
        "or a CSV with header image,caption (or a folder holding one)",
    )
    parser.add_argument("--format", choices=FORMATS, default=None, help="default: detected")
    parser.add_argument(
        "--split",
        default=None,
        help="split to evaluate: test, val/dev, train, restval or all (default: test when the "
        "dataset has splits)",
    )
    parser.add_argument(
        "--max-images",
        type=options.positive_int,
        default=None,
        metavar="N",
        help="first N images only (quick runs)",
    )
    parser.add_argument(
        "--images", metavar="DIR", help="image folder (default: found next to the captions)"
    )
    parser.add_argument(
        "--skip-missing", action="store_true", help="leave out images whose file is missing"
    )
    parser.add_argument("--json", metavar="OUT", help="write every figure as JSON to OUT")
    parser.add_argument(
        "--no-explain", action="store_true", help="skip the explained pass and invariance check"
    )
    parser.add_argument(
        "--explain-top",
        type=options.positive_int,
        default=10,
        help="hits explained per query (default: 10)",
    )
    options.add_method_choices(parser, described=False)
    parser.add_argument(
        "--max-rank",
        type=options.positive_int,
        default=DEFAULT_CAP,
        help="ranks counted per query (default: %(default)s); a relevant item beyond is a miss "
        "for R@K and ranks N+1 for the median",
    )
    parser.add_argument(
        "--approximate",
        action="store_true",
        help="search through the HNSW index as a deployment would (default: exact search)",
    )
    parser.add_argument(
        "--reindex",
        action="store_true",
        help="delete the dataset's points and index them again (default: reuse them)",
    )
    options.add_codec_option(parser)
    options.add_profile_option(parser)
    parser.add_argument(
        "--batch-size",
        type=options.positive_int,
        default=32,
        help="images per forward pass (default: 32)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    options.add_qdrant_options(parser, derived_collection="xai_eval_<dataset name>")


def run(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.eval.datasets import default_collection, read_dataset
    from qdrant_xai.eval.retrieval import evaluate

    for flag, value, least in (
        ("--max-images", args.max_images, 1),
        ("--explain-top", args.explain_top, 1),
        ("--batch-size", args.batch_size, 1),
        ("--max-rank", args.max_rank, 10),
    ):
        if value is not None and value < least:
            raise QdrantXaiError(f"{flag} must be at least {least}, got {value}")
    dataset = read_dataset(
        args.dataset,
        format=args.format,
        split=args.split,
        max_images=args.max_images,
        images=args.images,
        skip_missing=args.skip_missing,
    )
    args.collection = args.collection or default_collection(dataset)
    report = evaluate(
        client,
        options.load_encoder(args, client),
        dataset,
        collection_name=args.collection,
        reuse=not args.reindex,
        explain=not args.no_explain,
        batch_size=args.batch_size,
        cap=args.max_rank,
        explain_top=args.explain_top,
        heatmap_method=args.heatmap_method,
        word_method=args.word_method,  # None: the model's default (evaluate resolves it)
        codec=args.codec,
        profile=args.profile,
        exact=not args.approximate,
        retry=options.retry_policy(args),
        progress=not args.no_progress,
    )
    print(report.format_table())
    if args.json:
        print(f"json: {report.write_json(args.json)}", file=sys.stderr)
    if report.invariance is not None and not report.invariance.invariant:
        return 2
    return 0
