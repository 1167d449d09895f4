"""``qdrant-xai backfill``: explainable features for the points of an existing collection."""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

from qdrant_xai.cli import engine, options
from qdrant_xai.cli.output import EXIT_PARTIAL

if TYPE_CHECKING:
    from qdrant_xai.storage.backfill import Backfiller
    from qdrant_xai.storage.distributed.backfill import RayBackfiller

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
    engine.add_engine_options(
        parser,
        engine_help="local: this process reads, encodes and writes (default); ray: this "
        "process reads the collection and skips the points that are current, and a Ray "
        "Data actor pool of --workers loads, encodes and verifies the others (one model per "
        "worker, a GPU each when the cluster has them). With --url the workers write to "
        "the server themselves; with an embedded --path (locked by this process) this "
        "process writes every point",
    )
    options.add_qdrant_options(parser)


def run(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.storage.schema import require_collection

    require_collection(client, args.collection, retry=options.retry_policy(args))
    settings: dict[str, Any] = {
        "collection_name": args.collection,
        "layout": args.layout,
        "sources": options.source_policy(args),
        "codec": args.codec,
        "profile": args.profile,
        "batch_size": args.batch_size,
        "verify": not args.no_verify,
        "retry": options.retry_policy(args),
        "repair": args.repair,
        "sidecar": args.sidecar,
        "in_place": args.in_place,
    }
    with contextlib.ExitStack() as stack:
        backfiller: Backfiller | RayBackfiller
        if args.engine == "ray":  # Ray first: without it, the error comes before any model
            from qdrant_xai.storage.distributed.backfill import RayBackfiller

            ray = engine.ray_settings(args, stack)
            encoder = options.load_encoder(args, client)
            backfiller = RayBackfiller(client, encoder, **ray, **settings)
        else:
            from qdrant_xai.storage.backfill import Backfiller

            backfiller = Backfiller(client, options.load_encoder(args, client), **settings)
        summary = backfiller.run(progress=not args.no_progress, max_points=args.max_points)
    print(summary)
    if not summary.failed:
        return 0
    return EXIT_PARTIAL if summary.updated or summary.unchanged else 1
