"""``qdrant-xai search``: search by text (or ``--image``) and explain the hits."""

from __future__ import annotations

import argparse
from typing import Any, Literal

from qdrant_xai.cli import options
from qdrant_xai.cli.output import EXIT_PARTIAL, print_hits
from qdrant_xai.errors import QdrantXaiError

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

NEEDS_CLIENT = True


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search by text (or --image) and explain the hits",
        description="Searches the collection and, with --explain, explains every hit. A hit "
        "that cannot be explained is shown with the reason and the others are explained; "
        f"the exit status is then {EXIT_PARTIAL} (1 when no hit could be explained).",
    )
    parser.add_argument("text", nargs="?", help="text query")
    parser.add_argument(
        "--image", metavar="IMAGE", help="image query instead of text: a path, a data URI or base64"
    )
    parser.add_argument(
        "--hit-kind",
        "--target",
        dest="hit_kind",
        choices=["image", "text"],
        default=None,
        help="kind of hits (default: images for a text query, texts for an image query)",
    )
    parser.add_argument(
        "--limit", type=options.positive_int, default=5, help="number of hits (default: 5)"
    )
    parser.add_argument("--explain", action="store_true", help="explain every hit")
    options.add_hit_options(parser)
    options.add_qdrant_options(parser)


def run(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.search import Searcher

    if (args.text is None) == (args.image is None):
        raise QdrantXaiError("give either a text query or --image PATH (not both)")
    query = options.read_query(args)
    hit_kind: Literal["image", "text"] = args.hit_kind or (
        "image" if args.image is None else "text"
    )
    encoder = options.load_encoder(args, client)
    searcher = Searcher(
        client,
        encoder,
        collection_name=args.collection,
        layout=args.layout,
        retry=options.retry_policy(args),
    )
    hits = searcher.search(query, hit_kind=hit_kind, limit=args.limit)
    explanations = (
        options.build_explainer(args, client, encoder).explain(query, hits, hit_kind=hit_kind)
        if args.explain
        else None
    )
    failed = print_hits(args, query, hits, explanations)
    return 0 if not failed else 1 if failed == len(hits) else EXIT_PARTIAL
