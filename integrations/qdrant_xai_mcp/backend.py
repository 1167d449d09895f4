"""The work of each MCP tool, as plain methods over the core: no MCP in here.

:class:`XaiBackend` searches with :class:`~qdrant_xai.search.Searcher`, explains with
:class:`~qdrant_xai.explain.Explainer`, indexes with :class:`~qdrant_xai.storage.indexer.Indexer`,
and reads query images under the server's image roots (paths) or with
:func:`~qdrant_xai.images.query.load_query_image` (base64, data URIs). It raises
:class:`~qdrant_xai.QdrantXaiError`; :mod:`qdrant_xai_mcp.tools` turns those into tool
errors, with :func:`~qdrant_xai_mcp.results.with_mcp_hint` naming this server's settings.
"""

from __future__ import annotations

import dataclasses
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image as PILImage
from pydantic import ValidationError
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import (
    CollectionError,
    InlineImageError,
    InputTooLargeError,
    ModelMismatchError,
    QdrantXaiError,
    SourceNotAllowedError,
    StaleFeaturesError,
    brief_repr,
)
from qdrant_xai.explain import HEATMAP_METHODS, Explainer, Explanation
from qdrant_xai.explain.results import hit_image
from qdrant_xai.images.load import ImageLimits, LoadedImage
from qdrant_xai.images.overlay import overlay_heatmap
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.images.query import bounded_query_image, load_query_image
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.search import Searcher
from qdrant_xai.serial_client import serial_client
from qdrant_xai.storage.detect import resolve_layout
from qdrant_xai.storage.indexer import Indexer
from qdrant_xai.storage.layouts import CollectionLayout
from qdrant_xai.storage.schema import choose_model, require_collection
from qdrant_xai_mcp.results import (
    SearchResult,
    explanation_text,
    hit_of,
    short_text,
    with_mcp_hint,
)
from qdrant_xai_mcp.settings import MAX_SEARCH_LIMIT, ServerSettings

__all__ = ["OVERLAY_MAX_SIDE", "XaiBackend", "decode_query_image", "with_mcp_hint"]

OVERLAY_MAX_SIDE = 512


@dataclass(frozen=True)
class ServedCollection:
    """What the backend keeps per collection it has served: its layout (resolved, or
    detected), and the searcher and explainer over it."""

    name: str
    layout: CollectionLayout
    searcher: Searcher
    explainer: Explainer


