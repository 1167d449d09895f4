"""``qdrant-xai backfill``: explainable features for the points of an existing collection."""

from __future__ import annotations

import argparse
from typing import Any

from qdrant_xai.cli import options
from qdrant_xai.cli.output import EXIT_PARTIAL

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

NEEDS_CLIENT = True


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="add explainable features to the points of an existing collection",
        description="Computes the features of existing points and stores them where the "
        "explainer finds them. A collection another tool wrote (LangChain, LlamaIndex, "
        "FastEmbed, ...; detected, or see --layout) is never written to: the features go to "
        "its sidecar collection (COLLECTION__xai, --sidecar NAME), keyed by point id and a "
        "copy of each point's vector; --in-place writes them into the points' payloads "
        "instead, as for qdrant-xai's own collections (vectors and other keys untouched). "
        "Each point's stored vector is checked against the re-encoded one first. Resumable: "
        "points with current features are skipped. Exit status: 0 when every point is done, "
        f"{EXIT_PARTIAL} when some were skipped (each is listed), 1 when none could be done.",
    )
    options.add_layout_option(parser)
    options.add_source_options(parser)
    options.add_profile_option(parser)
    options.add_codec_option(parser)
    parser.add_argument(
        "--batch-size",
        type=options.positive_int,
        default=32,
        help="points per page, forward pass and write (default: 32)",
    )
    parser.add_argument(
        "--max-points",
        type=options.positive_int,
        default=None,
        metavar="N",
        help="stop after N points",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="write features even where a stored vector disagrees with the model",
    )
    parser.add_argument(
        "--repair",
        action="store_true",
        help="also rewrite points whose stored features are damaged or tampered with "
        "(reads every point's features)",
    )
    parser.add_argument(
        "--sidecar",
        metavar="NAME",
        default=None,
        help="the sidecar collection of a collection another tool wrote (default: COLLECTION__xai)",
    )
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="write the features into the collection's own payloads (grows every point; "
        "LangChain and LlamaIndex then fetch them with every search)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    options.add_qdrant_options(parser)


def run(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.storage.backfill import Backfiller
    from qdrant_xai.storage.schema import require_collection

    require_collection(client, args.collection, retry=options.retry_policy(args))
    backfiller = Backfiller(
        client,
        options.load_encoder(args, client),
        collection_name=args.collection,
        layout=args.layout,
        sources=options.source_policy(args),
        codec=args.codec,
        profile=args.profile,
        batch_size=args.batch_size,
        verify=not args.no_verify,
        retry=options.retry_policy(args),
        repair=args.repair,
        sidecar=args.sidecar,
        in_place=args.in_place,
    )
    summary = backfiller.run(progress=not args.no_progress, max_points=args.max_points)
    print(summary)
    if not summary.failed:
        return 0
    return EXIT_PARTIAL if summary.updated or summary.unchanged else 1
