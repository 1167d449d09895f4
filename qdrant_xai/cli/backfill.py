"""``qdrant-xai backfill``: explainable features for the points of an existing collection."""

from __future__ import annotations

import argparse
from typing import Any

from qdrant_xai.cli import options

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

NEEDS_CLIENT = True


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="add explainable features to the points of an existing collection",
        description="Computes the features of existing points (written by qdrant-xai or by "
        "another tool, see --layout) and writes them with set_payload; vectors and the rest "
        "of the payload are left alone. Each point's stored vector is checked against the "
        "re-encoded one first. Resumable: points with current features are skipped.",
    )
    options.add_layout_option(parser)
    options.add_source_options(parser)
    options.add_profile_option(parser)
    options.add_codec_option(parser)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--max-points", type=int, default=None, metavar="N", help="stop after N points"
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
    parser.add_argument("--no-progress", action="store_true")
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
    )
    summary = backfiller.run(progress=not args.no_progress, max_points=args.max_points)
    print(summary)
    return 0
