"""The ``qdrant-xai`` command line: index, search, explain, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qdrant_xai.encoding.checkpoints import DEFAULT_MODEL
from qdrant_xai.errors import QdrantUnavailableError, QdrantXaiError
from qdrant_xai.storage.schema import parse_point_id, recorded_model

__all__ = ["main"]

DEFAULT_COLLECTION = "qdrant_xai"
DEFAULT_PATH = "./qdrant_data"

_EPILOG = f"""\
Qdrant: embedded at --path (default {DEFAULT_PATH}) unless --url or QDRANT_URL is set; the
API key is read from QDRANT_API_KEY. Requests to a server are retried with backoff when it
is unreachable or busy (--retries, --timeout); the API key is never printed. --model takes a
Hugging Face hub id (weights download on first use), a directory saved with save_pretrained,
or "shapes" for the bundled demo model.

examples:
  qdrant-xai demo
  qdrant-xai index photos/ --captions photos/captions.csv --collection photos
  qdrant-xai search "a dog on a beach" --collection photos --explain --html report.html
  qdrant-xai search --image query.jpg --collection photos --explain --json
  qdrant-xai search "a red car" --collection photos --explain --method grad-eclip \\
      --grounding --rationales --image-root photos/
  qdrant-xai explain 1b9d6bcd-bbfd-5b2d-9b5d-ab8dfbbd4bed --text "a dog" --collection photos
  qdrant-xai backfill --collection products --layout langchain --image-root /data/images
  qdrant-xai eval Flickr8k/ --split test --model openai/clip-vit-base-patch32 --json eval.json
