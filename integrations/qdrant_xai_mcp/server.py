"""The qdrant-xai MCP server: explainable CLIP search over a Qdrant collection, as MCP tools.

This module registers the tools (their parameters, descriptions and annotations) and holds
the command line; the work of each tool is :class:`~qdrant_xai_mcp.backend.XaiBackend`'s,
and what the tools return is in :mod:`qdrant_xai_mcp.results`.

Tools (all read-only unless noted):

- ``search_images``: text query -> image hits, each with a one-line explanation (the query
  words that raised the match, the image region that matched best).
- ``search_texts``: image query (a path under the allowed image folders, or base64 / a data
  URI) -> text hits (captions), each with the words of the hit that match the image.
- ``explain_hit``: one point id + a text or image query -> the heatmap overlay as a PNG
  image block, and the word attributions as text.
- ``index_images`` (only when ``QDRANT_READ_ONLY=false``): index a folder of images (and
  its ``captions.csv``) under the allowed image folders.

Run it with ``qdrant-xai-mcp`` (stdio, for desktop clients) or ``qdrant-xai-mcp --transport
streamable-http --port 8000``; configuration comes from environment variables, see
:mod:`qdrant_xai_mcp.settings`. In Python::

    from qdrant_xai_mcp import ServerSettings, create_server
    server = create_server(ServerSettings.from_env())
    server.run("stdio")

SDK compatibility: this module is written against the MCP Python SDK 2.x
(``mcp.server.mcpserver.MCPServer``, tested with 2.3). The 1.x names differ:
``FastMCP`` (``mcp.server.fastmcp``) was renamed ``MCPServer``; ``host``/``port`` moved
from the 1.x constructor to ``run(transport="streamable-http", host=..., port=...)``; sync
tools run on worker threads in 2.x (ours are ``async`` and offload explicitly, so both
behave alike); 2.x hides the message of an unexpected tool exception ("Error executing
tool ..."), so every qdrant-xai error is re-raised as ``ToolError`` with its message; and
the in-process test helper ``mcp.shared.memory.create_connected_server_and_client_session``
became ``mcp.client.Client(server)``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import anyio
from pydantic import Field
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

try:
    from mcp.server.mcpserver import Image, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import TextContent, ToolAnnotations
except ImportError as exc:  # pragma: no cover - depends on the installed extra
    raise ImportError(
        "qdrant_xai_mcp needs the MCP Python SDK 2.x (mcp.server.mcpserver); install it with "
        "pip install 'qdrant-xai[mcp]' (mcp>=2.0). SDK 1.x (mcp.server.fastmcp) is not supported"
    ) from exc

from qdrant_xai import __version__
from qdrant_xai.connection import open_client as _open_client
from qdrant_xai.connection import redact
from qdrant_xai.encoding.checkpoints import quiet_transformers
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import QdrantXaiError
from qdrant_xai.explain import HEATMAP_METHODS
from qdrant_xai.retry import RetryPolicy
from qdrant_xai_mcp.backend import XaiBackend, with_mcp_hint
from qdrant_xai_mcp.results import Hit, Region, SearchResult, WordScore
from qdrant_xai_mcp.settings import ENV_VARS, MAX_SEARCH_LIMIT, ServerSettings, SettingsError

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

_T = TypeVar("_T")

# -- the MCP server -----------------------------------------------------------------------

# Tool parameters (module level: the SDK evaluates the annotations in this module's globals)
QueryText = Annotated[str, Field(description="what the images should show, written like a caption")]
OptionalText = Annotated[str | None, Field(description="a text query")]
Limit = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_SEARCH_LIMIT,
        description="number of hits, best first (default: the server's QDRANT_SEARCH_LIMIT)",
    ),
]
ImagePath = Annotated[
    str | None,
    Field(description="path of an image file on the server, under the allowed image folders"),
]
ImageBase64 = Annotated[
    str | None,
    Field(description="an image as base64-encoded PNG/JPEG bytes, or a data:image/...;base64 URI"),
]
PointId = Annotated[
    str | int, Field(description="id of the point, as returned by search_images/search_texts")
]
HeatmapMethodName = Annotated[
    str,
    Field(
        description="heatmap method: 'decomposition' (default; from stored features, fast) "
        f"or one of {', '.join(repr(m) for m in sorted(HEATMAP_METHODS) if m != 'decomposition')} "
        "(slower; some read the hit's image)"
    ),
]
Folder = Annotated[str, Field(description="folder on the server, under the allowed image folders")]
CaptionsCsv = Annotated[
    str | None,
    Field(description="CSV with columns image,caption (default: captions.csv in the folder)"),
]

_SEARCH_IMAGES = """\
Search the image collection by a text description and get the best-matching images, best
first. Each hit has its id, cosine score (higher = closer), source path, payload, and a short
explanation: which words of your query raised the match most, and where in the image the
match is strongest (e.g. 'top-left'). Use explain_hit with a hit's id to see its heatmap.
Write the query as a caption would describe the picture (e.g. 'a red circle next to a blue
square'), not as a question."""

_SEARCH_TEXTS = """\
Search the collection's texts (image captions and standalone texts) with an image, and get
the texts that best describe it, best first. Give the image either as image_path (a file on
the server, under the folders the server may read) or as image_base64 (base64 PNG/JPEG bytes
or a data: URI) - exactly one. Each hit has its id, score, text, and a short explanation:
which words of the text match the image, and which region of your image matched best."""

_EXPLAIN_HIT = """\
Explain why one point of the collection matches a query. Give the point's id (from
search_images or search_texts) and exactly one query: query_text, query_image_path or
query_image_base64. Returns the explanation as text (score, word attributions: positive
words raised the similarity, negative lowered it) and, when the pair has an image, a PNG of
the heatmap over that image (bright = the region that raised the match). The hit's score and
rank are never changed. heatmap_method picks the heatmap method; keep the default unless
asked."""

_INDEX_IMAGES = """\
Index every image under a folder on the server (recursively) into the collection, with
captions from a CSV (columns image,caption; default: captions.csv in the folder, if present).
The folder must be under the folders the server may read. Points already indexed with this
model are skipped, so re-running is cheap. Large folders take a while (one CLIP pass per
image)."""


class QdrantXaiMCPServer(MCPServer[Any]):
    """An MCP server with the qdrant-xai tools.

    Setup::

        from qdrant_xai_mcp import ServerSettings, create_server
        server = create_server(ServerSettings(collection_name="photos",
                                              local_path="./qdrant_data"))

    Use::

        server.run("stdio")                                   # or in tests:
        async with mcp.client.Client(server) as client:
            await client.call_tool("search_images", {"query": "a red car"})

    Attributes:
        backend: the :class:`XaiBackend` doing the work (client, encoder, settings).
    """

    def __init__(self, backend: XaiBackend, *, owns_client: bool = False) -> None:
        settings = backend.settings
        super().__init__(
            "qdrant-xai",
            title="qdrant-xai: explainable image search",
            instructions=(
                f"Explainable CLIP search over the Qdrant collection {settings.collection_name!r} "
                "of images and captions. search_images finds images for a description, "
                "search_texts finds captions for an image, explain_hit shows why one hit "
                "matched (heatmap PNG and word attributions). Scores are cosine "
                "similarities; explanations never change the hits or their order."
            ),
            version=__version__,
            # the SDK configures root logging at this level (on stderr); INFO would log
            # every HTTP request to a Qdrant server
            log_level="WARNING",
        )
        self.backend = backend
        self._owns_client = owns_client
        _register_tools(self, backend)

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


def _register_tools(server: MCPServer[Any], backend: XaiBackend) -> None:
    def hidden(message: str) -> str:  # never the API key, whoever wrote it into a message
        return redact(message, backend.client, (backend.settings.api_key,))

    async def call(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        def locked() -> _T:
            with backend.lock:
                return fn(*args, **kwargs)

        try:
            return await anyio.to_thread.run_sync(locked)
        except QdrantXaiError as exc:
            raise ToolError(hidden(with_mcp_hint(exc))) from exc
        except (UnexpectedResponse, ResponseHandlingException) as exc:
            raise ToolError(hidden(f"the Qdrant request failed: {exc}")) from exc

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    async def search_images(query: QueryText, limit: Limit = None) -> SearchResult:
        return await call(backend.search_images, query, limit)

    async def search_texts(
        image_path: ImagePath = None, image_base64: ImageBase64 = None, limit: Limit = None
    ) -> SearchResult:
        return await call(backend.search_texts, image_path, image_base64, limit)

    async def explain_hit(
        point_id: PointId,
        query_text: OptionalText = None,
        query_image_path: ImagePath = None,
        query_image_base64: ImageBase64 = None,
        heatmap_method: HeatmapMethodName = "decomposition",
    ) -> list[TextContent | Image]:
        text, png = await call(
            backend.explain_hit,
            point_id,
            query_text=query_text,
            query_image_path=query_image_path,
            query_image_base64=query_image_base64,
            heatmap_method=heatmap_method,
        )
        content: list[TextContent | Image] = [TextContent(type="text", text=text)]
        if png is not None:
            content.append(Image(data=png, format="png"))
        return content

    server.add_tool(
        search_images,
        title="Search images by text",
        description=_SEARCH_IMAGES,
        annotations=read_only,
    )
    server.add_tool(
        search_texts,
        title="Search captions by image",
        description=_SEARCH_TEXTS,
        annotations=read_only,
    )
    server.add_tool(
        explain_hit,
        title="Explain one hit",
        description=_EXPLAIN_HIT,
        annotations=read_only,
        structured_output=False,
    )
    if backend.settings.read_only:
        return

    async def index_images(folder: Folder, captions_csv: CaptionsCsv = None) -> str:
        return await call(backend.index_images, folder, captions_csv)

    server.add_tool(
        index_images,
        title="Index a folder of images",
        description=_INDEX_IMAGES,
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
        structured_output=False,
    )


# -- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    env = "\n".join(f"  {name:<24} {meaning}" for name, meaning in ENV_VARS.items())
    parser = argparse.ArgumentParser(
        prog="qdrant-xai-mcp",
        description="MCP server of qdrant-xai: explainable CLIP image/text search over a "
        "Qdrant collection (tools: search_images, search_texts, explain_hit, and "
        "index_images when not read-only).",
        epilog=f"configuration (environment variables):\n{env}\n\n"
        "example (a desktop client's config runs this over stdio):\n"
        "  QDRANT_LOCAL_PATH=./qdrant_data COLLECTION_NAME=photos \\\n"
        "  QDRANT_XAI_IMAGE_ROOTS=./photos qdrant-xai-mcp\n"
        "  QDRANT_URL=http://localhost:6333 COLLECTION_NAME=photos \\\n"
        "  qdrant-xai-mcp --transport streamable-http --port 8000   # http://HOST:PORT/mcp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--transport",
        choices=["stdio", "streamable-http"],
        default="stdio",
        help="stdio (default; the client starts the server) or streamable-http",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="streamable-http bind address (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="streamable-http port (default: 8000)"
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
    quiet_transformers()
    try:
        server = create_server(settings)
    except QdrantXaiError as exc:
        print(f"qdrant-xai-mcp: {exc}", file=sys.stderr)
        return 1
    # stdout belongs to the protocol on stdio: everything else goes to stderr
    print(f"qdrant-xai-mcp: serving {settings.describe()}", file=sys.stderr)
    # load the model while the client connects; a failure is reported by the first tool call
    threading.Thread(target=_preload, args=(server.backend,), daemon=True).start()
    try:
        if args.transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=args.host, port=args.port)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _preload(backend: XaiBackend) -> None:
    try:
        with backend.lock:
            # no collection yet and no model named: wait for a tool to say which model
            if backend.settings.model or backend.retry.call(
                backend.client.collection_exists,
                backend.collection_name,
                what=f"reading collection {backend.collection_name!r}",
                client=backend.client,
            ):
                backend.encoder()
    except Exception as exc:  # reported again, as a tool error, when a tool needs the model
        print(f"qdrant-xai-mcp: could not load the model yet: {exc}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
