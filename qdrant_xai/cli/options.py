"""Options several subcommands share, and what is built from them.

Argument groups: Qdrant and model (:func:`add_qdrant_options`), reading images named in
payloads (:func:`add_source_options`), explanation methods (:func:`add_method_options`),
the collection's layout (:func:`add_layout_option`), output (:func:`add_output_options`),
stored features (:func:`add_codec_option`, :func:`add_profile_option`). Builders turn parsed
arguments into a Qdrant client, a retry policy, an image-source policy, an encoder and an
explainer.

Parsing imports only light modules (method and layout names are known without loading
them), so ``--help`` and argument errors answer at once; torch and transformers load inside
the builders, when a command is about to use a model.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import TYPE_CHECKING, Any, get_args

from qdrant_xai.encoding.checkpoints import DEFAULT_MODEL, quiet_transformers
from qdrant_xai.errors import brief_repr
from qdrant_xai.explain.base import HEATMAP_METHODS, WORD_METHODS
from qdrant_xai.storage.codec import Codec
from qdrant_xai.storage.layouts import AUTO, LAYOUTS
from qdrant_xai.storage.schema import PROFILES

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

    from qdrant_xai.encoding.encoder import ClipEncoder
    from qdrant_xai.explain.explainer import Explainer
    from qdrant_xai.images.load import LoadedImage
    from qdrant_xai.images.policy import ImageSourcePolicy
    from qdrant_xai.retry import RetryPolicy
    from qdrant_xai.storage.layouts import CollectionLayout

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_PATH",
    "add_codec_option",
    "add_hit_options",
    "add_layout_option",
    "add_method_choices",
    "add_method_options",
    "add_output_options",
    "add_profile_option",
    "add_qdrant_options",
    "add_source_options",
    "build_explainer",
    "check_device",
    "explainer_settings",
    "layout_from_args",
    "load_encoder",
    "open_qdrant",
    "positive_float",
    "positive_int",
    "read_query",
    "retry_policy",
    "source_policy",
]

DEFAULT_COLLECTION = "qdrant_xai"
DEFAULT_PATH = "./qdrant_data"

_CODECS = get_args(Codec)


# -- argument groups ----------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (counts, sizes, limits)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of at least 1, got {brief_repr(text)}"
        )
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (seconds)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {brief_repr(text)}")
    return value


def add_qdrant_options(
    parser: argparse.ArgumentParser,
    *,
    derived_collection: str | None = None,
    collection_option: bool = True,
) -> None:
    """The "qdrant and model" group. ``derived_collection`` describes the name a command
    derives when ``--collection`` is not given (it then defaults to ``None``);
    ``collection_option=False`` leaves ``--collection`` out (a command that takes the
    collection as an argument)."""
    group = parser.add_argument_group("qdrant and model")
    if collection_option:
        group.add_argument(
            "--collection",
            default=None if derived_collection else DEFAULT_COLLECTION,
            help=f"collection name (default: {derived_collection or DEFAULT_COLLECTION})",
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
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="seconds per Qdrant server request (default: qdrant-client's, 5)",
    )
    group.add_argument(
        "--retries",
        type=positive_int,
        default=5,
        metavar="N",
        help="attempts per Qdrant request when the server is unreachable, times out or "
        "answers 408/429/5xx, with exponential backoff (default: 5; 1: no retry)",
    )
    group.add_argument(
        "--model",
        default=None,
        help=f"CLIP hub id or directory (default: the model recorded in the collection, "
        f"for commands that read one, else {DEFAULT_MODEL})",
    )
    group.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    group.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="model weights' dtype (default: float32)",
    )
    group.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)"
    )


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """Where images named in payloads may be read from (see :func:`source_policy`)."""
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


def add_method_choices(
    container: argparse.ArgumentParser | argparse._ArgumentGroup, *, described: bool
) -> None:
    """``--heatmap-method`` (alias ``--method``) and ``--word-method``, with their help
    text when ``described``."""
    container.add_argument(
        "--heatmap-method",
        "--method",
        dest="heatmap_method",
        default="decomposition",
        choices=sorted(HEATMAP_METHODS),
        help="heatmap method (default: decomposition, from stored features; grad-eclip, "
        "gae-last and debiased run from stored features with --profile full, else they read "
        "the image; gae and clip-surgery always read it)"
        if described
        else None,
    )
    container.add_argument(
        "--word-method",
        default=None,
        choices=sorted(WORD_METHODS),
        help="word attribution method (default: prefix, from one text forward; tokens for "
        "SigLIP, whose text tower is not causal)"
        if described
        else None,
    )


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """The "explanation methods" group: methods, grounding, rationales."""
    methods = parser.add_argument_group("explanation methods")
    add_method_choices(methods, described=True)
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


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``--html`` (see :func:`qdrant_xai.cli.output.print_hits`)."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per hit and line (id, score, payload "
        "without features, heatmap, words as [word, score, [start, end]])",
    )
    parser.add_argument("--html", metavar="PATH", help="write an HTML report to PATH")


def add_layout_option(parser: argparse.ArgumentParser) -> None:
    """``--layout`` (a preset, or ``auto``) and the custom layout flags ``--vector``,
    ``--image-key``, ``--text-key``; :func:`layout_from_args` turns them into a layout."""
    group = parser.add_argument_group(
        "collection layout (where vectors, images and texts are; detected by default)"
    )
    group.add_argument(
        "--layout",
        default=AUTO,
        choices=[AUTO, *LAYOUTS],
        help="the tool that wrote the collection: auto (default) detects it from the "
        "collection (see `qdrant-xai inspect`); qdrant-xai, langchain, llamaindex, "
        "fastembed (also mcp-server-qdrant) or qdrant-tutorial name it",
    )
    group.add_argument(
        "--vector",
        metavar="NAME",
        default=None,
        help="custom layout: the vector every point is searched with ('' for the unnamed "
        "vector; default: the collection's only vector, or the --layout preset's)",
    )
    group.add_argument(
        "--image-key",
        action="append",
        default=[],
        metavar="KEY",
        help="custom layout: payload key of the image source (path, URL or base64), dotted "
        "for nested keys (metadata.image); repeatable, first found wins",
    )
    group.add_argument(
        "--text-key",
        action="append",
        default=[],
        metavar="KEY",
        help="custom layout: payload key of the text that was embedded, dotted for nested "
        "keys; repeatable, first found wins",
    )


def layout_from_args(args: argparse.Namespace) -> str | CollectionLayout:
    """The layout the options name: ``--layout`` (``"auto"`` or a preset) as given, or with
    ``--vector``, ``--image-key`` or ``--text-key`` a custom
    :class:`~qdrant_xai.storage.layouts.CollectionLayout` (on top of the ``--layout``
    preset, if one is named). A layout already built is returned as is.

    Raises:
        QdrantXaiError: a custom layout flag that cannot be used (an empty key).
    """
    layout = getattr(args, "layout", AUTO)
    vector = getattr(args, "vector", None)
    image_keys = list(getattr(args, "image_key", None) or [])
    text_keys = list(getattr(args, "text_key", None) or [])
    if not isinstance(layout, str) or (vector is None and not image_keys and not text_keys):
        return layout if layout is not None else AUTO
    from qdrant_xai.errors import QdrantXaiError
    from qdrant_xai.storage.layouts import custom_layout

    try:
        return custom_layout(vector=vector, image_keys=image_keys, text_keys=text_keys, base=layout)
    except ValueError as exc:
        raise QdrantXaiError(f"--vector/--image-key/--text-key: {exc}") from exc


def add_codec_option(parser: argparse.ArgumentParser, *, described: bool = False) -> None:
    parser.add_argument(
        "--codec",
        default="fp16",
        choices=list(_CODECS),
        help="payload codec of the stored features: fp16 (default), int8 (half of fp16) or "
        "svd (rank-20 factors of each map, 8 and 6 bits, a sixth of fp16 for ViT-B/32; lossy)"
        if described
        else None,
    )


def add_profile_option(parser: argparse.ArgumentParser, *, described: bool = False) -> None:
    parser.add_argument(
        "--profile",
        default="standard",
        choices=list(PROFILES),
        help="stored features: standard (patch contributions) or full (also the last "
        "vision layer's input, so grad-eclip, gae-last and debiased need no image read; 2.5x the "
        "bytes)"
        if described
        else None,
    )


def add_hit_options(parser: argparse.ArgumentParser) -> None:
    """What ``search`` and ``explain`` share: layout, output, image sources, methods."""
    add_layout_option(parser)
    add_output_options(parser)
    add_source_options(parser)
    add_method_options(parser)


# -- what the options build ---------------------------------------------------------------


def open_qdrant(args: argparse.Namespace) -> QdrantClient:
    """The server at ``--url`` (API key from ``QDRANT_API_KEY``), else the embedded folder
    at ``--path``; :class:`~qdrant_xai.StorageLockedError` when another process holds it."""
    from qdrant_xai.connection import open_client

    if args.url and args.path is None:
        return open_client(args.url, api_key=os.environ.get("QDRANT_API_KEY"), timeout=args.timeout)
    return open_client(path=args.path or DEFAULT_PATH)


def retry_policy(args: argparse.Namespace) -> RetryPolicy:
    from qdrant_xai.retry import RetryPolicy

    return RetryPolicy(attempts=max(1, args.retries))


def source_policy(args: argparse.Namespace) -> ImageSourcePolicy:
    from qdrant_xai.images.policy import ImageSourcePolicy

    return ImageSourcePolicy.from_settings(
        roots=list(args.image_root),
        allow_urls=bool(args.allow_url_host),
        allowed_hosts=list(args.allow_url_host),
        url_schemes=["https", "http"] if args.allow_http else ["https"],
    )


def load_encoder(args: argparse.Namespace, client: Any = None) -> ClipEncoder:
    """The CLIP encoder of ``--model``, else of the model recorded in the collection (with
    a client), else the default model; on ``--device`` in ``--dtype``."""
    quiet_transformers()
    from qdrant_xai.encoding.encoder import ClipEncoder
    from qdrant_xai.storage.schema import choose_model

    check_device(args.device)  # before reading the collection or loading weights
    name = choose_model(args.model, client, args.collection, retry=retry_policy(args))
    return ClipEncoder.from_pretrained(
        name, device=args.device, dtype=args.dtype, num_threads=args.threads
    )


def load_candidate(args: argparse.Namespace, name: str) -> ClipEncoder:
    """The encoder of one ``inspect --candidate``, on ``--device`` in ``--dtype``."""
    quiet_transformers()
    from qdrant_xai.encoding.encoder import ClipEncoder

    return ClipEncoder.from_pretrained(
        name, device=args.device, dtype=args.dtype, num_threads=args.threads
    )


def check_device(device: str) -> None:
    """Refuses a ``--device`` this torch cannot use (not a device name, CUDA on a CPU-only
    torch, a GPU index past the last), naming the devices that are available.

    Raises:
        DeviceUnavailableError: with what to pass instead.
    """
    import torch

    from qdrant_xai.errors import DeviceUnavailableError

    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.append("mps")
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise DeviceUnavailableError(
            f"--device {brief_repr(device)} is not a torch device; use one of "
            f"{', '.join(available)}"
        ) from exc
    usable = (
        kind.type == "cpu"
        or (kind.type == "cuda" and (kind.index or 0) < torch.cuda.device_count())
        or (kind.type == "mps" and "mps" in available)
        or _backend_available(torch, kind.type)  # xpu and other accelerators
    )
    if not usable:
        raise DeviceUnavailableError(
            f"--device {brief_repr(device)} is not available with this torch "
            f"({torch.__version__}); use one of {', '.join(available)}"
        )


def _backend_available(torch: Any, kind: str) -> bool:
    if kind in ("cpu", "cuda", "mps"):
        return False
    try:
        return bool(getattr(torch, kind).is_available())
    except Exception:  # no such backend module, or it cannot tell
        return False


def read_query(args: argparse.Namespace) -> str | LoadedImage:
    """The text query, or the image ``--image`` gives (a path, a data URI or base64)."""
    if args.image is None:
        return args.text
    from qdrant_xai.images.query import load_query_image

    # the user's own input: any local path, a data URI or raw base64 (as the adapters take)
    return load_query_image(args.image)


def build_explainer(args: argparse.Namespace, client: Any, encoder: ClipEncoder) -> Explainer:
    """An explainer with the methods, grounding, rationales and sources of the options."""
    from qdrant_xai.explain.explainer import Explainer

    return Explainer(
        encoder, client, collection_name=args.collection, **explainer_settings(args, encoder)
    )


def explainer_settings(args: argparse.Namespace, encoder: ClipEncoder) -> dict[str, Any]:
    """The :class:`~qdrant_xai.explain.explainer.Explainer` keywords the options give:
    methods, grounding, rationales (with ``--concept``), image sources, layout, retries."""
    from qdrant_xai.explain.rationales import RationaleScorer

    rationales: bool | RationaleScorer = args.rationales
    if args.concepts:
        rationales = RationaleScorer(encoder, extra_concepts=args.concepts)
    return {
        "sources": source_policy(args),
        "heatmap_method": args.heatmap_method,
        "word_method": args.word_method,
        "grounding": args.grounding,
        "rationales": rationales,
        "layout": layout_from_args(args),
        "retry": retry_policy(args),
    }
