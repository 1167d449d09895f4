"""The post-retrieval explainer: one explanation per hit of any Qdrant search."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai._exceptions import FeaturesMissingError, QdrantXaiError
from qdrant_xai.codec import PayloadFeatureCodec
from qdrant_xai.collection import IMAGE_VECTOR, TEXT_VECTOR, PayloadKeys
from qdrant_xai.encoder import ClipEncoder, ImageInput
from qdrant_xai.explain.decomposition import decomposition_heatmaps
from qdrant_xai.explain.occlusion import WordOcclusion
from qdrant_xai.explain.results import Explanation, WordAttribution
from qdrant_xai.images import ImageLimits, LoadedImage, load_image
from qdrant_xai.sources import ImageSourcePolicy
from qdrant_xai.words import Word

__all__ = ["Explainer"]

_FETCHED_KEYS = [
    PayloadKeys.KIND,
    PayloadKeys.FINGERPRINT,
    PayloadKeys.FEATURES,
    PayloadKeys.SOURCE,
    PayloadKeys.CROP_BOX,
    PayloadKeys.WIDTH,
    PayloadKeys.HEIGHT,
    PayloadKeys.TEXT,
]


@dataclass
class _HitData:
    """What explaining one hit needs, fetched or recomputed."""

    kind: str
    embedding: np.ndarray | None = None  # [P] normalised
    contributions: np.ndarray | None = None  # [gh, gw, P] (image hits)
    source: str | None = None
    crop_box: tuple[int, int, int, int] | None = None
    text: str | None = None


class Explainer:
    """Explains the hits of a Qdrant search without changing them.

    Setup::

        from qdrant_xai import ClipEncoder, Explainer
        explainer = Explainer(encoder, client, collection_name="photos")

    Use::

        hits = client.query_points("photos", query=encoder.embed_texts(["a red car"])[0],
                                   using="image", limit=5).points
        for explanation in explainer.explain("a red car", hits):
            print(explanation.score, explanation.peak(), explanation.top_words())

    A text query explains image hits with a heatmap over the hit (from its stored patch
    contributions: no image read, no forward pass for the hit) and word attributions of
    the query (leave-one-word-out, all variants in one batched pass). An image query
    explains text hits with word attributions of the hit's text and a heatmap over the
    query image, and image hits with a heatmap over the hit.

    Args:
        encoder: the CLIP encoder the collection was indexed with (checked per point).
        client: where to fetch the features of hits whose payload does not carry them.
        collection_name: the collection the hits come from.
        image_roots: folders from which images named in payloads may be read, to recompute
            features of points written without them. Empty: never read such images.
        image_limits: decoding bounds for images that are read.
    """

    def __init__(
        self,
        encoder: ClipEncoder,
        client: QdrantClient | None = None,
        *,
        collection_name: str | None = None,
        image_roots: Sequence[str | os.PathLike[str]] = (),
        image_limits: ImageLimits | None = None,
    ) -> None:
        self.encoder = encoder
        self.client = client
        self.collection_name = collection_name
        self.sources = ImageSourcePolicy.from_roots(image_roots, limits=image_limits)
        self.codec = PayloadFeatureCodec()
        self.occlusion = WordOcclusion(encoder)

    def explain(
        self,
        query: str | ImageInput,
        hits: Sequence[models.ScoredPoint],
        *,
        collection_name: str | None = None,
    ) -> list[Explanation]:
        """One explanation per hit, in the hits' order.

        Args:
            query: the text (``str``) or image (path as ``pathlib.Path``, bytes, Pillow
                image) the hits were retrieved for.
            hits: ``ScoredPoint``s from ``query_points``/``search`` on a qdrant-xai
                collection (or any collection whose images the explainer may read).
            collection_name: overrides the explainer's collection for this call.
        """
        hits = list(hits)
        if not hits:
            return []
        data = self._hit_data(hits, collection_name or self.collection_name)
        if isinstance(query, str):
            return self._explain_text_query(query, hits, data)
        return self._explain_image_query(query, hits, data)

    # -- text query ---------------------------------------------------------------------

    def _explain_text_query(
        self, query: str, hits: list[models.ScoredPoint], data: list[_HitData]
    ) -> list[Explanation]:
        query_embedding = self.encoder.embed_texts([query])[0]
        results = self._image_hits(hits, data, query_embedding, query_kind="text")
        if results:
            targets = np.stack([_required(data[i].embedding) for i in results])
            words, scores = self.occlusion.attribute(query, targets)
            for row, i in enumerate(list(results)):
                results[i] = replace(
                    results[i],
                    text=query,
                    words=_attributions(words, scores[row]),
                    words_side="query",
                    words_method="occlusion",
                )
        texts = [i for i, d in enumerate(data) if d.kind == "text"]
        if texts:
            pairs = self.occlusion.attribute_pairs(
                [data[i].text or "" for i in texts], np.repeat(query_embedding[None], len(texts), 0)
            )
            for (words, scores), i in zip(pairs, texts, strict=True):
                results[i] = Explanation(
                    hit=hits[i],
                    rank=i,
                    query_kind="text",
                    hit_kind="text",
                    text=data[i].text,
                    words=_attributions(words, scores),
                    words_side="hit",
                    words_method="occlusion",
                )
        return [results[i] for i in range(len(hits))]

    # -- image query --------------------------------------------------------------------

    def _explain_image_query(
        self, query: ImageInput, hits: list[models.ScoredPoint], data: list[_HitData]
    ) -> list[Explanation]:
        loaded = query if isinstance(query, LoadedImage) else load_image(query)
        query_features = self.encoder.encode_images([loaded])[0]
        query_source = loaded.source if not loaded.source.startswith("<") else None
        query_box = self.encoder.crop_box(loaded.width, loaded.height)
        results: dict[int, Explanation] = {}
        texts = [i for i, d in enumerate(data) if d.kind == "text"]
        if texts:
            hit_texts = [data[i].text or "" for i in texts]
            missing = [
                t for i, t in zip(texts, hit_texts, strict=True) if data[i].embedding is None
            ]
            fresh = iter(self.encoder.embed_texts(missing))
            embeddings = np.stack(
                [
                    embedding if (embedding := data[i].embedding) is not None else next(fresh)
                    for i in texts
                ]
            )
            heatmaps = decomposition_heatmaps(
                np.broadcast_to(
                    query_features.contributions, (len(texts), *query_features.contributions.shape)
                ),
                embeddings,
            )
            pairs = self.occlusion.attribute_pairs(
                hit_texts, np.repeat(query_features.embedding[None], len(texts), 0)
            )
            for row, ((words, scores), i) in enumerate(zip(pairs, texts, strict=True)):
                results[i] = Explanation(
                    hit=hits[i],
                    rank=i,
                    query_kind="image",
                    hit_kind="text",
                    heatmap=heatmaps[row],
                    heatmap_side="query",
                    heatmap_method="decomposition",
                    image_source=query_source,
                    crop_box=query_box,
                    text=data[i].text,
                    words=_attributions(words, scores),
                    words_side="hit",
                    words_method="occlusion",
                )
        results.update(self._image_hits(hits, data, query_features.embedding, query_kind="image"))
        return [results[i] for i in range(len(hits))]

    def _image_hits(
        self,
        hits: list[models.ScoredPoint],
        data: list[_HitData],
        query_embedding: np.ndarray,
        *,
        query_kind: Literal["text", "image"],
    ) -> dict[int, Explanation]:
        """Heatmap explanations of the image hits, by hit position."""
        images = [i for i, d in enumerate(data) if d.kind == "image"]
        if not images:
            return {}
        contributions = np.stack([_required(data[i].contributions) for i in images])
        heatmaps = decomposition_heatmaps(contributions, query_embedding)
        return {
            i: Explanation(
                hit=hits[i],
                rank=i,
                query_kind=query_kind,
                hit_kind="image",
                heatmap=heatmaps[row],
                heatmap_side="hit",
                heatmap_method="decomposition",
                image_source=data[i].source,
                crop_box=data[i].crop_box,
            )
            for row, i in enumerate(images)
        }

    # -- fetching what the hits need ----------------------------------------------------

    def _hit_data(
        self, hits: list[models.ScoredPoint], collection_name: str | None
    ) -> list[_HitData]:
        stored = self._fetch(hits, collection_name)
        data = [self._decode(hit, stored.get(str(hit.id))) for hit in hits]
        self._recompute_missing(hits, data)
        return data

    def _fetch(
        self, hits: list[models.ScoredPoint], collection_name: str | None
    ) -> dict[str, models.Record]:
        """Payload features and vectors of the hits, in one request."""
        if self.client is None or collection_name is None:
            return {}
        try:
            records = self.client.retrieve(
                collection_name,
                ids=[hit.id for hit in hits],
                with_payload=_FETCHED_KEYS,
                with_vectors=[IMAGE_VECTOR, TEXT_VECTOR],
            )
        except (ValueError, KeyError) as exc:
            raise QdrantXaiError(
                f"cannot fetch the hits' features from collection {collection_name!r} ({exc})"
            ) from exc
        return {str(r.id): r for r in records}

    def _decode(self, hit: models.ScoredPoint, record: models.Record | None) -> _HitData:
        payload: dict[str, Any] = {
            **(hit.payload or {}),
            **((record.payload if record else None) or {}),
        }
        vectors = _named_vectors(record.vector if record else None) or _named_vectors(hit.vector)
        kind = payload.get(PayloadKeys.KIND) or ("text" if PayloadKeys.TEXT in payload else "image")
        what = f"point {hit.id}"
        fingerprint = payload.get(PayloadKeys.FINGERPRINT)
        if fingerprint is not None:
            self.encoder.fingerprint.check(fingerprint, what=what)
        data = _HitData(
            kind=kind, source=payload.get(PayloadKeys.SOURCE), text=payload.get(PayloadKeys.TEXT)
        )
        box = payload.get(PayloadKeys.CROP_BOX)
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box):
            data.crop_box = (box[0], box[1], box[2], box[3])
        if fingerprint is not None:  # vectors of unknown origin are recomputed instead
            vector = vectors.get(IMAGE_VECTOR if kind == "image" else TEXT_VECTOR)
            if vector is not None:
                data.embedding = _unit(np.asarray(vector, dtype=np.float32))
        if kind == "image" and payload.get(PayloadKeys.FEATURES) is not None:
            fp = self.encoder.fingerprint
            data.contributions = self.codec.decode(
                payload[PayloadKeys.FEATURES],
                fingerprint=fp.key,
                shape=(*fp.grid, fp.dim),
                what=f"{what} features",
            )
        if kind == "text" and data.text is None:
            raise FeaturesMissingError(f"{what}: a text point without a 'text' payload")
        return data

    def _recompute_missing(self, hits: list[models.ScoredPoint], data: list[_HitData]) -> None:
        todo = [
            i
            for i, d in enumerate(data)
            if d.kind == "image" and (d.contributions is None or d.embedding is None)
        ]
        if not todo:
            return
        images = []
        for i in todo:
            missing = _what_is_missing(data[i], fetched=self.client is not None)
            source = data[i].source
            if not source:
                raise FeaturesMissingError(
                    f"point {hits[i].id} has {missing} and no image source to recompute them "
                    "from; re-index it with qdrant-xai (features are stored by default)"
                )
            try:
                images.append(self.sources.open(source))
            except QdrantXaiError as exc:
                raise FeaturesMissingError(
                    f"point {hits[i].id} has {missing}, and its image cannot be read to "
                    f"recompute them: {exc}. Re-index the collection with qdrant-xai, or allow "
                    "the image folder with image_roots"
                ) from exc
        for i, image, feats in zip(todo, images, self.encoder.encode_images(images), strict=True):
            data[i].contributions = feats.contributions
            data[i].embedding = feats.embedding
            if data[i].crop_box is None:
                data[i].crop_box = self.encoder.crop_box(image.width, image.height)


def _what_is_missing(data: _HitData, *, fetched: bool) -> str:
    if data.contributions is None:
        return "no stored patch features"
    if fetched:
        return "no stored 'image' vector from this model"
    return (
        "no 'image' vector in the hit (search with with_vectors=True, or give the explainer "
        "the client and collection_name to fetch it)"
    )


def _attributions(words: tuple[Word, ...], scores: np.ndarray) -> tuple[WordAttribution, ...]:
    return tuple(
        WordAttribution(word=w.text, score=float(s), span=w.span)
        for w, s in zip(words, scores, strict=True)
    )


def _named_vectors(vector: object) -> dict[str, Any]:
    return vector if isinstance(vector, dict) else {}


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _required(array: np.ndarray | None) -> np.ndarray:
    if array is None:  # pragma: no cover - _recompute_missing fills every image hit
        raise FeaturesMissingError("internal: image hit without features")
    return array
