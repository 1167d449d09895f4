"""What ``qdrant-xai serve`` does per request, without the web: search, explain, draw.

:class:`ExplainService` holds one model, one Qdrant client and one explainer for the
server's lifetime and answers in plain JSON-ready dicts, the same fields as
``qdrant-xai search --json`` (one :meth:`~qdrant_xai.explain.results.Explanation.to_dict`
per hit), plus, when asked, each hit's picture at display size
(:class:`~qdrant_xai.render.HitPicture`). It is safe to call from several threads at once:
an embedded Qdrant is used one call at a time (:mod:`qdrant_xai.serial_client`), the encoder
serialises its own forward passes, and each call builds its own results, so concurrent
users never see each other's hits.

Images are read only through the explainer's :class:`~qdrant_xai.images.policy.ImageSourcePolicy`
(the server's ``--image-root`` folders and ``--allow-url-host`` hosts), pictures included.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from qdrant_xai.errors import QdrantXaiError, brief_repr

if TYPE_CHECKING:
    from qdrant_client import QdrantClient, models

    from qdrant_xai.encoding.encoder import ClipEncoder
    from qdrant_xai.explain.explainer import Explainer
    from qdrant_xai.explain.results import Explanation
    from qdrant_xai.images.load import LoadedImage
    from qdrant_xai.search import Searcher
    from qdrant_xai.storage.layouts import LayoutSpec

__all__ = ["ExplainOptions", "ExplainService", "RequestError"]

HitKind = Literal["image", "text"]

#: the most hits one request may ask for
MAX_LIMIT = 100
#: the largest picture a request may ask for, in pixels on the long side
MAX_PICTURE_SIZE = 1024


class RequestError(QdrantXaiError, ValueError):
    """A request the server cannot answer as given (a missing query, a limit out of
    range...); the message says what to send instead."""


@dataclass(frozen=True)
class ExplainOptions:
    """How one request wants its hits explained and shown; ``None``: the server's default.

    Attributes:
        heatmap_method, word_method: method names (``qdrant-xai search --help`` lists them).
        grounding: add one map per query word.
        rationales: add the concepts that explain each match.
        pictures: add each hit's display-size picture (``HitPicture.to_dict()``) under
            ``"picture"``, ``size`` pixels on its long side.
    """

    heatmap_method: str | None = None
    word_method: str | None = None
    grounding: bool | None = None
    rationales: bool | None = None
    pictures: bool = False
    size: int = 256

    def __post_init__(self) -> None:
        if not 16 <= self.size <= MAX_PICTURE_SIZE:
            raise RequestError(f"size must be between 16 and {MAX_PICTURE_SIZE}, not {self.size}")


class ExplainService:
    """Search and explain one collection (or any other of the same Qdrant) for many users.

    Setup::

        service = ExplainService(client, encoder, collection_name="demo",
                                 image_roots=["qdrant-xai-demo/images"])

    Use::

        service.search("a red circle", limit=5, explain=True)       # search --json's fields
        service.explain("a red circle", ids=[3, 7])                  # explain --json's fields
        service.explain("a red circle", points=hits_of_my_own_query)
        png = service.overlay_png(3, "a red circle")

    Args:
        client: the Qdrant client (an embedded one is used one call at a time).
        encoder: the model the collection was indexed with.
        collection_name: the collection searched when a request names none.
        layout: where the collections keep vectors, images and texts (default: detected
            per collection).
        **explainer_settings: the :class:`~qdrant_xai.explain.explainer.Explainer`'s
            keywords: default methods, ``grounding``, ``rationales``, image sources
            (``image_roots`` or ``sources``; pictures are read through them too), ``retry``.
    """

    def __init__(
        self,
        client: QdrantClient,
        encoder: ClipEncoder,
        *,
        collection_name: str,
        layout: LayoutSpec = "auto",
        **explainer_settings: Any,
    ) -> None:
        from qdrant_xai.explain.explainer import Explainer
        from qdrant_xai.serial_client import serial_client

        self.lock = threading.RLock()
        self.client = serial_client(client, self.lock)
        self.encoder = encoder
        self.explainer: Explainer = Explainer(
            encoder,
            self.client,
            collection_name=collection_name,
            layout=layout,
            **explainer_settings,
        )
        self.collection_name = collection_name
        self.layout = layout
        self._searchers: dict[str, Searcher] = {}
        self._searchers_lock = threading.Lock()

    # -- what the server is ---------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The model, the default collection, the methods and their defaults."""
        from qdrant_xai.explain.base import HEATMAP_METHODS, WORD_METHODS

        return {
            "model": str(self.encoder.model_id),
            "collection": self.collection_name,
            "heatmap_methods": sorted(HEATMAP_METHODS),
            "word_methods": sorted(WORD_METHODS),
            "defaults": {
                "heatmap_method": self.explainer.heatmap_method.name,
                "word_method": self.explainer.word_method.name,
                "grounding": bool(self.explainer.grounding),
                "rationales": bool(self.explainer.rationales),
            },
        }

    def collections(self, *, sample: int = 8) -> list[dict[str, Any]]:
        """What ``qdrant-xai inspect`` says of each collection (``sample`` points each;
        the feature sidecars ``NAME__xai`` are described with their collection)."""
        from qdrant_xai.storage.detect import inspect_collection

        names = sorted(c.name for c in self.client.get_collections().collections)
        reports = []
        for name in names:
            if name.endswith("__xai") and name[: -len("__xai")] in names:
                continue
            try:
                report = inspect_collection(
                    self.client,
                    name,
                    encoder=self.encoder,
                    sources=self.explainer.sources,
                    sample=sample,
                    layout=self.layout,
                    retry=self.explainer.retry,
                )
                reports.append(report.to_dict())
            except QdrantXaiError as exc:  # one odd collection does not hide the others
                reports.append({"name": name, "error": _error_dict(exc)})
        return reports

    # -- search and explain -----------------------------------------------------------------

    def search(
        self,
        query: str | LoadedImage,
        *,
        limit: int = 5,
        explain: bool = False,
        hit_kind: HitKind | None = None,
        collection_name: str | None = None,
        options: ExplainOptions | None = None,
    ) -> dict[str, Any]:
        """Searches like ``qdrant-xai search`` (default hit kind: images for a text query,
        texts for an image query) and explains the hits when ``explain``.

        Raises:
            RequestError: ``limit`` out of range.
            CollectionError: the collection does not exist or was not recognised.
            QdrantUnavailableError: Qdrant did not answer.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise RequestError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
        name = collection_name or self.collection_name
        kind: HitKind = hit_kind or ("image" if isinstance(query, str) else "text")
        hits = self._searcher(name).search(_query_input(query), hit_kind=kind, limit=limit)
        return self._answer(query, hits, name, kind, explain, options or ExplainOptions())

    def explain(
        self,
        query: str | LoadedImage,
        *,
        ids: Sequence[str | int] = (),
        points: Sequence[models.ScoredPoint] = (),
        hit_kind: HitKind | None = None,
        collection_name: str | None = None,
        options: ExplainOptions | None = None,
    ) -> dict[str, Any]:
        """Explains the points ``ids`` (scored as a search would score them, like
        ``qdrant-xai explain``), or the ``points`` a client's own search returned (their
        ids, scores and order kept).

        Raises:
            RequestError: neither or both of ``ids`` and ``points``.
            PointIdError, PointNotFoundError: an id that is not a point of the collection.
        """
        if bool(ids) == bool(points):
            raise RequestError('give either "ids" or "points" (the hits of your own search)')
        if len(ids) + len(points) > MAX_LIMIT:
            raise RequestError(f"at most {MAX_LIMIT} points per request")
        name = collection_name or self.collection_name
        hits = (
            self._searcher(name).score_points(_query_input(query), list(ids), hit_kind=hit_kind)
            if ids
            else list(points)
        )
        kind = hit_kind or ("image" if isinstance(query, str) else "text")
        return self._answer(query, hits, name, kind, True, options or ExplainOptions())

    def captions(
        self,
        point_id: str | int,
        *,
        collection_name: str | None = None,
        options: ExplainOptions | None = None,
    ) -> dict[str, Any]:
        """The captions stored with the image ``point_id`` (qdrant-xai's ``caption_ids``),
        each explained as a text query against that image: which words of its own caption
        the image matches, and where. An image without stored captions has none.

        Raises:
            PointIdError, PointNotFoundError: an id that is not a point of the collection.
        """
        from qdrant_xai.errors import PointNotFoundError
        from qdrant_xai.storage.schema import PayloadKeys, parse_point_id

        name = collection_name or self.collection_name
        wanted = parse_point_id(point_id)
        retrieve = self.explainer.retry.call
        records = retrieve(
            self.client.retrieve,
            name,
            [wanted],
            what=f"reading point {brief_repr(str(point_id))} of '{name}'",
            client=self.client,
            with_payload=[PayloadKeys.CAPTION_IDS],
        )
        if not records:
            raise PointNotFoundError(
                f"no point {brief_repr(str(point_id))} in '{name}'", ids=[point_id]
            )
        found = records[0]
        ids = list((found.payload or {}).get(PayloadKeys.CAPTION_IDS) or [])[:MAX_LIMIT]
        texts = []
        if ids:
            texts = retrieve(
                self.client.retrieve,
                name,
                ids,
                what=f"reading the captions of point {brief_repr(str(point_id))}",
                client=self.client,
                with_payload=[PayloadKeys.TEXT],
            )
        captions = []
        for record in texts:
            text = (record.payload or {}).get(PayloadKeys.TEXT)
            if not isinstance(text, str) or not text:
                continue
            answer = self.explain(
                text, ids=[wanted], hit_kind="image", collection_name=name, options=options
            )
            captions.append({"id": record.id, "text": text, "explanation": answer["hits"][0]})
        return {"id": found.id, "collection": name, "captions": captions}

    def overlay_png(
        self,
        point_id: str | int,
        query: str,
        *,
        collection_name: str | None = None,
        heatmap_method: str | None = None,
        size: int = 512,
    ) -> bytes:
        """The heatmap of ``point_id`` for the text ``query`` drawn over the point's image,
        at most ``size`` pixels on its long side, as PNG bytes.

        Raises:
            RequestError: the point is not an image, or ``size`` is out of range.
            QdrantXaiError: the point cannot be explained (the reason is its error).
        """
        from PIL import Image

        ExplainOptions(size=size)  # checks the size
        name = collection_name or self.collection_name
        hits = self._searcher(name).score_points(query, [point_id], hit_kind="image")
        (explanation,) = self.explainer.explain(
            query,
            hits,
            collection_name=name,
            heatmap_method=heatmap_method,
            grounding=False,
            rationales=False,
            hit_kind="image",
        )
        explanation.raise_for_status()
        if explanation.heatmap is None:
            raise RequestError(f"point {brief_repr(str(point_id))} has no image to draw on")
        image = self._readable(explanation).overlay()
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    # -- helpers ----------------------------------------------------------------------------

    def _searcher(self, name: str) -> Searcher:
        from qdrant_xai.search import Searcher

        with self._searchers_lock:
            if name not in self._searchers:
                self._searchers[name] = Searcher(
                    self.client,
                    self.encoder,
                    collection_name=name,
                    layout=self.layout,
                    retry=self.explainer.retry,
                )
            return self._searchers[name]

    def _answer(
        self,
        query: str | LoadedImage,
        hits: Sequence[models.ScoredPoint],
        name: str,
        kind: HitKind,
        explain: bool,
        options: ExplainOptions,
    ) -> dict[str, Any]:
        from qdrant_xai.explain.results import unexplained_record

        records: list[dict[str, Any]]
        if explain:
            explanations = self.explainer.explain(
                _query_input(query),
                hits,
                collection_name=name,
                heatmap_method=options.heatmap_method,
                word_method=options.word_method,
                grounding=options.grounding,
                rationales=options.rationales,
                hit_kind=kind,
            )
            records = [e.to_dict() for e in explanations]
            if options.pictures:
                for record, explanation in zip(records, explanations, strict=True):
                    record["picture"] = self._picture(explanation, query, options.size)
        else:
            records = [unexplained_record(hit, rank) for rank, hit in enumerate(hits)]
        return {
            "query": query if isinstance(query, str) else None,
            "query_image": None if isinstance(query, str) else query.source,
            "collection": name,
            "model": str(self.encoder.model_id),
            "hit_kind": kind,
            "explained": explain,
            "hits": records,
        }

    def _picture(
        self, explanation: Explanation, query: str | LoadedImage, size: int
    ) -> dict[str, Any] | None:
        """The hit's picture as JSON, ``{"error": ...}`` when its image cannot be read (the
        rest of the answer stands), ``None`` for a hit with nothing to draw."""
        from qdrant_xai.render import hit_picture

        if not explanation.ok or explanation.heatmap is None:
            return None
        on_query = explanation.heatmap_side == "query" and not isinstance(query, str)
        try:
            image = query.image if on_query else None  # type: ignore[union-attr]
            return hit_picture(self._readable(explanation), image, size=size).to_dict()
        except QdrantXaiError as exc:
            return {"error": _error_dict(exc)}

    def _readable(self, explanation: Explanation) -> Explanation:
        """``explanation`` reading its image through the server's source policy only."""
        return replace(explanation, sources=self.explainer.sources)


def _query_input(query: str | LoadedImage) -> Any:
    return query if isinstance(query, str) else query.image


def _error_dict(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": " ".join(str(exc).split())}
