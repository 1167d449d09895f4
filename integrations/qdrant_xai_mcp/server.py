"""The qdrant-xai MCP server: explainable CLIP search over a Qdrant collection, as MCP tools.

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
import binascii
import dataclasses
import io
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import anyio
import numpy as np
from PIL import Image as PILImage
from pydantic import BaseModel, Field
from qdrant_client import QdrantClient, models
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
from qdrant_xai.encoding.checkpoints import DEFAULT_MODEL
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import (
    FeaturesMissingError,
    ImageLoadError,
    ModelMismatchError,
    QdrantXaiError,
    SourceNotAllowedError,
)
from qdrant_xai.explain import HEATMAP_METHODS, Explainer, Explanation
from qdrant_xai.explain.results import grid_region
from qdrant_xai.images.load import ImageLimits, LoadedImage
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.render import overlay_heatmap
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.search import Searcher, light_payload
from qdrant_xai.storage.layouts import CollectionLayout, layout_named
from qdrant_xai.storage.schema import PayloadKeys, parse_point_id, require_collection
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

OVERLAY_MAX_SIDE = 512
_T = TypeVar("_T")

# -- results ----------------------------------------------------------------------------


class WordScore(BaseModel):
    """How much one word moved the similarity (positive: it raised the match)."""

    word: str
    score: float


class Region(BaseModel):
    """The heatmap's hottest patch: grid cell and a plain-words position."""

    row: int
    col: int
    rows: int
    cols: int
    where: str = Field(description="position in the image, e.g. 'top-left', 'center'")


class Hit(BaseModel):
    """One hit, with why it matched."""

    rank: int = Field(description="1 = best match")
    id: str | int = Field(description="point id; pass it to explain_hit")
    score: float = Field(description="cosine similarity of query and hit (higher = closer)")
    kind: Literal["image", "text"] = Field(description="what the point is")
    source: str | None = Field(description="the image's path or URL (image points)")
    text: str | None = Field(description="the text (caption or document) of text points")
    image_id: str | None = Field(description="id of the image a caption belongs to, if any")
    payload: dict[str, Any] = Field(description="the point's own payload fields")
    why: str = Field(description="one-line explanation of the match")
    top_words: list[WordScore] = Field(
        description="words that raised the match most: the query's for a text query, the "
        "hit's text for an image query"
    )
    peak: Region | None = Field(description="image region that matched best (see peak_on)")
    peak_on: Literal["hit image", "query image"] | None = Field(
        description="whose image `peak` is in"
    )


class SearchResult(BaseModel):
    """Hits of a query, best first."""

    query: str = Field(description="the text query, or a label of the query image")
    collection: str
    hits: list[Hit]


# -- the work, without MCP ----------------------------------------------------------------


