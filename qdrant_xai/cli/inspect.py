"""``qdrant-xai inspect COLLECTION``: which tool wrote a collection, and what of it can be
explained (see :func:`qdrant_xai.storage.detect.inspect_collection`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

from qdrant_xai.cli import options
from qdrant_xai.errors import QdrantXaiError

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

NEEDS_CLIENT = True

_SAMPLE = 32  # qdrant_xai.storage.detect.DEFAULT_SAMPLE, not imported while parsing


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="say which tool wrote a collection and what of it can be explained",
        description="Reads a collection's vectors and a sample of its points (nothing is "
        "written) and reports: the tool that wrote it (qdrant-xai, LangChain, LlamaIndex, "
        "FastEmbed / mcp-server-qdrant, Qdrant's multimodal tutorial, or unknown), its "
        "vectors, where images and texts sit, whether the stored vectors come from the "
        "model (re-encoding the sample, per modality), and which hits can be explained: "
        "from stored features, from the sidecar COLLECTION__xai, or on demand.",
    )
    parser.add_argument("collection", metavar="COLLECTION", help="the collection to inspect")
    parser.add_argument(
        "--sample",
        type=options.positive_int,
        default=_SAMPLE,
        metavar="N",
        help=f"points to look at (default: {_SAMPLE})",
    )
    parser.add_argument(
        "--sidecar",
        metavar="NAME",
        default=None,
        help="the collection holding the features of this one's points (default: "
        "COLLECTION__xai, when it exists)",
    )
    parser.add_argument(
        "--no-model",
        action="store_true",
        help="load no model: do not compare the stored vectors with re-encodings",
    )
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model that may have written the vectors (hub id, folder or 'shapes'; "
        "repeatable): each is loaded in turn, re-encodes the sampled images and texts, and "
        "the report gives its cosine with the stored vectors and the candidate that "
        "reproduces them (median cosine >= 0.98), or that none does. With --candidate and "
        "no --model, no other model is loaded",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    options.add_layout_option(parser)
    options.add_source_options(parser)
    options.add_qdrant_options(parser, collection_option=False)


def run(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.storage.detect import inspect_collection
    from qdrant_xai.storage.schema import require_collection

    retry = options.retry_policy(args)
    require_collection(client, args.collection, retry=retry)  # before loading a model
    encoder, note = None, None
    if not args.no_model and not (args.candidate and args.model is None):
        try:
            encoder = options.load_encoder(args, client)
        except QdrantXaiError as exc:
            note = f"no model loaded (pass --model), stored vectors not compared: {exc}"
    report = inspect_collection(
        client,
        args.collection,
        encoder=encoder,
        sources=options.source_policy(args),
        sidecar=args.sidecar,
        sample=args.sample,
        layout=options.layout_from_args(args),
        retry=retry,
        candidates=args.candidate,
        load_candidate=lambda name: options.load_candidate(args, name),
    )
    if note is not None:
        report = replace(report, notes=(*report.notes, note))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0
