"""``qdrant-xai serve``: the explorer in a browser and a JSON API, with the model loaded once."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from qdrant_xai.cli import options

__all__ = ["NEEDS_CLIENT", "add_parser", "run"]

NEEDS_CLIENT = True

_MISSING = (
    "qdrant-xai serve needs the serve extra: pip install 'qdrant-xai[serve]' "
    "(FastAPI, uvicorn and python-multipart)"
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="open the explorer in a browser and a JSON API (model loaded once)",
        description="Serves a browser UI (search box, image drop zone, hits with their "
        "heatmaps, a method switcher, word grounding on hover, rationales) and a JSON API "
        "(GET /api/search?q=TEXT&explain=true, POST /api/search with an image, POST "
        "/api/explain, GET /api/points/ID/overlay.png?query=TEXT, GET /api/collections; "
        "OpenAPI at /api/openapi.json). Listens on loopback unless --host says otherwise, "
        "and reads images only under --image-root (and --allow-url-host). Needs the serve "
        "extra: pip install 'qdrant-xai[serve]'.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=options.positive_int, default=8000, help="port (default: 8000)"
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host header to accept besides the listening address and localhost (e.g. "
        "the server's DNS name behind a proxy); repeatable. Others get 400 (DNS rebinding)",
    )
    options.add_layout_option(parser)
    options.add_source_options(parser)
    options.add_method_options(parser)
    options.add_qdrant_options(parser)


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The ``Host`` values the server accepts: loopback names, the listening address
    (any host when it listens on every interface and no name is given), and ``extra``."""
    names = ["127.0.0.1", "localhost", "[::1]", *extra]
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return [*names, host]
    if address.is_unspecified:
        return names if extra else ["*"]
    return [*names, f"[{address}]" if address.version == 6 else str(address)]


def run(args: argparse.Namespace, client: Any) -> int:
    try:
        import uvicorn

        from qdrant_xai.serve.app import create_app
    except ImportError as exc:
        from qdrant_xai.errors import QdrantXaiError

        raise QdrantXaiError(f"{_MISSING}; missing: {exc.name}") from exc
    from qdrant_xai.serve.service import ExplainService
    from qdrant_xai.storage.schema import require_collection

    retry = options.retry_policy(args)
    require_collection(client, args.collection, retry=retry)  # before loading a model
    encoder = options.load_encoder(args, client)
    settings = options.explainer_settings(args, encoder)
    layout = settings.pop("layout")
    service = ExplainService(
        client, encoder, collection_name=args.collection, layout=layout, **settings
    )
    app = create_app(service, allowed_hosts=allowed_hosts(args.host, args.allow_host))
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"serving collection '{args.collection}' with model {encoder.model_id} at "
        f"http://{shown}:{args.port}/ (Ctrl-C stops)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
