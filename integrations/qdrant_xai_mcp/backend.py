"""The work of each MCP tool, as plain methods over the core: no MCP in here.

:class:`XaiBackend` searches with :class:`~qdrant_xai.search.Searcher`, explains with
:class:`~qdrant_xai.explain.Explainer`, indexes with :class:`~qdrant_xai.storage.indexer.Indexer`,
and reads query images under the server's image roots (paths) or with
:func:`~qdrant_xai.images.query.load_query_image` (base64, data URIs). It raises
:class:`~qdrant_xai.QdrantXaiError`; :mod:`qdrant_xai_mcp.server` turns those into tool
errors, with :func:`with_mcp_hint` naming this server's settings.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Literal

from PIL import Image as PILImage
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import (
    FeaturesMissingError,
    InlineImageError,
    ModelMismatchError,
    PointNotFoundError,
    QdrantXaiError,
    SourceNotAllowedError,
)
from qdrant_xai.explain import HEATMAP_METHODS, Explainer, Explanation
from qdrant_xai.images.load import ImageLimits, LoadedImage
from qdrant_xai.images.overlay import overlay_heatmap
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.images.query import load_query_image
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.search import Searcher
from qdrant_xai.storage.indexer import Indexer
from qdrant_xai.storage.layouts import layout_named
from qdrant_xai.storage.schema import choose_model, require_collection
from qdrant_xai_mcp.results import (
    Hit,
    SearchResult,
    explanation_text,
    hit_of,
    unexplained_hit,
)
from qdrant_xai_mcp.settings import MAX_SEARCH_LIMIT, ServerSettings

__all__ = ["OVERLAY_MAX_SIDE", "XaiBackend", "decode_query_image", "with_mcp_hint"]

OVERLAY_MAX_SIDE = 512


class XaiBackend:
    """What the MCP tools do, as plain methods that raise :class:`QdrantXaiError`.

    Setup::

        from qdrant_xai_mcp.backend import XaiBackend
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
        self.lock = threading.Lock()
        self.layout = layout_named(settings.layout)
        self._encoder = encoder
        self._searcher: Searcher | None = None
        self._explainer: Explainer | None = None

    @property
    def collection_name(self) -> str:
        return self.settings.collection_name

    # -- tools --------------------------------------------------------------------------

    def search_images(self, query: str, limit: int | None = None) -> SearchResult:
        """Image hits for a text query, each with a one-line explanation."""
        if not query.strip():
            raise QdrantXaiError("the query is empty; describe what the images should show")
        hits = self.searcher().search_images(query, limit=self._limit(limit))
        return SearchResult(
            query=query,
            collection=self.collection_name,
            hits=self._explained(query, hits, "image"),
        )

    def search_texts(
        self,
        image_path: str | None = None,
        image_base64: str | None = None,
        limit: int | None = None,
    ) -> SearchResult:
        """Text hits for an image query, each with a one-line explanation."""
        image = self.query_image(image_path, image_base64, prefix="image")
        hits = self.searcher().search_texts(image, limit=self._limit(limit))
        return SearchResult(
            query=f"image {image.source} ({image.width}x{image.height})",
            collection=self.collection_name,
            hits=self._explained(image, hits, "text"),
        )

    def explain_hit(
        self,
        point_id: str | int,
        *,
        query_text: str | None = None,
        query_image_path: str | None = None,
        query_image_base64: str | None = None,
        heatmap_method: str = "decomposition",
    ) -> tuple[str, bytes | None]:
        """The explanation of one point for a query: a text summary and a PNG overlay
        (``None`` for a text query on a text point, which has no image side)."""
        given = [v is not None for v in (query_text, query_image_path, query_image_base64)]
        if sum(given) != 1:
            raise QdrantXaiError(
                "give exactly one query: query_text, query_image_path or query_image_base64"
            )
        method = HEATMAP_METHODS.create(heatmap_method)
        query: str | LoadedImage
        if query_text is not None:
            if not query_text.strip():
                raise QdrantXaiError("query_text is empty")
            query = query_text
        else:
            query = self.query_image(query_image_path, query_image_base64, prefix="query_image")
        # scored exactly as a search would, so the explanation carries the hit's real score
        (point,) = self.searcher().score_points(query, [point_id])
        (explanation,) = self.explainer().explain(query, [point], heatmap_method=method)
        png, note = (None, "")
        if explanation.heatmap is not None:
            png, note = self._overlay_png(explanation, query)
        return explanation_text(explanation, query, self.collection_name, note), png

    def index_images(self, folder: str, captions_csv: str | None = None) -> str:
        """Indexes the images under ``folder`` (under the image roots) and their captions."""
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
            self.client, self.encoder(), collection_name=self.collection_name, retry=self.retry
        )
        summary = indexer.index_folder(root, captions=captions, progress=False)
        used = f" with captions from {captions}" if captions else " (no captions.csv)"
        return f"collection {self.collection_name!r}: {summary}\nfolder {root}{used}"

    # -- collaborators ------------------------------------------------------------------

    def encoder(self) -> ClipEncoder:
        """The encoder, loaded on first use (the configured model, else the recorded one)."""
        if self._encoder is None:
            self._encoder = ClipEncoder.from_pretrained(
                self.model_name(), device=self.settings.device
            )
        return self._encoder

    def model_name(self) -> str:
        """The model to load: ``QDRANT_XAI_MODEL``, the collection's, or the default."""
        return choose_model(
            self.settings.model, self.client, self.collection_name, retry=self.retry
        )

    def searcher(self) -> Searcher:
        """The searcher; the collection must exist (checked before a model is loaded for it)."""
        if self._searcher is None:
            require_collection(self.client, self.collection_name, retry=self.retry)
            self._searcher = Searcher(
                self.client,
                self.encoder(),
                collection_name=self.collection_name,
                layout=self.layout,
                retry=self.retry,
            )
        return self._searcher

    def explainer(self) -> Explainer:
        if self._explainer is None:
            self._explainer = Explainer(
                self.encoder(),
                self.client,
                collection_name=self.collection_name,
                layout=self.layout,
                sources=self.sources,
                retry=self.retry,
            )
        return self._explainer

    # -- helpers ------------------------------------------------------------------------

    def _explained(
        self,
        query: str | LoadedImage,
        hits: list[models.ScoredPoint],
        hit_kind: Literal["image", "text"],
    ) -> list[Hit]:
        """The hits with their explanations; a hit that cannot be explained (no stored
        features, image not readable) is returned with the reason instead of failing the
        search."""
        explainer = self.explainer()
        try:
            return [hit_of(e) for e in explainer.explain(query, hits, hit_kind=hit_kind)]
        except ModelMismatchError:
            raise  # the hits themselves are meaningless with another model
        except QdrantXaiError:
            pass
        results = []
        for rank, point in enumerate(hits):
            try:
                (explanation,) = explainer.explain(query, [point], hit_kind=hit_kind)
                results.append(hit_of(explanation).model_copy(update={"rank": rank + 1}))
            except ModelMismatchError:
                raise
            except QdrantXaiError as exc:
                reason = with_mcp_hint(exc)
                results.append(unexplained_hit(point, rank, hit_kind, self.layout, reason))
        return results

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
        return decode_query_image(data or "", self.sources.limits, what=f"{prefix}_base64")

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
        base: LoadedImage | None = e.image
        note = ""
        if e.heatmap_side == "query" and isinstance(query, LoadedImage):
            base = query
        elif base is None and e.image_source:
            try:
                base = self.sources.open(e.image_source)
            except QdrantXaiError as exc:
                note = (
                    f"The hit's image could not be read here ({exc}); the PNG shows the heatmap "
                    "alone. Set QDRANT_XAI_IMAGE_ROOTS to the image folder to see it overlaid."
                )
        elif base is None:
            note = "The point names no image source; the PNG shows the heatmap alone."
        if base is None:
            rows, cols = e.heatmap.shape
            gray = PILImage.new("RGB", (cols * 32, rows * 32), (128, 128, 128))
            picture = overlay_heatmap(gray, e.heatmap)
        else:
            picture = e.overlay(base.image)
        picture.thumbnail((OVERLAY_MAX_SIDE, OVERLAY_MAX_SIDE))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue(), note