"""


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("qdrant and model")
    group.add_argument(
        "--collection",
        default=DEFAULT_COLLECTION,
        help=f"collection name (default: {DEFAULT_COLLECTION})",
    )
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--path", default=None, help=f"embedded Qdrant folder (default: {DEFAULT_PATH})"
    )
    where.add_argument(
        "--url",
        default=os.environ.get("QDRANT_URL"),
        help="Qdrant server URL (default: $QDRANT_URL)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds per Qdrant server request (default: qdrant-client's, 5)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=5,
        metavar="N",
        help="attempts per Qdrant request when the server is unreachable, times out or "
        "answers 408/429/5xx, with exponential backoff (default: 5; 1: no retry)",
    )
    group.add_argument(
        "--model",
        default=None,
        help=f"CLIP hub id or directory (default: {DEFAULT_MODEL}, or for search "
        "and explain the model recorded in the collection)",
    )
    group.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    group.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per hit and line (id, score, payload "
        "without features, heatmap, words as [word, score, [start, end]])",
    )
    parser.add_argument("--html", metavar="PATH", help="write an HTML report to PATH")
    _sources(parser)
    from qdrant_xai.explain import HEATMAP_METHODS, WORD_METHODS

    methods = parser.add_argument_group("explanation methods")
    methods.add_argument(
        "--heatmap-method",
        "--method",
        dest="heatmap_method",
        default="decomposition",
        choices=sorted(HEATMAP_METHODS),
        help="heatmap method (default: decomposition, from stored features; grad-eclip and "
        "gae run from stored features with --profile full, else they read the image)",
    )
    methods.add_argument(
        "--word-method",
        default="occlusion",
        choices=sorted(WORD_METHODS),
        help="word attribution method (default: occlusion)",
    )
    methods.add_argument(
        "--grounding",
        action="store_true",
        help="add word-to-region grounding (one map per content word)",
    )
    methods.add_argument(
        "--rationales",
        action="store_true",
        help="add the top concepts that explain each match (zero-shot, ECOR prompts)",
    )
    methods.add_argument(
        "--concept",
        action="append",
        dest="concepts",
        default=[],
        metavar="TEXT",
        help="a rationale concept of your own, added to the default vocabulary; repeatable "
        "(implies --rationales)",
    )


def _sources(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reading images named in payloads (untrusted input)")
    group.add_argument(
        "--image-root",
        action="append",
        default=[],
        metavar="DIR",
        help="folder from which local images named in payloads may be read (to recompute "
        "missing features, or for methods that need pixels); repeatable",
    )
    group.add_argument(
        "--allow-url-host",
        action="append",
        default=[],
        metavar="HOST",
        help="fetch https image URLs from HOST (exact name or *.example.org); repeatable. "
        "URLs are never fetched otherwise; private and loopback addresses are refused",
    )
    group.add_argument(
        "--allow-http",
        action="store_true",
        help="also fetch plain http URLs (with --allow-url-host)",
    )


def _policy(args: argparse.Namespace) -> Any:
    from qdrant_xai.images.policy import ImageSourcePolicy

    return ImageSourcePolicy.from_settings(
        roots=list(args.image_root),
        allow_urls=bool(args.allow_url_host),
        allowed_hosts=list(args.allow_url_host),
        url_schemes=["https", "http"] if args.allow_http else ["https"],
    )


def _layout(parser: argparse.ArgumentParser) -> None:
    from qdrant_xai.storage.layouts import LAYOUTS

    parser.add_argument(
        "--layout",
        default="qdrant-xai",
        choices=list(LAYOUTS),
        help="how the collection stores vectors, image sources and texts: qdrant-xai (ours) "
        "or the layout of the tool that wrote it (default: qdrant-xai)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qdrant-xai",
        description="Explainable CLIP retrieval for Qdrant: index images and captions, "
        "search them, and see why each hit matched.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = sub.add_parser("index", help="index every image under DIR (and its captions)")
    index.add_argument("directory", metavar="DIR")
    index.add_argument("--captions", metavar="CSV", help="CSV with header image,caption")
    index.add_argument(
        "--codec",
        default="fp16",
        choices=["fp16", "int8"],
        help="payload codec of the stored features (default: fp16)",
    )
    index.add_argument(
        "--profile",
        default="standard",
        choices=["standard", "full"],
        help="stored features: standard (patch contributions) or full (also the last "
        "vision layer's input, so grad-eclip, gae and debiased need no image read; 2.5x the bytes)",
    )
    index.add_argument("--batch-size", type=int, default=16)
    index.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _common(index)

    search = sub.add_parser("search", help="search by text (or --image) and explain the hits")
    search.add_argument("text", nargs="?", help="text query")
    search.add_argument("--image", metavar="PATH", help="image query instead of text")
    search.add_argument(
        "--hit-kind",
        "--target",
        dest="hit_kind",
        choices=["image", "text"],
        default=None,
        help="kind of hits (default: images for a text query, texts for an image query)",
    )
    search.add_argument("--limit", type=int, default=5)
    search.add_argument("--explain", action="store_true", help="explain every hit")
    _layout(search)
    _output(search)
    _common(search)

    explain = sub.add_parser("explain", help="explain one point for a query")
    explain.add_argument("point_id", metavar="POINT_ID")
    query = explain.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="text query")
    query.add_argument("--image", metavar="PATH", help="image query")
    _layout(explain)
    _output(explain)
    _common(explain)

    backfill = sub.add_parser(
        "backfill",
        help="add explainable features to the points of an existing collection",
        description="Computes the features of existing points (written by qdrant-xai or by "
        "another tool, see --layout) and writes them with set_payload; vectors and the rest "
        "of the payload are left alone. Each point's stored vector is checked against the "
        "re-encoded one first. Resumable: points with current features are skipped.",
    )
    _layout(backfill)
    _sources(backfill)
    backfill.add_argument("--profile", default="standard", choices=["standard", "full"])
    backfill.add_argument("--codec", default="fp16", choices=["fp16", "int8"])
    backfill.add_argument("--batch-size", type=int, default=32)
    backfill.add_argument(
        "--max-points", type=int, default=None, metavar="N", help="stop after N points"
    )
    backfill.add_argument(
        "--no-verify",
        action="store_true",
        help="write features even where a stored vector disagrees with the model",
    )
    backfill.add_argument(
        "--repair",
        action="store_true",
        help="also rewrite points whose stored features are damaged or tampered with "
        "(reads every point's features)",
    )
    backfill.add_argument("--no-progress", action="store_true")
    _common(backfill)

    _eval_parser(sub)

    demo = sub.add_parser("demo", help="run the offline demo and write an HTML report")
    demo.add_argument("--out", default="qdrant-xai-demo", help="output folder")
    demo.add_argument(
        "--model", default=None, help="CLIP checkpoint (default: the bundled shapes model)"
    )
    demo.add_argument("--images", metavar="DIR", help="your own images instead of shapes")
    demo.add_argument("--captions", metavar="CSV", help="captions for --images")
    demo.add_argument(
        "--query",
        action="append",
        dest="queries",
        metavar="TEXT",
        help="text query; repeatable (default: shape queries, or the first captions of --captions)",
    )
    demo.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_transformers()
    _show_retries()
    # qdrant-client warns when its version probe gets no answer; a server that does not
    # answer is reported once, clearly, after the retries
    warnings.filterwarnings("ignore", "Failed to obtain server version", UserWarning)
    try:
        if args.command == "demo":
            return _demo(args)
        client = _client(args)
        try:
            if args.command == "index":
                return _index(args, client)
            if args.command == "search":
                return _search(args, client)
            if args.command == "backfill":
                return _backfill(args, client)
            if args.command == "eval":
                return _eval(args, client)
            return _explain(args, client)
        finally:
            client.close()
    except QdrantUnavailableError as exc:  # after the retries: one line, never the API key
        print(f"error: {_one_line(str(exc), os.environ.get('QDRANT_API_KEY'))}", file=sys.stderr)
        return 1
    except QdrantXaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ResponseHandlingException, UnexpectedResponse) as exc:
        from qdrant_xai.connection import strip_userinfo

        url = getattr(args, "url", None)
        where = strip_userinfo(url) if url and args.path is None else "embedded"
        message = f"the Qdrant request failed ({where}): {exc}"
        print(f"error: {_one_line(message, os.environ.get('QDRANT_API_KEY'))}", file=sys.stderr)
        return 1


def _one_line(message: str, secret: str | None = None) -> str:
    if secret:
        message = message.replace(secret, "***")
    return " ".join(message.split())


def _retry(args: argparse.Namespace) -> Any:
    from qdrant_xai.retry import RetryPolicy

    return RetryPolicy(attempts=max(1, getattr(args, "retries", 5)))


def _show_retries() -> None:
    """Prints each retry of a Qdrant request to stderr (``retrying: ...``), so a user
    waiting on a busy or restarting server sees why; the final error follows if they fail."""
    import logging

    class ToStderr(logging.Handler):  # the sys.stderr of the moment, not of the first call
        def emit(self, record: logging.LogRecord) -> None:
            print(f"retrying: {record.getMessage()}", file=sys.stderr)

    retries = logging.getLogger("qdrant_xai.retry")
    if not any(type(h).__name__ == "ToStderr" for h in retries.handlers):
        retries.addHandler(ToStderr())
    retries.setLevel(logging.INFO)


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _client(args: argparse.Namespace) -> Any:
    from qdrant_xai.connection import open_client

    if args.url and args.path is None:
        return open_client(args.url, api_key=os.environ.get("QDRANT_API_KEY"), timeout=args.timeout)
    # StorageLockedError when another process has the folder open
    return open_client(path=args.path or DEFAULT_PATH)


def _model_name(args: argparse.Namespace, client: Any = None) -> str:
    name = args.model
    if name is None and client is not None:
        name = recorded_model(client, args.collection, retry=_retry(args))
    return str(name) if name is not None else DEFAULT_MODEL


def _encoder(args: argparse.Namespace, client: Any = None) -> Any:
    from qdrant_xai.encoding.encoder import ClipEncoder

    return ClipEncoder.from_pretrained(
        _model_name(args, client), device=args.device, dtype=args.dtype, num_threads=args.threads
    )


def _index(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.storage.indexer import Indexer

    indexer = Indexer(
        client,
        _encoder(args),
        collection_name=args.collection,
        codec=args.codec,
        batch_size=args.batch_size,
        profile=args.profile,
        retry=_retry(args),
    )
    summary = indexer.index_folder(
        args.directory, captions=args.captions, progress=not args.no_progress
    )
    print(summary)
    return 0


def _search(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.search import Searcher

    if (args.text is None) == (args.image is None):
        raise QdrantXaiError("give either a text query or --image PATH (not both)")
    query = args.text if args.image is None else _image_query(args.image)
    hit_kind: Literal["image", "text"] = args.hit_kind or (
        "image" if args.image is None else "text"
    )
    encoder = _encoder(args, client)
    searcher = Searcher(
        client, encoder, collection_name=args.collection, layout=args.layout, retry=_retry(args)
    )
    hits = searcher.search(query, hit_kind=hit_kind, limit=args.limit)
    explanations = (
        _explainer(args, client, encoder).explain(query, hits, hit_kind=hit_kind)
        if args.explain
        else None
    )
    _print_hits(args, query, hits, explanations)
    return 0


def _backfill(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.storage.backfill import Backfiller
    from qdrant_xai.storage.schema import require_collection

    require_collection(client, args.collection, retry=_retry(args))
    backfiller = Backfiller(
        client,
        _encoder(args, client),
        collection_name=args.collection,
        layout=args.layout,
        sources=_policy(args),
        codec=args.codec,
        profile=args.profile,
        batch_size=args.batch_size,
        verify=not args.no_verify,
        retry=_retry(args),
        repair=args.repair,
    )
    summary = backfiller.run(progress=not args.no_progress, max_points=args.max_points)
    print(summary)
    return 0


def _explain(args: argparse.Namespace, client: Any) -> int:
    from qdrant_client import models

    from qdrant_xai.search import light_payload
    from qdrant_xai.storage.schema import check_query_dimension, require_collection

    retry = _retry(args)
    info = require_collection(client, args.collection, retry=retry)
    point_id = parse_point_id(args.point_id)
    records = retry.call(
        client.retrieve,
        args.collection,
        what=f"reading point {args.point_id} of {args.collection!r}",
        client=client,
        ids=[point_id],
        with_payload=light_payload(),
    )
    if not records:
        raise QdrantXaiError(f"no point {args.point_id} in collection {args.collection!r}")
    query = args.text if args.image is None else _image_query(args.image)
    encoder = _encoder(args, client)
    from qdrant_xai.storage.layouts import layout_named

    layout = layout_named(args.layout)
    if layout.name != "qdrant-xai":
        layout = layout.resolve(client, args.collection, retry=retry)
    payload = records[0].payload or {}
    kind = payload.get("xai_kind") or (
        "text" if layout.text(payload) and not layout.image_source(payload) else "image"
    )
    using = layout.using("image" if kind == "image" else "text")
    check_query_dimension(info, args.collection, using, dim=encoder.dim, model=encoder.model_id)
    vector = (
        encoder.embed_texts([query])[0]
        if isinstance(query, str)
        else encoder.embed_images([query])[0]
    )
    # score the point exactly as a search would, so the explanation carries its real score
    scored = retry.call(
        client.query_points,
        args.collection,
        what=f"scoring point {args.point_id} in {args.collection!r}",
        client=client,
        query=vector.tolist(),
        using=using,
        limit=1,
        query_filter=models.Filter(must=[models.HasIdCondition(has_id=[point_id])]),
        with_payload=light_payload(),
    ).points
    explanations = _explainer(args, client, encoder).explain(query, scored, hit_kind=kind)
    _print_hits(args, query, scored, explanations)
    return 0


def _image_query(path: str) -> Any:
    from qdrant_xai.images.load import load_image

    return load_image(Path(path))


def _explainer(args: argparse.Namespace, client: Any, encoder: Any) -> Any:
    from qdrant_xai.explain import Explainer, RationaleScorer

    rationales: bool | RationaleScorer = args.rationales
    if args.concepts:
        rationales = RationaleScorer(encoder, extra_concepts=args.concepts)
    return Explainer(
        encoder,
        client,
        collection_name=args.collection,
        sources=_policy(args),
        heatmap_method=args.heatmap_method,
        word_method=args.word_method,
        grounding=args.grounding,
        rationales=rationales,
        layout=args.layout,
        retry=_retry(args),
    )


def _print_hits(args: argparse.Namespace, query: Any, hits: list[Any], explanations: Any) -> None:
    from qdrant_xai.storage.schema import PayloadKeys

    if args.json:
        for rank, hit in enumerate(hits):
            if explanations is not None:
                record = explanations[rank].to_dict()
            else:
                payload = {
                    k: v for k, v in (hit.payload or {}).items() if k not in PayloadKeys.HEAVY
                }
                record = {
                    "id": hit.id,
                    "score": hit.score,
                    "rank": rank,
                    "payload": payload,
                    "heatmap": None,
                    "words": [],
                }
            print(json.dumps(record, ensure_ascii=False))
    else:
        for rank, hit in enumerate(hits):
            payload = hit.payload or {}
            label = payload.get(PayloadKeys.TEXT) or payload.get(PayloadKeys.SOURCE) or ""
            print(f"{rank + 1:>2}. {hit.score:.4f}  {hit.id}  {label}")
            if explanations is not None:
                e = explanations[rank]
                words = ", ".join(f"{w.word} {w.score:+.3f}" for w in e.top_words(3))
                if words:
                    print(f"      top words ({e.words_side}): {words}")
                if e.peak() is not None:
                    rows, cols = e.heatmap.shape
                    print(
                        f"      heatmap peak ({e.heatmap_side} image, {e.heatmap_method}): "
                        f"row {e.peak()[0]}, col {e.peak()[1]} of {rows}x{cols}"
                    )
                if e.grounding is not None and e.grounding.words:
                    where = "; ".join(
                        f"{w} at {r},{c}" for w, (r, c) in e.grounding.peaks().items()
                    )
                    print(f"      grounding: {where}")
                if e.rationales:
                    because = ", ".join(r.concept for r in e.rationales)
                    print(f"      because there is: {because}")
    if args.html and explanations is not None:
        from qdrant_xai.render import write_report

        report_query = query if isinstance(query, str) else query.image
        path = write_report(
            args.html, [(report_query, explanations)], subtitle=f"collection '{args.collection}'"
        )
        print(f"report: {path}", file=sys.stderr)
    elif args.html:
        print("--html needs --explain; no report written", file=sys.stderr)


def _eval_parser(sub: Any) -> None:
    from qdrant_xai.eval.retrieval import DEFAULT_CAP, FORMATS
    from qdrant_xai.explain import HEATMAP_METHODS, WORD_METHODS

    ev = sub.add_parser(
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
    ev.add_argument(
        "dataset",
        metavar="PATH",
        help="Flickr8k folder or token file, Karpathy split JSON (dataset_coco.json ...), "
        "or a CSV with header image,caption (or a folder holding one)",
    )
    ev.add_argument("--format", choices=FORMATS, default=None, help="default: detected")
    ev.add_argument(
        "--split",
        default=None,
        help="split to evaluate: test, val/dev, train, restval or all (default: test when the "
        "dataset has splits)",
    )
    ev.add_argument(
        "--max-images", type=int, default=None, metavar="N", help="first N images only (quick runs)"
    )
    ev.add_argument(
        "--images", metavar="DIR", help="image folder (default: found next to the captions)"
    )
    ev.add_argument(
        "--skip-missing", action="store_true", help="leave out images whose file is missing"
    )
    ev.add_argument("--json", metavar="OUT", help="write every figure as JSON to OUT")
    ev.add_argument(
        "--no-explain", action="store_true", help="skip the explained pass and invariance check"
    )
    ev.add_argument(
        "--explain-top", type=int, default=10, help="hits explained per query (default: 10)"
    )
    ev.add_argument(
        "--heatmap-method",
        "--method",
        dest="heatmap_method",
        default="decomposition",
        choices=sorted(HEATMAP_METHODS),
    )
    ev.add_argument("--word-method", default="occlusion", choices=sorted(WORD_METHODS))
    ev.add_argument(
        "--max-rank",
        type=int,
        default=DEFAULT_CAP,
        help="ranks counted per query (default: %(default)s); a relevant item beyond is a miss "
        "for R@K and ranks N+1 for the median",
    )
    ev.add_argument(
        "--approximate",
        action="store_true",
        help="search through the HNSW index as a deployment would (default: exact search)",
    )
    ev.add_argument(
        "--reindex",
        action="store_true",
        help="delete the dataset's points and index them again (default: reuse them)",
    )
    ev.add_argument("--codec", default="fp16", choices=["fp16", "int8"])
    ev.add_argument("--profile", default="standard", choices=["standard", "full"])
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _common(ev)
    ev.set_defaults(collection=None)
    for action in ev._actions:
        if action.dest == "collection":
            action.help = "collection name (default: xai_eval_<dataset name>)"


def _eval(args: argparse.Namespace, client: Any) -> int:
    from qdrant_xai.eval.retrieval import default_collection, evaluate, read_dataset

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
        _encoder(args, client),
        dataset,
        collection_name=args.collection,
        reuse=not args.reindex,
        explain=not args.no_explain,
        batch_size=args.batch_size,
        cap=args.max_rank,
        explain_top=args.explain_top,
        heatmap_method=args.heatmap_method,
        word_method=args.word_method,
        codec=args.codec,
        profile=args.profile,
        exact=not args.approximate,
        retry=_retry(args),
        progress=not args.no_progress,
    )
    print(report.format_table())
    if args.json:
        print(f"json: {report.write_json(args.json)}", file=sys.stderr)
    if report.invariance is not None and not report.invariance.invariant:
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from qdrant_xai.demo.run import run_demo

    result = run_demo(
        args.out,
        model=_model_name(args) if args.model else None,
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
        verdict = (
            {
                True: "; heatmap peak on the named shape",
                False: "; heatmap peak NOT on the named shape",
                None: "; the top hit does not show that shape",
            }[result.on_target.get(query)]
            if result.synthetic
            else ""
        )
        words = ", ".join(f"{w.word} {w.score:+.3f}" for w in top.top_words(2))
        print(
            f"{query!r}: top hit {Path(str(top.payload.get('source', ''))).name} "
            f"score {top.score:.3f}; top words {words}{verdict}"
        )
    if result.synthetic:
        hits = sum(v is True for v in result.on_target.values())
        print(f"pointing: {hits}/{len(result.on_target)} top-hit heatmaps on the named shape")
    if result.overlay:
        print(f"overlay: {result.overlay}")
    print(f"report: {result.report.resolve()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
