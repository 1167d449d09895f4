"""``qdrant-xai explain POINT_ID``: explain one point of a collection for a query."""

from __future__ import annotations

import argparse
from typing import Any

from qdrant_xai.cli import options
from qdrant_xai.cli.output import print_hits

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

NEEDS_CLIENT = True


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("explain", help="explain one point for a query")
    parser.add_argument("point_id", metavar="POINT_ID")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query")
    query.add_argument("--image", metavar="IMAGE", help="image query: a path, a data URI or base64")
    options.add_hit_options(parser)
    options.add_qdrant_options(parser)


def run(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.search import Searcher
    from qdrant_xai.storage.schema import parse_point_id, require_collection

    retry = options.retry_policy(args)
    require_collection(client, args.collection, retry=retry)
    point_id = parse_point_id(args.point_id)
    query = options.read_query(args)
    encoder = options.load_encoder(args, client)
    searcher = Searcher(
        client, encoder, collection_name=args.collection, layout=args.layout, retry=retry
    )
    # scored exactly as a search would score it, so the explanation carries its real score
    scored = searcher.score_points(query, [point_id])
    explanations = options.build_explainer(args, client, encoder).explain(query, scored)
    return 1 if print_hits(args, query, scored, explanations) else 0