def decode_query_image(data: str, limits: ImageLimits, *, what: str) -> LoadedImage:
    """The query image sent as base64 or a data URI (never a path), decoded by
    :func:`~qdrant_xai.images.query.load_query_image`, its errors worded for the tool
    argument ``what``.

    Raises:
        QdrantXaiError: not base64, or a malformed data URI, or one of another media type.
        ImageLoadError: too large, empty, or bytes that are not an image (``<query image>``).
    """
    try:
        return load_query_image(data, roots=[], limits=limits)
    except InlineImageError as exc:
        if exc.problem == "not_base64":
            raise QdrantXaiError(
                f"{what} is not valid base64; send the encoded image bytes (PNG or JPEG), "
                "optionally as a data: URI"
            ) from exc
        if exc.problem == "data_uri":
            raise QdrantXaiError(
                f"{what}: a data URI must look like data:image/png;base64,<base64 bytes>"
            ) from exc
        if exc.problem == "media_type":
            raise QdrantXaiError(f"{what}: {exc.reason}") from exc
        raise


def with_mcp_hint(exc: QdrantXaiError) -> str:
    """The error's message, pointing at this server's tools and settings where it names
    the library's."""
    message = str(exc)
    if isinstance(exc, (SourceNotAllowedError, FeaturesMissingError)) and (
        "QDRANT_XAI_IMAGE_ROOTS" not in message
    ):
        message += " (on this MCP server, allow image folders with QDRANT_XAI_IMAGE_ROOTS)"
    elif isinstance(exc, PointNotFoundError):
        message += " (search_images or search_texts return them)"
    return message
