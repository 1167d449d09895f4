"""``qdrant-xai index DIR``: every image under a folder (and its captions) into a collection."""

from __future__ import annotations

import argparse
import contextlib
from typing import TYPE_CHECKING, Any

from qdrant_xai.cli import engine, options

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder
    from qdrant_xai.retry import RetryPolicy
    from qdrant_xai.storage.distributed.pipeline import RayIndexer
    from qdrant_xai.storage.indexer import Indexer

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
    scale = engine.add_engine_options(
        parser,
        engine_help="local: this process encodes and writes (default); ray: a Ray Data actor "
        "pool of --workers encodes (one model per worker, a GPU each when the cluster has "
        "them). With --url the workers write to the server themselves; with an embedded "
        "--path (locked by this process) the driver checks what is current, so a rerun "
        "encodes nothing, and writes every point",
        title="scale (Ray Data, bulk mode)",
    )
    scale.add_argument(
        "--bulk",
        action="store_true",
        help="large ingests into a server (--url): HNSW graph building deferred (m=0) "
        "while indexing and the collection's own m set back at the end, also after an "
        "error or Ctrl-C, as Qdrant's bulk-upload guidance advises; with --engine ray "
        "the workers upload in parallel. Search is slower until Qdrant has rebuilt the "
        "graph. Does nothing on an embedded --path (it builds no HNSW graph)",
    )
    options.add_qdrant_options(parser)


def run(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.storage.schema import ensure_collection

    encoder = options.load_encoder(args)
    retry = options.retry_policy(args)
    with contextlib.ExitStack() as stack:
        if args.bulk:
            from qdrant_xai.storage.distributed.bulk import bulk_ingest

            ensure_collection(client, args.collection, dim=encoder.dim, retry=retry)
            notes = stack.enter_context(bulk_ingest(client, args.collection, retry=retry))
        indexer = _indexer(args, client, encoder, retry, stack)
        summary = indexer.index_folder(
            args.directory, captions=args.captions, progress=not args.no_progress
        )
    if args.bulk:
        summary.notes += [(f"collection {args.collection}", note) for note in notes]
    print(summary)
    return 0


def _indexer(
    args: argparse.Namespace,
    client: Any,
    encoder: ClipEncoder,
    retry: RetryPolicy,
    stack: contextlib.ExitStack,
) -> Indexer | RayIndexer:
    """The single-process indexer, or (``--engine ray``) the Ray one, with Ray started
    (or joined) for the run and stopped at its end when this run started it."""
    settings: dict[str, Any] = {
        "collection_name": args.collection,
        "codec": args.codec,
        "batch_size": args.batch_size,
        "profile": args.profile,
        "retry": retry,
    }
    if args.engine == "local":
        from qdrant_xai.storage.indexer import Indexer

        return Indexer(client, encoder, **settings)
    from qdrant_xai.storage.distributed.pipeline import RayIndexer

    return RayIndexer(client, encoder, **engine.ray_settings(args, stack), **settings)
