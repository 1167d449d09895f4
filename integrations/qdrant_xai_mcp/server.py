"""The qdrant-xai MCP server: explainable CLIP search over Qdrant collections, as MCP tools.

This module holds the server and the command line; the tools (parameters, descriptions) are
registered by :mod:`qdrant_xai_mcp.tools`, the work of each tool is
:class:`~qdrant_xai_mcp.backend.XaiBackend`'s, and what the tools return is in
:mod:`qdrant_xai_mcp.results`.

Tools (all read-only unless noted):

- ``search_images``: text query -> image hits, each with a one-line explanation (the query
  words that raised the match, the image region that matched best), or why it has none.
- ``search_texts``: image query (a path under the allowed image folders, or base64 / a data
  URI) -> text hits (captions), each with the words of the hit that match the image.
- ``explain_hit``: one point id + a text or image query -> the heatmap overlay as a PNG
  image block, and the word attributions as text.
- ``index_images`` (only when ``QDRANT_READ_ONLY=false``): index a folder of images (and
  its ``captions.csv``) under the allowed image folders.

As in mcp-server-qdrant, every tool takes a ``collection_name`` argument unless
``COLLECTION_NAME`` is set (then the argument is not offered), and the search tools take a
``query_filter`` argument when ``QDRANT_ALLOW_ARBITRARY_FILTER=true``.

Run it with ``qdrant-xai-mcp`` (stdio, for desktop clients), ``qdrant-xai-mcp --transport
streamable-http --port 8000`` (endpoint ``/mcp``) or ``--transport sse`` (endpoint ``/sse``);
configuration comes from environment variables, see :mod:`qdrant_xai_mcp.settings`. In
Python::

    from qdrant_xai_mcp import ServerSettings, create_server
    server = create_server(ServerSettings.from_env())
    server.serve("stdio")

The server runs on the MCP Python SDK 1.x (``mcp>=1.10``, the versions mcp-server-qdrant
allows) and 2.x; :mod:`qdrant_xai_mcp._sdk` holds what differs between them.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace

from qdrant_client import QdrantClient

from qdrant_xai import __version__
from qdrant_xai.connection import open_client as _open_client
from qdrant_xai.encoding.checkpoints import quiet_transformers
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import QdrantXaiError
from qdrant_xai.retry import RetryPolicy
from qdrant_xai_mcp._sdk import (
    TRANSPORTS,
    ServerBase,
    Transport,
    quiet_construction,
    run_server,
    server_options,
)
from qdrant_xai_mcp.backend import XaiBackend
from qdrant_xai_mcp.results import Hit, Region, SearchResult, WordScore
from qdrant_xai_mcp.settings import ENV_VARS, ServerSettings, SettingsError
from qdrant_xai_mcp.tools import register_tools

__all__ = [
    "Hit",
    "QdrantXaiMCPServer",
    "Region",
    "SearchResult",
    "WordScore",
    "XaiBackend",
    "build_parser",
    "create_server",
    "main",
    "open_client",
]

# -- the MCP server -----------------------------------------------------------------------


class QdrantXaiMCPServer(ServerBase):
    """An MCP server with the qdrant-xai tools.

    Setup::

        from qdrant_xai_mcp import ServerSettings, create_server
        server = create_server(ServerSettings(collection_name="photos",
                                              local_path="./qdrant_data"))

    Use::

        server.serve("stdio")                # or "sse", "streamable-http" (settings.sdk: host...)
        async with mcp.client.Client(server) as client:          # in tests (SDK 2.x)
            await client.call_tool("search_images", {"query": "a red car"})

    Attributes:
        backend: the :class:`XaiBackend` doing the work (client, encoder, settings).
    """

    def __init__(self, backend: XaiBackend, *, owns_client: bool = False) -> None:
        settings = backend.settings
        where = (
            f"the Qdrant collection {settings.collection_name!r}"
            if settings.collection_name
            else "the Qdrant collection each call names (collection_name)"
        )
        with quiet_construction():
            super().__init__(
                "qdrant-xai",
                instructions=(
                    f"Explainable CLIP search over {where}, of images and texts. search_images "
                    "finds images for a description, search_texts finds captions for an image, "
                    "explain_hit shows why one hit matched (heatmap PNG and word attributions). "
                    "Scores are cosine similarities; explanations never change the hits or their "
                    "order. A hit that could not be explained says why (status 'failed')."
                ),
                **server_options(
                    settings.sdk, title="qdrant-xai: explainable image search", version=__version__
                ),
            )
        self.backend = backend
        self._owns_client = owns_client
        register_tools(self, backend)

    def serve(self, transport: Transport = "stdio") -> None:
        """Runs the server on ``transport`` (``stdio``, ``sse`` or ``streamable-http``, on the
        host, port and paths of ``settings.sdk``) until it stops; on either SDK version."""
        settings = self.backend.settings
        run_server(self, transport, settings.sdk, max_request_bytes=settings.max_request_bytes)

    def close(self) -> None:
        """Closes the Qdrant client if the server opened it."""
        if self._owns_client:
            self.backend.client.close()


def create_server(
    settings: ServerSettings | None = None,
    *,
    client: QdrantClient | None = None,
    encoder: ClipEncoder | None = None,
    retry: RetryPolicy | None = None,
) -> QdrantXaiMCPServer:
    """The MCP server for ``settings`` (default: :meth:`ServerSettings.from_env`).

    Args:
        settings: what to serve; its ``url``/``local_path`` are used only without ``client``.
        client: a Qdrant client to use (you close it); default: one opened from
            ``settings`` (closed by :meth:`QdrantXaiMCPServer.close`).
        encoder: the CLIP encoder; default: loaded on the first tool call.
        retry: how Qdrant calls are retried (default :class:`~qdrant_xai.RetryPolicy`).
    """
    settings = settings or ServerSettings.from_env()
    owns = client is None
    backend = XaiBackend(settings, client or open_client(settings), encoder, retry=retry)
    return QdrantXaiMCPServer(backend, owns_client=owns)


def open_client(settings: ServerSettings) -> QdrantClient:
    """A Qdrant client for the settings' ``url`` (with its API key) or ``local_path``.

    Raises:
        StorageLockedError: another process has the ``local_path`` folder open.
    """
    if settings.url:
        return _open_client(settings.url, api_key=settings.api_key)
    if not settings.local_path:
        raise SettingsError("set QDRANT_URL (a Qdrant server) or QDRANT_LOCAL_PATH (a folder)")
    return _open_client(path=str(settings.local_path))


# -- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    env = "\n".join(f"  {name:<30} {meaning}" for name, meaning in ENV_VARS.items())
    parser = argparse.ArgumentParser(
        prog="qdrant-xai-mcp",
        description="MCP server of qdrant-xai: explainable CLIP image/text search over Qdrant "
        "collections (tools: search_images, search_texts, explain_hit, and index_images when "
        "not read-only). Configured like mcp-server-qdrant, by environment variables; its "
        "variables this server cannot honour are refused at start, with what to set instead.",
        epilog=f"configuration (environment variables):\n{env}\n\n"
        "examples (a desktop client's config runs the first over stdio):\n"
        "  QDRANT_LOCAL_PATH=./qdrant_data QDRANT_XAI_IMAGE_ROOTS=./photos qdrant-xai-mcp\n"
        "  QDRANT_URL=http://localhost:6333 COLLECTION_NAME=photos \\\n"
        "  qdrant-xai-mcp --transport streamable-http --port 8000   # http://HOST:PORT/mcp\n"
        "  QDRANT_URL=http://localhost:6333 qdrant-xai-mcp --transport sse   # .../sse",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="stdio",
        help="stdio (default; the client starts the server), sse or streamable-http (the "
        "server listens on --host/--port)",
    )
    parser.add_argument(
        "--host",
        default=None,
        help="bind address of sse/streamable-http (default: FASTMCP_HOST, else 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port of sse/streamable-http (default: FASTMCP_PORT, else 8000)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``qdrant-xai-mcp``."""
    args = build_parser().parse_args(argv)
    try:
        settings = ServerSettings.from_env()
    except SettingsError as exc:
        print(f"qdrant-xai-mcp: configuration error: {exc}", file=sys.stderr)
        return 2
    listen = {"host": args.host, "port": args.port}
    settings = replace(
        settings, sdk=replace(settings.sdk, **{k: v for k, v in listen.items() if v is not None})
    )
    quiet_transformers()
    try:
        server = create_server(settings)
    except QdrantXaiError as exc:
        print(f"qdrant-xai-mcp: {exc}", file=sys.stderr)
        return 1
    # stdout belongs to the protocol on stdio: everything else goes to stderr
    print(f"qdrant-xai-mcp: serving {settings.describe()}", file=sys.stderr)
    if args.transport != "stdio":
        sdk = settings.sdk
        path = sdk.sse_path if args.transport == "sse" else sdk.streamable_http_path
        print(
            f"qdrant-xai-mcp: {args.transport} on http://{sdk.host}:{sdk.port}{path}",
            file=sys.stderr,
        )
    # load the model while the client connects; a failure is reported by the first tool call
    threading.Thread(target=_preload, args=(server.backend,), daemon=True).start()
    try:
        server.serve(args.transport)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _preload(backend: XaiBackend) -> None:
    """Loads the model before the first call when it is known: named by the settings, or
    recorded in the configured collection (without either, the first call names it)."""
    name = backend.collection_name
    try:  # a tool call meanwhile waits for this load (XaiBackend.encoder loads once)
        if backend.settings.model or (
            name is not None
            and backend.retry.call(
                backend.client.collection_exists,
                name,
                what=f"reading collection {name!r}",
                client=backend.client,
            )
        ):
            backend.encoder()
    except Exception as exc:  # reported again, as a tool error, when a tool needs the model
        print(f"qdrant-xai-mcp: could not load the model yet: {exc}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
