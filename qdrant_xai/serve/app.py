"""The web face of :class:`~qdrant_xai.serve.service.ExplainService`: a JSON API and the
browser UI, as one FastAPI application.

Routes (the OpenAPI document is at ``/api/openapi.json``)::

    GET  /                                 the explorer (static files, no CDN)
    GET  /api/info                         model, default collection, methods
    GET  /api/collections                  what `qdrant-xai inspect` says of each collection
    GET  /api/search?q=TEXT&limit=K&explain=true&heatmap_method=...   (search --json's fields)
    POST /api/search                       the same with an image upload (multipart "image")
    POST /api/explain                      a query plus point ids, or plus your own ScoredPoints
    GET  /api/points/{id}/captions         an image's stored captions, each explained against it
    GET  /api/points/{id}/overlay.png?query=TEXT    the heatmap over the point's image

Model work runs in the server's thread pool, never on the event loop. Errors are JSON,
``{"error": {"type": ..., "message": ...}}``, with the package's typed messages. Every
response carries a content-security policy that allows only the server's own scripts,
styles and images; JSON has ``<``, ``>`` and ``&`` escaped, so no payload value can become
markup even if a browser were tricked into reading it as HTML. Requests whose ``Host`` is
not the server's own are refused (DNS rebinding).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import AliasChoices, BaseModel, Field
from qdrant_client import models
from starlette.middleware.trustedhost import TrustedHostMiddleware

from qdrant_xai.errors import (
    CollectionError,
    ImageLoadError,
    InputTooLargeError,
    PointNotFoundError,
    QdrantUnavailableError,
    QdrantXaiError,
    brief_repr,
)
from qdrant_xai.images.load import LoadedImage
from qdrant_xai.serve.service import ExplainOptions, ExplainService, RequestError

__all__ = ["CONTENT_SECURITY_POLICY", "create_app"]

STATIC = Path(__file__).with_name("static")

#: what the UI may load: its own scripts, styles and data (images also as data: URIs)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

HitKind = Literal["image", "text"]


class SafeJSONResponse(JSONResponse):
    """JSON with ``<``, ``>`` and ``&`` written as ``\\u`` escapes (the same JSON)."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return text.encode("utf-8")


class ExplainBody(BaseModel):
    """``POST /api/explain``: one query (``query`` text or ``image``) and the hits, as point
    ``ids`` or as the ``points`` (ScoredPoints) your own Qdrant search returned."""

    query: str | None = Field(None, description="text query")
    image: str | None = Field(None, description="image query: base64 or a data: URI")
    ids: list[int | str] = Field(default_factory=list, description="point ids to explain")
    points: list[dict[str, Any]] = Field(
        default_factory=list,
        description="ScoredPoints of your own query_points call (id, score, payload...); "
        "their ids, scores and order are kept",
    )
    hit_kind: HitKind | None = None
    collection: str | None = None
    heatmap_method: str | None = Field(
        None, validation_alias=AliasChoices("heatmap_method", "method")
    )
    word_method: str | None = None
    grounding: bool | None = None
    rationales: bool | None = None
    pictures: bool = False
    size: int = 256


