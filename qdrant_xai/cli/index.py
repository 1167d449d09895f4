"""``qdrant-xai index DIR``: every image under a folder (and its captions) into a collection."""

from __future__ import annotations

import argparse
from typing import Any

from qdrant_xai.cli import options

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

NEEDS_CLIENT = True


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("index", help="index every image under DIR (and its captions)")
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument(
        "--captions",
        metavar="CSV",
        help="CSV with header image,caption (several rows per image); image paths relative "
        "to DIR or to the CSV's folder, or absolute inside DIR. A row whose caption is over "
        "100,000 characters (TextLimits.max_chars) or names no image is listed as skipped "
        "by its row number, and the rest is indexed",
    )
    options.add_codec_option(parser, described=True)
    options.add_profile_option(parser, described=True)
    parser.add_argument(
        "--batch-size",
        type=options.positive_int,
        default=16,
        help="images per forward pass and write (default: 16)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    options.add_qdrant_options(parser)


def run(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.storage.indexer import Indexer

    indexer = Indexer(
        client,
        options.load_encoder(args),
        collection_name=args.collection,
        codec=args.codec,
        batch_size=args.batch_size,
        profile=args.profile,
        retry=options.retry_policy(args),
    )
    summary = indexer.index_folder(
        args.directory, captions=args.captions, progress=not args.no_progress
    )
    print(summary)
    return 0
