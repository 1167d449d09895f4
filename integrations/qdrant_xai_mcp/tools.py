"""The MCP tools of qdrant-xai: their parameters, descriptions and annotations, registered on
a server over an :class:`~qdrant_xai_mcp.backend.XaiBackend` (which does the work).

As in mcp-server-qdrant, every tool takes a ``collection_name`` argument unless
``COLLECTION_NAME`` is set (then the argument is not offered), and the search tools take a
``query_filter`` argument when ``QDRANT_ALLOW_ARBITRARY_FILTER=true``. Errors of the
library become tool errors with their message (API keys redacted, length capped).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import anyio
from pydantic import Field
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qdrant_xai.connection import redact
from qdrant_xai.errors import QdrantXaiError
from qdrant_xai.explain import HEATMAP_METHODS
from qdrant_xai_mcp._sdk import Image, ServerBase, TextContent, ToolError, tool_annotations
from qdrant_xai_mcp.backend import XaiBackend
from qdrant_xai_mcp.results import MAX_ERROR_CHARS, SearchResult, short_text, with_mcp_hint
from qdrant_xai_mcp.settings import MAX_SEARCH_LIMIT

__all__ = ["register_tools"]

_T = TypeVar("_T")

# Tool parameters (module level: the SDK evaluates the annotations in this module's globals)
QueryText = Annotated[
    str,
    Field(
        description="what the images should show, written like a caption (a sentence or two; "
        "the server refuses queries over QDRANT_XAI_MAX_QUERY_CHARS characters)"
    ),
]
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
CollectionName = Annotated[str, Field(description="the Qdrant collection to work on")]
QueryFilter = Annotated[
    dict[str, Any] | None,
    Field(
        description="a Qdrant filter on the points' payloads, as JSON (qdrant-client's "
        'Filter), e.g. {"must": [{"key": "metadata.kind", "match": {"value": "photo"}}]}'
    ),
]

_SEARCH_IMAGES = """\
Search the image collection by a text description and get the best-matching images, best
first. Each hit has its id, cosine score (higher = closer), source path, payload, and a short
explanation: which words of your query raised the match most, and where in the image the
match is strongest (e.g. 'top-left'). A hit that could not be explained has status 'failed'
and an error saying why. Use explain_hit with a hit's id to see its heatmap. Write the query
as a caption would describe the picture (e.g. 'a red circle next to a blue square'), not as
a question."""

_SEARCH_TEXTS = """\
Search the collection's texts (image captions and standalone texts) with an image, and get
the texts that best describe it, best first. Give the image either as image_path (a file on
the server, under the folders the server may read) or as image_base64 (base64 PNG/JPEG bytes
or a data: URI) - exactly one. Each hit has its id, score, text, and a short explanation:
which words of the text match the image, and which region of your image matched best (or,
with status 'failed', why it could not be explained)."""

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


def register_tools(server: ServerBase, backend: XaiBackend) -> None:
    """Adds the tools ``backend.settings`` allows to ``server``."""
    settings = backend.settings

    def hidden(message: str) -> str:  # never the API key, whoever wrote it into a message
        return redact(message, backend.client, (settings.api_key,))

    async def call(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        # no lock around the whole call: the backend checks the arguments first and holds
        # its lock for each call into an embedded Qdrant only (qdrant_xai.serial_client)
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
        except QdrantXaiError as exc:
            raise ToolError(hidden(with_mcp_hint(exc))) from exc
        except (UnexpectedResponse, ResponseHandlingException) as exc:
            message = short_text(f"the Qdrant request failed: {exc}", MAX_ERROR_CHARS)
            raise ToolError(hidden(message)) from exc

    async def search_images(
        query: QueryText,
        collection_name: CollectionName,
        limit: Limit = None,
        query_filter: QueryFilter = None,
    ) -> SearchResult:
        return await call(
            backend.search_images,
            query,
            limit,
            collection_name=collection_name,
            query_filter=query_filter,
        )

    async def search_texts(
        collection_name: CollectionName,
        image_path: ImagePath = None,
        image_base64: ImageBase64 = None,
        limit: Limit = None,
        query_filter: QueryFilter = None,
    ) -> SearchResult:
        return await call(
            backend.search_texts,
            image_path,
            image_base64,
            limit,
            collection_name=collection_name,
            query_filter=query_filter,
        )

    async def explain_hit(
        point_id: PointId,
        collection_name: CollectionName,
        query_text: OptionalText = None,
        query_image_path: ImagePath = None,
        query_image_base64: ImageBase64 = None,
        heatmap_method: HeatmapMethodName = "decomposition",
    ) -> list[TextContent | Image]:
        text, png = await call(
            backend.explain_hit,
            point_id,
            collection_name=collection_name,
            query_text=query_text,
            query_image_path=query_image_path,
            query_image_base64=query_image_base64,
            heatmap_method=heatmap_method,
        )
        content: list[TextContent | Image] = [TextContent(type="text", text=text)]
        if png is not None:
            content.append(Image(data=png, format="png"))
        return content

    async def index_images(
        folder: Folder, collection_name: CollectionName, captions_csv: CaptionsCsv = None
    ) -> str:
        return await call(
            backend.index_images, folder, captions_csv, collection_name=collection_name
        )

    # as mcp-server-qdrant: with COLLECTION_NAME set, no collection_name argument; without
    # QDRANT_ALLOW_ARBITRARY_FILTER, no query_filter argument
    fixed: dict[str, Any] = {}
    if settings.collection_name is not None:
        fixed["collection_name"] = None
    searches = dict(fixed) if settings.allow_arbitrary_filter else {**fixed, "query_filter": None}
    # a writable server stores the features it computes in the sidecar while explaining
    writes = tool_annotations(
        readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False
    )
    reads = writes
    if settings.read_only:
        reads = tool_annotations(readOnlyHint=True, openWorldHint=False)
    server.add_tool(
        _without(search_images, searches),
        name="search_images",
        title="Search images by text",
        description=_SEARCH_IMAGES,
        annotations=reads,
    )
    server.add_tool(
        _without(search_texts, searches),
        name="search_texts",
        title="Search captions by image",
        description=_SEARCH_TEXTS,
        annotations=reads,
    )
    server.add_tool(
        _without(explain_hit, fixed),
        name="explain_hit",
        title="Explain one hit",
        description=_EXPLAIN_HIT,
        annotations=reads,
        structured_output=False,
    )
    if settings.read_only:
        return
    server.add_tool(
        _without(index_images, fixed),
        name="index_images",
        title="Index a folder of images",
        description=_INDEX_IMAGES,
        annotations=writes,
        structured_output=False,
    )


def _without(
    tool: Callable[..., Awaitable[_T]], fixed: dict[str, Any]
) -> Callable[..., Awaitable[_T]]:
    """``tool`` without the parameters in ``fixed``, which take those values: the SDK builds
    the tool's input schema from the signature, so they are not offered to clients."""
    if not fixed:
        return tool
    signature = inspect.signature(tool, eval_str=True)

    async def bound(**arguments: Any) -> _T:
        return await tool(**fixed, **arguments)

    bound.__name__, bound.__doc__ = tool.__name__, tool.__doc__
    kept = [p for name, p in signature.parameters.items() if name not in fixed]
    bound.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]
    return bound