def create_app(
    service: ExplainService, *, allowed_hosts: Sequence[str] = ("127.0.0.1", "localhost", "[::1]")
) -> FastAPI:
    """The application serving ``service``.

    Args:
        allowed_hosts: the ``Host`` header values accepted (``"*"``: any); others get 400.
    """
    app = FastAPI(
        title="qdrant-xai",
        summary="Search a Qdrant collection with CLIP and see why each hit matched.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the interactive docs load scripts from a CDN; the CSP forbids it
        redoc_url=None,
        default_response_class=SafeJSONResponse,
    )
    app.state.service = service
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    # the largest request body: an image at the policy's byte limit, as base64, plus JSON
    max_body = service.explainer.sources.limits.max_bytes * 4 // 3 + 1024 * 1024

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        """Refuses oversized bodies before reading them; sets the security headers."""
        length = request.headers.get("content-length", "0")
        response: Response
        if not length.isdigit() or int(length) > max_body:
            response = _error(
                413,
                InputTooLargeError(
                    f"the request body is over {max_body} bytes; send a smaller image",
                    setting="ImageLimits.max_bytes",
                    limit=max_body,
                    size=int(length) if length.isdigit() else -1,
                ),
            )
        else:
            response = await call_next(request)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        return response

    @app.exception_handler(QdrantXaiError)
    async def typed_error(request: Request, exc: QdrantXaiError) -> Response:
        return _error(_status(exc), exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()[:5]
        )
        return _error(422, RequestError(f"invalid request ({problems})"))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info", summary="the model, the default collection and the methods")
    def info() -> dict[str, Any]:
        return service.info()

    @app.get("/api/collections", summary="what `qdrant-xai inspect` says of each collection")
    def collections(sample: Annotated[int, Query(ge=1, le=64)] = 8) -> list[dict[str, Any]]:
        return service.collections(sample=sample)

    @app.get("/api/search", summary="search by text; with explain=true, explain every hit")
    def search_text(
        q: Annotated[str, Query(min_length=1, description="text query")],
        limit: Annotated[int, Query(ge=1, le=100)] = 5,
        explain: bool = False,
        hit_kind: HitKind | None = None,
        collection: str | None = None,
        heatmap_method: Annotated[str | None, Query(alias="method")] = None,
        word_method: str | None = None,
        grounding: bool | None = None,
        rationales: bool | None = None,
        pictures: bool = False,
        size: Annotated[int, Query(ge=16, le=1024)] = 256,
    ) -> dict[str, Any]:
        options = ExplainOptions(heatmap_method, word_method, grounding, rationales, pictures, size)
        return service.search(
            q,
            limit=limit,
            explain=explain,
            hit_kind=hit_kind,
            collection_name=collection,
            options=options,
        )

    @app.post("/api/search", summary="search by an uploaded image (or text), as GET does")
    def search_upload(
        image: Annotated[UploadFile | None, File(description="image query")] = None,
        q: Annotated[str | None, Form(description="text query instead of an image")] = None,
        limit: Annotated[int, Form(ge=1, le=100)] = 5,
        explain: Annotated[bool, Form()] = False,
        hit_kind: Annotated[HitKind | None, Form()] = None,
        collection: Annotated[str | None, Form()] = None,
        heatmap_method: Annotated[str | None, Form(alias="method")] = None,
        word_method: Annotated[str | None, Form()] = None,
        grounding: Annotated[bool | None, Form()] = None,
        rationales: Annotated[bool | None, Form()] = None,
        pictures: Annotated[bool, Form()] = False,
        size: Annotated[int, Form(ge=16, le=1024)] = 256,
    ) -> dict[str, Any]:
        if (image is None) == (q is None):
            raise RequestError('send either an "image" file or a "q" text (not both)')
        query: str | LoadedImage = _uploaded(image, service) if image is not None else str(q)
        options = ExplainOptions(heatmap_method, word_method, grounding, rationales, pictures, size)
        return service.search(
            query,
            limit=limit,
            explain=explain,
            hit_kind=hit_kind,
            collection_name=collection,
            options=options,
        )

    @app.post("/api/explain", summary="explain point ids, or the hits of your own search")
    def explain(body: Annotated[ExplainBody, Body()]) -> dict[str, Any]:
        if (body.query is None) == (body.image is None):
            raise RequestError('give either "query" (text) or "image" (base64), not both')
        query: Any = body.query
        if body.image is not None:
            from qdrant_xai.images.query import load_query_image

            # base64 or a data URI only (no paths), scaled down as a search query is
            limits = service.explainer.sources.limits
            query = load_query_image(body.image, roots=(), limits=limits)
        points = [_scored_point(p, i) for i, p in enumerate(body.points)]
        options = ExplainOptions(
            body.heatmap_method,
            body.word_method,
            body.grounding,
            body.rationales,
            body.pictures,
            body.size,
        )
        return service.explain(
            query,
            ids=body.ids,
            points=points,
            hit_kind=body.hit_kind,
            collection_name=body.collection,
            options=options,
        )

    @app.get(
        "/api/points/{point_id}/captions",
        summary="the captions stored with an image, each explained against it",
    )
    def captions(
        point_id: str,
        collection: str | None = None,
        heatmap_method: Annotated[str | None, Query(alias="method")] = None,
        word_method: str | None = None,
        pictures: bool = False,
        size: Annotated[int, Query(ge=16, le=1024)] = 256,
    ) -> dict[str, Any]:
        options = ExplainOptions(heatmap_method, word_method, False, False, pictures, size)
        return service.captions(point_id, collection_name=collection, options=options)

    @app.get(
        "/api/points/{point_id}/overlay.png",
        summary="the heatmap of a point for a text query, over its image",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def overlay(
        point_id: str,
        query: Annotated[str, Query(min_length=1)],
        collection: str | None = None,
        heatmap_method: Annotated[str | None, Query(alias="method")] = None,
        size: Annotated[int, Query(ge=16, le=1024)] = 512,
    ) -> Response:
        png = service.overlay_png(
            point_id, query, collection_name=collection, heatmap_method=heatmap_method, size=size
        )
        return Response(png, media_type="image/png")

    return app


def _uploaded(upload: UploadFile, service: ExplainService) -> LoadedImage:
    """The uploaded query image, decoded under the server's image limits and scaled down
    as a search query is."""
    from qdrant_xai.images.load import load_image
    from qdrant_xai.images.query import bounded_query_image

    limits = service.explainer.sources.limits
    data = upload.file.read(limits.max_bytes + 1)
    name = f"uploaded image {brief_repr(upload.filename or '')}"
    return bounded_query_image(load_image(data, limits=limits, name=name))


def _scored_point(value: dict[str, Any], index: int) -> models.ScoredPoint:
    """One of a client's own hits, as qdrant-client (or Qdrant's REST API) wrote it."""
    from pydantic import ValidationError

    try:
        return models.ScoredPoint.model_validate({"version": 0, **value})
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:3])
        raise RequestError(
            f"points[{index}] is not a ScoredPoint (needs id and score; bad: {fields}); send "
            "the points of query_points as the client returned them"
        ) from exc


def _status(exc: QdrantXaiError) -> int:
    if isinstance(exc, InputTooLargeError):
        return 413
    if isinstance(exc, PointNotFoundError):
        return 404
    if isinstance(exc, QdrantUnavailableError):
        return 503
    if isinstance(exc, CollectionError) and "does not exist" in str(exc):
        return 404
    if isinstance(exc, ImageLoadError | RequestError | ValueError):
        return 400
    return 422


def _error(status: int, exc: BaseException) -> Response:
    message = " ".join(str(exc).split())
    return SafeJSONResponse(
        {"error": {"type": type(exc).__name__, "message": message}}, status_code=status
    )