class XaiBackend:
    """What the MCP tools do, as plain methods that raise :class:`QdrantXaiError`.

    Setup::

        from qdrant_xai_mcp.backend import XaiBackend
        backend = XaiBackend(settings, client, encoder=None)   # encoder loaded on first use

    Use::

        backend.search_images("a red circle", limit=3).hits[0].why
        texts, png = backend.explain_hit(hit_id, query_text="a red circle")
        backend.search_images("a red circle", collection_name="photos")  # no COLLECTION_NAME

    Each call works on ``settings.collection_name``, or, when that is ``None``, on the
    collection the call names. Calls run concurrently: the arguments are checked (query
    length, image size) before any work, an embedded Qdrant is called one call at a time
    (:attr:`lock`, held for one Qdrant call only, see :mod:`qdrant_xai.serial_client`), the
    encoder serialises its own forward passes, and loading a model or setting up a
    collection happens once.

    Args:
        settings: collection, model, layout, image roots, limits.
        client: the Qdrant client to use.
        encoder: the CLIP encoder for every collection; ``None`` loads ``settings.model``
            (or the model recorded in each collection) on first use.
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
        #: held for each call into an embedded Qdrant (never for model work)
        self.lock = threading.RLock()
        self.client = serial_client(client, self.lock)
        self.retry = retry or RetryPolicy()
        self.sources = ImageSourcePolicy.from_roots(settings.image_roots)
        self._setup = threading.RLock()  # one model load, one setup per collection
        self._encoder = encoder
        self._encoders: dict[str, ClipEncoder] = {}
        self._served: dict[str, ServedCollection] = {}

    @property
    def collection_name(self) -> str | None:
        """The configured collection (``COLLECTION_NAME``), or ``None``: named per call."""
        return self.settings.collection_name

    def collection(self, collection_name: str | None = None) -> str:
        """The collection a call works on: the configured one, else ``collection_name``.

        Raises:
            QdrantXaiError: no collection named, a name that is not a collection name, or
                another collection than the configured one.
        """
        configured = self.settings.collection_name
        if configured is not None:
            if collection_name is not None and collection_name != configured:
                raise QdrantXaiError(
                    f"this server serves only collection {configured!r} (COLLECTION_NAME); "
                    f"got collection_name {brief_repr(collection_name)}"
                )
            return configured
        if collection_name is None or not collection_name.strip():
            raise QdrantXaiError(
                "collection_name is required: this server has no COLLECTION_NAME, so each "
                "call names the collection to work on"
            )
        if len(collection_name) > 255 or any(c in collection_name for c in "/\\\0"):
            raise QdrantXaiError(
                f"collection_name {brief_repr(collection_name)} is not a collection name "
                "(at most 255 characters, no '/' or '\\')"
            )
        return collection_name

    # -- tools --------------------------------------------------------------------------

    def search_images(
        self,
        query: str,
        limit: int | None = None,
        *,
        collection_name: str | None = None,
        query_filter: dict[str, Any] | None = None,
    ) -> SearchResult:
        """Image hits for a text query, each with a one-line explanation (or the reason it
        has none)."""
        if not query.strip():
            raise QdrantXaiError("the query is empty; describe what the images should show")
        self._check_query(query, "query")
        served = self.served(collection_name)
        hits = served.searcher.search_images(
            query, limit=self._limit(limit), query_filter=_filter(query_filter)
        )
        return self._result(served, short_text(query, 500), query, hits, "image")

    def search_texts(
        self,
        image_path: str | None = None,
        image_base64: str | None = None,
        limit: int | None = None,
        *,
        collection_name: str | None = None,
        query_filter: dict[str, Any] | None = None,
    ) -> SearchResult:
        """Text hits for an image query, each with a one-line explanation (or the reason it
        has none)."""
        image = self.query_image(image_path, image_base64, prefix="image")
        served = self.served(collection_name)
        hits = served.searcher.search_texts(
            image, limit=self._limit(limit), query_filter=_filter(query_filter)
        )
        label = f"image {short_text(image.source, 200)} ({image.width}x{image.height})"
        return self._result(served, label, image, hits, "text")

    def explain_hit(
        self,
        point_id: str | int,
        *,
        collection_name: str | None = None,
        query_text: str | None = None,
        query_image_path: str | None = None,
        query_image_base64: str | None = None,
        heatmap_method: str = "decomposition",
    ) -> tuple[str, bytes | None]:
        """The explanation of one point for a query: a text summary and a PNG overlay
        (``None`` for a text query on a text point, which has no image side).

        Raises:
            QdrantXaiError: (its subclass) why the point could not be explained.
        """
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
            self._check_query(query_text, "query_text")
            query = query_text
        else:
            query = self.query_image(query_image_path, query_image_base64, prefix="query_image")
        served = self.served(collection_name)
        # scored exactly as a search would, so the explanation carries the hit's real score
        (point,) = served.searcher.score_points(query, [point_id])
        (explanation,) = served.explainer.explain(query, [point], heatmap_method=method)
        explanation.raise_for_status()
        png, note = (None, "")
        if explanation.heatmap is not None:
            png, note = self._overlay_png(explanation, query)
        return explanation_text(explanation, query, served.name, note), png

    def index_images(
        self, folder: str, captions_csv: str | None = None, *, collection_name: str | None = None
    ) -> str:
        """Indexes the images under ``folder`` (under the image roots) and their captions
        into the collection (a qdrant-xai collection, created when missing)."""
        name = self.collection(collection_name)
        exists = self.retry.call(
            self.client.collection_exists,
            name,
            what=f"reading collection {name!r}",
            client=self.client,
        )
        layout = self.served(name).layout if exists else None
        configured = self.settings.layout
        if (layout is not None and layout.name != "qdrant-xai") or (
            configured not in ("auto", "qdrant-xai")
        ):
            written = layout.name if layout is not None else self.settings.layout_name
            raise QdrantXaiError(
                f"index_images writes qdrant-xai points; collection {name!r} has the "
                f"{written!r} layout. Index into a qdrant-xai collection, or add features to "
                "this one with 'qdrant-xai backfill'"
            )
        root = self._allowed(folder, what="folder")
        if not root.is_dir():
            raise QdrantXaiError(f"{short_text(folder, 200)}: not a directory")
        captions = self._allowed(captions_csv, what="captions_csv") if captions_csv else None
        if captions is not None and not captions.is_file():
            raise QdrantXaiError(f"{short_text(captions_csv or '', 200)}: not a file")
        if captions is None and (root / "captions.csv").is_file():
            captions = root / "captions.csv"
        indexer = Indexer(self.client, self.encoder(name), collection_name=name, retry=self.retry)
        summary = indexer.index_folder(root, captions=captions, progress=False)
        used = f" with captions from {captions}" if captions else " (no captions.csv)"
        return f"collection {name!r}: {summary}\nfolder {root}{used}"

    # -- collaborators ------------------------------------------------------------------

    def encoder(self, collection_name: str | None = None) -> ClipEncoder:
        """The encoder for a collection, loaded on first use (the configured model, else
        the one recorded in the collection, else qdrant-xai's default)."""
        if self._encoder is not None:
            return self._encoder
        with self._setup:  # one load, though several calls need the model at once
            model = self.model_name(collection_name)
            if model not in self._encoders:
                self._encoders[model] = ClipEncoder.from_pretrained(
                    model, device=self.settings.device
                )
            return self._encoders[model]

    def model_name(self, collection_name: str | None = None) -> str:
        """The model to load: ``QDRANT_XAI_MODEL``, the collection's, or the default."""
        if self.settings.model is not None:
            return self.settings.model
        name = collection_name or self.settings.collection_name
        return choose_model(None, self.client, name, retry=self.retry)

    def served(self, collection_name: str | None = None) -> ServedCollection:
        """The searcher and explainer of a collection (it must exist: checked before a model
        is loaded for it), its layout resolved or detected once."""
        name = self.collection(collection_name)
        if name in self._served:
            return self._served[name]
        with self._setup:  # set up once, though several calls name it at once
            return self._served.get(name) or self._serve(name)

    def _serve(self, name: str) -> ServedCollection:
        if name not in self._served:
            require_collection(self.client, name, retry=self.retry)
            try:
                layout = resolve_layout(self.client, name, self.settings.layout, retry=self.retry)
            except CollectionError as exc:
                raise CollectionError(
                    f"{exc} (on this MCP server: QDRANT_XAI_LAYOUT names a preset; "
                    "QDRANT_XAI_VECTOR, QDRANT_XAI_IMAGE_KEY, QDRANT_XAI_TEXT_KEY describe yours)"
                ) from exc
            encoder = self.encoder(name)
            common: dict[str, Any] = {"collection_name": name, "layout": layout}
            self._served[name] = ServedCollection(
                name=name,
                layout=layout,
                searcher=Searcher(self.client, encoder, retry=self.retry, **common),
                # a read-only server reads a sidecar of features but never writes one
                explainer=Explainer(
                    encoder,
                    self.client,
                    sources=self.sources,
                    retry=self.retry,
                    write_sidecar=not self.settings.read_only,
                    **common,
                ),
            )
        return self._served[name]

    # -- helpers ------------------------------------------------------------------------

    def _result(
        self,
        served: ServedCollection,
        label: str,
        query: str | LoadedImage,
        hits: list[models.ScoredPoint],
        hit_kind: Literal["image", "text"],
    ) -> SearchResult:
        """The hits with their explanations; a hit that cannot be explained (no stored
        features, image not readable...) comes with the reason, the others are explained.

        Raises:
            ModelMismatchError: every hit's vector comes from another model than the query's:
                the ranking itself means nothing, so the search fails with the reason.
        """
        explained = served.explainer.explain(query, hits, hit_kind=hit_kind)
        errors = [e.error for e in explained if e.error is not None]
        mismatched = [e for e in errors if isinstance(e, ModelMismatchError)]
        if mismatched and len(mismatched) == len(explained):
            raise mismatched[0]
        return SearchResult(
            query=label,
            collection=served.name,
            hits=[hit_of(e) for e in explained],
            failed=len(errors),
        )

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
                return bounded_query_image(self.sources.open(path))
            except SourceNotAllowedError as exc:
                raise SourceNotAllowedError(f"{prefix}_path: {exc}") from exc
        limits = dataclasses.replace(self.sources.limits, max_bytes=self.settings.max_image_bytes)
        return decode_query_image(
            data or "", limits, what=f"{prefix}_base64", setting="QDRANT_XAI_MAX_IMAGE_BYTES"
        )

    def _check_query(self, text: str, what: str) -> None:
        """Refuses a text query over ``QDRANT_XAI_MAX_QUERY_CHARS``, before any work."""
        limit = self.settings.max_query_chars
        if len(text) > limit:
            raise InputTooLargeError(
                f"{what} has {len(text):,} characters, over this server's limit of {limit:,} "
                "(QDRANT_XAI_MAX_QUERY_CHARS): describe the picture in a sentence or two "
                "(CLIP reads only its first few dozen words); the server's operator can raise "
                "QDRANT_XAI_MAX_QUERY_CHARS",
                setting="QDRANT_XAI_MAX_QUERY_CHARS",
                limit=limit,
                size=len(text),
            )

    def _allowed(self, path: str, *, what: str) -> Path:
        """``path`` resolved (symlinks followed), if it lies under an image root."""
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(root) for root in self.settings.image_roots):
            roots = ", ".join(str(r) for r in self.settings.image_roots) or "none configured"
            raise SourceNotAllowedError(
                f"{what} {short_text(path, 200)!r} is not readable: the server reads files only "
                f"under QDRANT_XAI_IMAGE_ROOTS (now: {roots}). Pass the image as base64 "
                "instead, or ask the server's operator to allow the folder"
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
                base = hit_image(self.sources, e.image_source, e.payload, what=f"hit {e.id}")
            except StaleFeaturesError:
                raise  # the heatmap is of the picture the file held before: say so, draw none
            except QdrantXaiError as exc:
                note = (
                    f"The hit's image could not be read here ({short_text(str(exc), 300)}); "
                    "the PNG shows the heatmap alone. Set QDRANT_XAI_IMAGE_ROOTS to the image "
                    "folder to see it overlaid."
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


def _filter(query_filter: dict[str, Any] | None) -> models.Filter | None:
    """The ``query_filter`` argument as a Qdrant filter (only offered with
    ``QDRANT_ALLOW_ARBITRARY_FILTER=true``)."""
    if query_filter is None:
        return None
    try:
        return models.Filter.model_validate(query_filter)
    except ValidationError as exc:
        fields = short_text(", ".join(sorted({".".join(map(str, e["loc"])) for e in exc.errors()})))
        raise QdrantXaiError(
            f"query_filter is not a Qdrant filter (problems at: {fields}); "
            'give it as qdrant-client\'s Filter in JSON, e.g. {"must": [{"key": "metadata.kind", '
            '"match": {"value": "photo"}}]}'
        ) from exc


def decode_query_image(
    data: str, limits: ImageLimits, *, what: str, setting: str = "ImageLimits.max_bytes"
) -> LoadedImage:
    """The query image sent as base64 or a data URI (never a path), decoded by
    :func:`~qdrant_xai.images.query.load_query_image` (and scaled down by it), its errors
    worded for the tool argument ``what``.

    Raises:
        InputTooLargeError: more than ``limits.max_bytes`` (judged from the length, before
            decoding); the message names ``setting``.
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
        if exc.problem == "too_large":
            size = len(data) * 3 // 4
            raise InputTooLargeError(
                f"{what} is about {size:,} bytes, over this server's limit of "
                f"{limits.max_bytes:,} ({setting}): send a smaller image (the model sees "
                f"224 pixels of it), or ask the server's operator to raise {setting}",
                setting=setting,
                limit=limits.max_bytes,
                size=size,
            ) from exc
        raise