class XaiBackend:
    """What the MCP tools do, as plain methods that raise :class:`QdrantXaiError`.

    Setup::

        from qdrant_xai_mcp.server import XaiBackend
        backend = XaiBackend(settings, client, encoder=None)   # encoder loaded on first use

    Use::

        backend.search_images("a red circle", limit=3).hits[0].why
        texts, png = backend.explain_hit(hit_id, query_text="a red circle")

    Calls are serialised by a lock: the embedded Qdrant and the encoder are used from one
    thread at a time.

    Args:
        settings: collection, model, image roots, limits.
        client: the Qdrant client to use.
        encoder: the CLIP encoder; ``None`` loads ``settings.model`` (or the model recorded
            in the collection) on first use.
        retry: how Qdrant calls are retried on transient failures (default policy); a
            server that stays down gives a tool error naming its URL, never its API key.
    """

    def __init__(
        self,
        settings: ServerSettings,
        client: QdrantClient,
        encoder: ClipEncoder | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.retry = retry or RetryPolicy()
        self.sources = ImageSourcePolicy.from_roots(settings.image_roots)
        self.limits = ImageLimits()
        self.lock = threading.Lock()
        self.layout = layout_named(settings.layout)
        self._encoder = encoder
        self._explainer: Explainer | None = None
        self._resolved: CollectionLayout | None = None

    @property
    def collection(self) -> str:
        return self.settings.collection_name

    # -- tools --------------------------------------------------------------------------

    def search_images(self, query: str, limit: int | None = None) -> SearchResult:
        """Image hits for a text query, each with a one-line explanation."""
        if not query.strip():
            raise QdrantXaiError("the query is empty; describe what the images should show")
        require_collection(self.client, self.collection, retry=self.retry)
        encoder = self.encoder()
        hits = self.searcher(encoder).search_images(query, limit=self._limit(limit))
        return SearchResult(
            query=query, collection=self.collection, hits=self._explained(query, hits, "image")
        )

    def search_texts(
        self,
        image_path: str | None = None,
        image_base64: str | None = None,
        limit: int | None = None,
    ) -> SearchResult:
        """Text hits for an image query, each with a one-line explanation."""
        image = self.query_image(image_path, image_base64, prefix="image")
        require_collection(self.client, self.collection, retry=self.retry)
        encoder = self.encoder()
        hits = self.searcher(encoder).search_texts(image, limit=self._limit(limit))
        return SearchResult(
            query=f"image {image.source} ({image.width}x{image.height})",
            collection=self.collection,
            hits=self._explained(image, hits, "text"),
        )

    def explain_hit(
        self,
        point_id: str | int,
        *,
        query_text: str | None = None,
        query_image_path: str | None = None,
        query_image_base64: str | None = None,
        method: str = "decomposition",
    ) -> tuple[str, bytes | None]:
        """The explanation of one point for a query: a text summary and a PNG overlay
        (``None`` for a text query on a text point, which has no image side)."""
        given = [v is not None for v in (query_text, query_image_path, query_image_base64)]
        if sum(given) != 1:
            raise QdrantXaiError(
                "give exactly one query: query_text, query_image_path or query_image_base64"
            )
        if method not in HEATMAP_METHODS:
            raise QdrantXaiError(
                f"unknown heatmap method {method!r}; choose one of "
                f"{', '.join(sorted(HEATMAP_METHODS))}"
            )
        pid = parse_point_id(point_id)
        query: str | LoadedImage
        if query_text is not None:
            if not query_text.strip():
                raise QdrantXaiError("query_text is empty")
            query = query_text
        else:
            query = self.query_image(query_image_path, query_image_base64, prefix="query_image")
        require_collection(self.client, self.collection, retry=self.retry)
        records = self.retry.call(
            self.client.retrieve,
            self.collection,
            what=f"reading point {point_id} of {self.collection!r}",
            client=self.client,
            ids=[pid],
            with_payload=light_payload(),
        )
        if not records:
            raise QdrantXaiError(
                f"no point {point_id} in collection {self.collection!r}; use an id returned by "
                "search_images or search_texts"
            )
        payload = records[0].payload or {}
        layout = self.resolved_layout()
        kind: Literal["image", "text"] = (
            "text"
            if payload.get(PayloadKeys.KIND) == "text"
            or (
                PayloadKeys.KIND not in payload
                and layout.text(payload)
                and not layout.image_source(payload)
            )
            else "image"
        )
        using = layout.using(kind)
        encoder = self.encoder()
        vector = (
            encoder.embed_texts([query])[0]
            if isinstance(query, str)
            else encoder.embed_images([query])[0]
        )
        # score the point exactly as a search would, so the explanation carries its real score
        scored = self.retry.call(
            self.client.query_points,
            self.collection,
            what=f"scoring point {point_id} in {self.collection!r}",
            client=self.client,
            query=vector.tolist(),
            using=using,
            limit=1,
            query_filter=models.Filter(must=[models.HasIdCondition(has_id=[pid])]),
            with_payload=light_payload(),
        ).points
        if not scored:
            raise QdrantXaiError(
                f"point {point_id} has no {using or 'default'!r} vector in collection "
                f"{self.collection!r}; is QDRANT_XAI_LAYOUT ({self.layout.name}) right?"
            )
        (explanation,) = self.explainer().explain(
            query, scored, heatmap_method=method, hit_kind=kind
        )
        png, note = (None, "")
        if explanation.heatmap is not None:
            png, note = self._overlay_png(explanation, query)
        return _explanation_text(explanation, query, self.collection, note), png

    def index_images(self, folder: str, captions_csv: str | None = None) -> str:
        """Indexes the images under ``folder`` (under the image roots) and their captions."""
        from qdrant_xai.storage.indexer import Indexer

        if self.layout.name != "qdrant-xai":
            raise QdrantXaiError(
                f"index_images writes qdrant-xai points; the collection's layout is "
                f"{self.layout.name!r}. Index into a qdrant-xai collection, or add features to "
                "this one with 'qdrant-xai backfill'"
            )
        root = self._allowed(folder, what="folder")
        if not root.is_dir():
            raise QdrantXaiError(f"{folder}: not a directory")
        captions = self._allowed(captions_csv, what="captions_csv") if captions_csv else None
        if captions is not None and not captions.is_file():
            raise QdrantXaiError(f"{captions_csv}: not a file")
        if captions is None and (root / "captions.csv").is_file():
            captions = root / "captions.csv"
        indexer = Indexer(
            self.client, self.encoder(), collection_name=self.collection, retry=self.retry
        )
        summary = indexer.index_folder(root, captions=captions, progress=False)
        used = f" with captions from {captions}" if captions else " (no captions.csv)"
        return f"collection {self.collection!r}: {summary}\nfolder {root}{used}"

    # -- helpers ------------------------------------------------------------------------

    def _explained(
        self,
        query: str | LoadedImage,
        hits: list[models.ScoredPoint],
        kind: Literal["image", "text"],
    ) -> list[Hit]:
        """The hits with their explanations; a hit that cannot be explained (no stored
        features, image not readable) is returned with the reason instead of failing the
        search."""
        explainer = self.explainer()
        try:
            return [_hit(e) for e in explainer.explain(query, hits, hit_kind=kind)]
        except ModelMismatchError:
            raise  # the hits themselves are meaningless with another model
        except QdrantXaiError:
            pass
        results = []
        for rank, point in enumerate(hits):
            try:
                (explanation,) = explainer.explain(query, [point], hit_kind=kind)
                results.append(_hit(explanation).model_copy(update={"rank": rank + 1}))
            except ModelMismatchError:
                raise
            except QdrantXaiError as exc:
                results.append(_unexplained(point, rank, kind, self.layout, _mcp_hint(exc)))
        return results

    def encoder(self) -> ClipEncoder:
        """The encoder, loaded on first use (the configured model, else the recorded one)."""
        if self._encoder is None:
            self._encoder = ClipEncoder.from_pretrained(
                self.model_name(), device=self.settings.device
            )
        return self._encoder

    def model_name(self) -> str:
        """The model to load: ``QDRANT_XAI_MODEL``, the collection's, or the default."""
        from qdrant_xai.storage.schema import recorded_model

        name = self.settings.model or recorded_model(self.client, self.collection, retry=self.retry)
        return name or DEFAULT_MODEL

    def searcher(self, encoder: ClipEncoder) -> Searcher:
        return Searcher(
            self.client,
            encoder,
            collection_name=self.collection,
            layout=self.layout,
            retry=self.retry,
        )

    def explainer(self) -> Explainer:
        if self._explainer is None:
            self._explainer = Explainer(
                self.encoder(),
                self.client,
                collection_name=self.collection,
                layout=self.layout,
                sources=self.sources,
                retry=self.retry,
            )
        return self._explainer

    def resolved_layout(self) -> CollectionLayout:
        """The layout with its vector names resolved against the collection."""
        if self._resolved is None:
            self._resolved = (
                self.layout
                if self.layout.name == "qdrant-xai"
                else self.layout.resolve(self.client, self.collection, retry=self.retry)
            )
        return self._resolved

    def query_image(
        self, path: str | None, data: str | None, *, prefix: str = "image"
    ) -> LoadedImage:
        """The query image from a path under the image roots, or base64 / a data URI."""
        if (path is None) == (data is None):
            raise QdrantXaiError(
                f"give the query image either as {prefix}_path (a file under the allowed "
                f"image folders) or as {prefix}_base64 (base64 or a data: URI), exactly one"
            )
        if path is not None:
            self._allowed(path, what=f"{prefix}_path")
            try:  # the policy reads it (regular files under the roots only)
                return self.sources.open(path)
            except SourceNotAllowedError as exc:
                raise SourceNotAllowedError(f"{prefix}_path: {exc}") from exc
        return _decode_image(data or "", self.limits, what=f"{prefix}_base64")

    def _allowed(self, path: str, *, what: str) -> Path:
        """``path`` resolved (symlinks followed), if it lies under an image root."""
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(root) for root in self.settings.image_roots):
            roots = ", ".join(str(r) for r in self.settings.image_roots) or "none configured"
            raise SourceNotAllowedError(
                f"{what} {path!r} is not readable: the server reads files only under "
                f"QDRANT_XAI_IMAGE_ROOTS (now: {roots}). Pass the image as base64 instead, or "
                "ask the server's operator to allow the folder"
            )
        return resolved

    def _limit(self, limit: int | None) -> int:
        value = self.settings.search_limit if limit is None else limit
        if not 1 <= value <= MAX_SEARCH_LIMIT:
            raise QdrantXaiError(f"limit must be between 1 and {MAX_SEARCH_LIMIT}, got {value}")
        return value

    def _overlay_png(self, e: Explanation, query: str | LoadedImage) -> tuple[bytes, str]:
        """The heatmap over its image as PNG bytes, and a note when the image is missing."""
        assert e.heatmap is not None
        base: PILImage.Image | None = None
        note = ""
        if e.heatmap_side == "query" and isinstance(query, LoadedImage):
            base = query.image
        elif e.image_source:
            try:
                base = self.sources.open(e.image_source).image
            except QdrantXaiError as exc:
                note = (
                    f"The hit's image could not be read here ({exc}); the PNG shows the heatmap "
                    "alone. Set QDRANT_XAI_IMAGE_ROOTS to the image folder to see it overlaid."
                )
        else:
            note = "The point names no image source; the PNG shows the heatmap alone."
        if base is None:
            rows, cols = e.heatmap.shape
            base = PILImage.new("RGB", (cols * 32, rows * 32), (128, 128, 128))
            picture = overlay_heatmap(base, e.heatmap)
        else:
            picture = overlay_heatmap(base, e.heatmap, e.crop_box)
        picture.thumbnail((OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue(), note


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
Method = Annotated[
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
rank are never changed. method picks the heatmap method; keep the default unless asked."""

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
    async def call(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        def locked() -> _T:
            with backend.lock:
                return fn(*args, **kwargs)

        try:
            return await anyio.to_thread.run_sync(locked)
        except QdrantXaiError as exc:
            raise ToolError(_redact(_mcp_hint(exc), backend.settings)) from exc
        except (UnexpectedResponse, ResponseHandlingException) as exc:
            raise ToolError(_redact(f"the Qdrant request failed: {exc}", backend.settings)) from exc

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
        method: Method = "decomposition",
    ) -> list[TextContent | Image]:
        text, png = await call(
            backend.explain_hit,
            point_id,
            query_text=query_text,
            query_image_path=query_image_path,
            query_image_base64=query_image_base64,
            method=method,
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


# -- formatting -----------------------------------------------------------------------------


def _hit(e: Explanation) -> Hit:
    top = [w for w in e.top_words(3) if w.score > 0]
    peak = _region(e)
    peak_on: Literal["hit image", "query image"] | None = None
    if peak is not None:
        peak_on = "hit image" if e.heatmap_side == "hit" else "query image"
    image_id = e.payload.get(PayloadKeys.IMAGE_ID)
    words_of = "query" if e.words_side == "query" else "text"
    return Hit(
        rank=e.rank + 1,
        id=_wire_id(e.id),
        score=round(e.score, 4),
        kind=e.hit_kind,
        source=_short(e.image_source) if e.hit_kind == "image" and e.image_source else None,
        text=_short(e.text, 2000) if e.hit_kind == "text" and e.text else None,
        image_id=image_id if isinstance(image_id, str) else None,
        payload=_user_payload(e.payload),
        why=_why(top, peak, peak_on, words_of=words_of if e.words else None),
        top_words=[WordScore(word=w.word, score=round(w.score, 4)) for w in top],
        peak=peak,
        peak_on=peak_on,
    )


def _unexplained(
    point: models.ScoredPoint,
    rank: int,
    kind: Literal["image", "text"],
    layout: CollectionLayout,
    reason: str,
) -> Hit:
    payload = {k: v for k, v in (point.payload or {}).items() if k not in PayloadKeys.HEAVY}
    source, text = layout.image_source(payload), layout.text(payload)
    image_id = payload.get(PayloadKeys.IMAGE_ID)
    return Hit(
        rank=rank + 1,
        id=_wire_id(point.id),
        score=round(point.score, 4),
        kind="text" if kind == "text" and text else ("image" if source else "text"),
        source=_short(source) if source else None,
        text=_short(text, 2000) if text and not source else None,
        image_id=image_id if isinstance(image_id, str) else None,
        payload=_user_payload(payload),
        why=f"not explained: {reason}",
        top_words=[],
        peak=None,
        peak_on=None,
    )


def _mcp_hint(exc: QdrantXaiError) -> str:
    """The error's message, pointing at this server's setting where it names the library's."""
    message = str(exc)
    if isinstance(exc, (SourceNotAllowedError, FeaturesMissingError)) and (
        "QDRANT_XAI_IMAGE_ROOTS" not in message
    ):
        message += " (on this MCP server, allow image folders with QDRANT_XAI_IMAGE_ROOTS)"
    return message


def _wire_id(point_id: Any) -> str | int:
    return point_id if isinstance(point_id, int) else str(point_id)


def _why(
    words: Sequence[Any], peak: Region | None, peak_on: str | None, *, words_of: str | None
) -> str:
    parts = []
    if words:
        listed = ", ".join(f"'{w.word}' ({w.score:+.3f})" for w in words)
        parts.append(f"{words_of} words that raised the match: {listed}")
    elif words_of:
        parts.append(f"no single {words_of} word raised the match much")
    if peak is not None:
        parts.append(f"strongest region of the {peak_on}: {peak.where}")
    return "; ".join(parts) or "no explanation available for this pair"


def _region(e: Explanation) -> Region | None:
    position = e.peak()
    if position is None or e.heatmap is None:
        return None
    rows, cols = e.heatmap.shape
    row, col = position
    return Region(row=row, col=col, rows=rows, cols=cols, where=grid_region(row, col, rows, cols))


_INTERNAL_KEYS = {PayloadKeys.CROP_BOX, PayloadKeys.CAPTION_IDS, PayloadKeys.WORDS}


def _user_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without qdrant-xai's bookkeeping (features, fingerprints, spans), with
    long strings and lists shortened (inline base64 images would flood the model's context)."""
    return {
        k: _compact(v)
        for k, v in payload.items()
        if not k.startswith("xai_") and k not in _INTERNAL_KEYS
    }


def _compact(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _short(value)
    if depth >= 4:
        return "..."
    if isinstance(value, dict):
        return {str(k): _compact(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        items = [_compact(v, depth + 1) for v in value[:20]]
        return [*items, f"... {len(value) - 20} more"] if len(value) > 20 else items
    return value


def _short(text: str, limit: int = 500) -> str:
    if len(text) <= limit:
        return text
    if text.startswith("data:") or _looks_base64(text):
        return f"<inline image, {len(text)} chars>"
    return f"{text[:limit]}... ({len(text)} chars)"


def _looks_base64(text: str) -> bool:
    head = text[:200]
    return not any(c.isspace() for c in head) and all(c.isalnum() or c in "+/=-_" for c in head)


def _explanation_text(e: Explanation, query: str | LoadedImage, collection: str, note: str) -> str:
    asked = (
        f"the text query {query!r}" if isinstance(query, str) else f"the query image {query.source}"
    )
    hit = _short(e.image_source or "", 200) if e.hit_kind == "image" else _short(e.text or "", 200)
    lines = [
        f"Point {e.id} ({e.hit_kind} hit{f': {hit}' if hit else ''}) in collection "
        f"{collection!r} for {asked}: cosine score {e.score:.4f}."
    ]
    if e.heatmap is not None:
        region = _region(e)
        whose = "the hit's image" if e.heatmap_side == "hit" else "the query image"
        assert region is not None
        lines.append(
            f"Heatmap ({e.heatmap_method}) over {whose}: strongest at the {region.where} "
            f"(row {region.row}, col {region.col} of a {region.rows}x{region.cols} grid). "
            "The attached PNG draws it over the image: bright = raised the match."
        )
        heat = np.asarray(e.heatmap, dtype=np.float64)
        positive = float(np.clip(heat, 0, None).sum())
        total = float(np.abs(heat).sum()) or 1.0
        lines.append(f"Share of the heatmap's mass supporting the match: {positive / total:.0%}.")
    if note:
        lines.append(note)
    if e.words:
        whose_words = "query" if e.words_side == "query" else "hit's text"
        lines.append(
            f"Word attributions of the {whose_words} ({e.word_method}; positive = raised the "
            "similarity, negative = lowered it):"
        )
        lines += [f"  {w.word}: {w.score:+.4f}" for w in e.words]
    return "\n".join(lines)


def _decode_image(data: str, limits: ImageLimits, *, what: str) -> LoadedImage:
    """The query image sent as base64 or a data URI, decoded by the package's source policy
    (the size is judged from the length before anything is decoded; no paths, no URLs)."""
    text = data.strip()
    if text.startswith("data:"):
        header, comma, _ = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise QdrantXaiError(
                f"{what}: a data URI must look like data:image/png;base64,<base64 bytes>"
            )
    try:
        loaded = ImageSourcePolicy(limits=limits).open(text, kind="base64")
    except SourceNotAllowedError as exc:  # a data URI of another media type
        raise QdrantXaiError(f"{what}: {exc}") from None
    except ImageLoadError as exc:
        if isinstance(exc.__cause__, binascii.Error):
            raise QdrantXaiError(
                f"{what} is not valid base64; send the encoded image bytes (PNG or JPEG), "
                "optionally as a data: URI"
            ) from None
        raise ImageLoadError("<query image>", exc.reason) from exc
    return dataclasses.replace(loaded, source="<query image>")


def _redact(message: str, settings: ServerSettings) -> str:
    if settings.api_key:
        message = message.replace(settings.api_key, "***")
    return message


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
    _quiet_transformers()
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
                backend.collection,
                what=f"reading collection {backend.collection!r}",
                client=backend.client,
            ):
                backend.encoder()
    except Exception as exc:  # reported again, as a tool error, when a tool needs the model
        print(f"qdrant-xai-mcp: could not load the model yet: {exc}", file=sys.stderr)


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
