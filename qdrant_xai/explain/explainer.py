"""The post-retrieval explainer: one explanation per hit of any Qdrant search."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder, ImageFeatures, ImageInput
from qdrant_xai.encoding.fingerprint import MIN_AGREEMENT
from qdrant_xai.errors import (
    FeatureCodecError,
    FeaturesMissingError,
    ModelMismatchError,
    QdrantXaiError,
)
from qdrant_xai.explain.base import (
    HeatmapMethod,
    ImageEvidence,
    WordMethod,
    WordScores,
    heatmap_method,
    word_method,
)
from qdrant_xai.explain.grounding import Grounding, ground
from qdrant_xai.explain.rationales import Rationale, RationaleScorer
from qdrant_xai.explain.results import Explanation, WordAttribution
from qdrant_xai.explain.words.occlusion import WordOcclusion
from qdrant_xai.images.load import ImageLimits, LoadedImage, load_image
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.layouts import CollectionLayout, layout_named
from qdrant_xai.storage.payloads import check_stored_words, stored_crop_box
from qdrant_xai.storage.schema import PayloadKeys

__all__ = ["Explainer"]

_LIGHT_KEYS = [
    PayloadKeys.KIND,
    PayloadKeys.FINGERPRINT,
    PayloadKeys.FEATURES,
    PayloadKeys.SOURCE,
    PayloadKeys.CROP_BOX,
    PayloadKeys.WIDTH,
    PayloadKeys.HEIGHT,
    PayloadKeys.TEXT,
    PayloadKeys.WORDS,
]
_STORED_FIELDS = {
    "patch_tokens": PayloadKeys.PATCH_TOKENS,
    "last_layer_inputs": PayloadKeys.LAST_LAYER,
}


@dataclass
class _HitData:
    """What explaining one hit needs, fetched or recomputed."""

    kind: str
    embedding: np.ndarray | None = None  # [P] normalised
    contributions: np.ndarray | None = None  # [gh, gw, P] (image hits)
    patch_tokens: np.ndarray | None = None  # [gh, gw, P] (image hits, when stored)
    last_layer_inputs: np.ndarray | None = None  # [1 + gh*gw, D] (full profile)
    image: LoadedImage | None = None  # when read
    word_contributions: np.ndarray | None = None  # [n_words, P] (text hits)
    source: str | None = None
    crop_box: tuple[int, int, int, int] | None = None
    text: str | None = None
    #: [P] normalised stored vector that no fingerprint vouches for (points written by
    #: other tools or without one): checked against this model's re-encoding
    unverified: np.ndarray | None = None


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

        # another method, grounding and rationales for one call
        explainer.explain("a red car", hits, heatmap_method="grad-eclip", grounding=True,
                          rationales=True)

    A text query explains image hits with a heatmap over the hit and word attributions
    of the query; an image query explains text hits with word attributions of the hit's
    text and a heatmap over the query image, and image hits with a heatmap over the hit.
    The default methods (``decomposition``, ``occlusion``) run from the hits' stored
    features: no image read and no forward pass per hit. Methods that need more read the
    hit's image, only from ``image_roots``.

    Args:
        encoder: the CLIP encoder the collection was indexed with (checked per point).
        client: where to fetch the features of hits whose payload does not carry them.
        collection_name: the collection the hits come from.
        image_roots: folders from which images named in payloads may be read (to recompute
            missing features, or for methods that need pixels). Empty: never read them.
        image_limits: decoding bounds for images that are read.
        heatmap_method: default heatmap method, by name (see
            :data:`~qdrant_xai.explain.HEATMAP_METHODS`) or instance.
        word_method: default word-attribution method (see
            :data:`~qdrant_xai.explain.WORD_METHODS`).
        grounding: attach word-to-region grounding to text-image pairs by default.
        rationales: attach rationales by default; ``True`` uses the default concept
            vocabulary, a :class:`RationaleScorer` uses yours.
        layout: where the collection keeps vectors, image sources and texts: a preset name
            (``"qdrant-xai"``, ``"langchain"``, ``"llamaindex"``, ``"fastembed"``,
            ``"qdrant-tutorial"``, see :mod:`qdrant_xai.storage.layouts`) or a
            :class:`~qdrant_xai.storage.layouts.CollectionLayout`. Points written by other tools
            have no stored features: they are recomputed from the image (under
            ``image_roots``) through the same encoder path as indexing.
        sources: the policy for reading images named in payloads (overrides
            ``image_roots``/``image_limits``), e.g. to allow URLs from given hosts.
        retry: how Qdrant calls are retried (default: :class:`RetryPolicy` defaults).
    """

    def __init__(
        self,
        encoder: ClipEncoder,
        client: QdrantClient | None = None,
        *,
        collection_name: str | None = None,
        image_roots: Sequence[str | os.PathLike[str]] = (),
        image_limits: ImageLimits | None = None,
        heatmap_method: str | HeatmapMethod = "decomposition",
        word_method: str | WordMethod = "occlusion",
        grounding: bool = False,
        rationales: bool | RationaleScorer = False,
        layout: str | CollectionLayout = "qdrant-xai",
        sources: ImageSourcePolicy | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.encoder = encoder
        self.client = client
        self.retry = retry or RetryPolicy()
        self.collection_name = collection_name
        self.sources = sources or ImageSourcePolicy.from_roots(image_roots, limits=image_limits)
        # reports read hit images through the policy too once it names image folders or
        # URL hosts; a policy that allows neither (the default) would show no image, so
        # reports then read the local files qdrant-xai's own collections name
        configured = bool(self.sources.roots) or self.sources.allow_urls
        self._render_sources = self.sources if configured else None
        self.layout = layout_named(layout)
        self._layouts: dict[str, CollectionLayout] = {}
        self.codec = PayloadFeatureCodec()
        self.heatmap_method = _heatmap_method(heatmap_method)
        self.word_method = _word_method(word_method)
        self.grounding = grounding
        self.rationales = rationales
        self._occlusion = WordOcclusion()
        self._scorer: RationaleScorer | None = (
            rationales if isinstance(rationales, RationaleScorer) else None
        )

    def explain(
        self,
        query: str | ImageInput,
        hits: Sequence[models.ScoredPoint],
        *,
        collection_name: str | None = None,
        heatmap_method: str | HeatmapMethod | None = None,
        word_method: str | WordMethod | None = None,
        grounding: bool | None = None,
        rationales: bool | RationaleScorer | None = None,
        hit_kind: Literal["image", "text"] | None = None,
    ) -> list[Explanation]:
        """One explanation per hit, in the hits' order.

        Args:
            query: the text (``str``) or image (path as ``pathlib.Path``, bytes, Pillow
                image) the hits were retrieved for.
            hits: ``ScoredPoint``s from ``query_points``/``search`` on a qdrant-xai
                collection (or any collection whose images the explainer may read).
            collection_name: overrides the explainer's collection for this call.
            heatmap_method, word_method, grounding, rationales: override the explainer's
                defaults for this call.
            hit_kind: what the hits are, for points that hold both an image and a text
                (Qdrant's tutorial layout: say ``"text"`` when you searched the text
                vector). Otherwise a point's kind is what qdrant-xai recorded, or what its
                payload holds (an image source or a text).
        """
        hits = list(hits)
        if not hits:
            return []
        run = _Run(
            image=_heatmap_method(heatmap_method)
            if heatmap_method is not None
            else self.heatmap_method,
            words=_word_method(word_method) if word_method is not None else self.word_method,
            grounding=self.grounding if grounding is None else grounding,
            scorer=self._rationale_scorer(self.rationales if rationales is None else rationales),
        )
        run.hit_kind = hit_kind
        run.default_kind = "image" if isinstance(query, str) else None
        data = self._hit_data(hits, collection_name or self.collection_name, run)
        if isinstance(query, str):
            return self._explain_text_query(query, hits, data, run)
        return self._explain_image_query(query, hits, data, run)

    def _rationale_scorer(self, rationales: bool | RationaleScorer) -> RationaleScorer | None:
        if isinstance(rationales, RationaleScorer):
            return rationales
        if not rationales:
            return None
        if self._scorer is None:
            self._scorer = RationaleScorer(self.encoder)
        return self._scorer

    # -- text query ---------------------------------------------------------------------

    def _explain_text_query(
        self, query: str, hits: list[models.ScoredPoint], data: list[_HitData], run: _Run
    ) -> list[Explanation]:
        query_embedding = self.encoder.embed_texts([query])[0]
        results = self._image_hits(hits, data, query_embedding, query_kind="text", run=run)
        images = list(results)
        if images:
            embeddings = np.stack([_required(data[i].embedding) for i in images])
            texts = [query] * len(images)
            words = run.words.attribute(self.encoder, texts, embeddings)
            groundings = self._ground(run, texts, [data[i].contributions for i in images])
            reasons = run.rationales(texts, embeddings)
            for row, i in enumerate(images):
                results[i] = replace(
                    results[i],
                    text=query,
                    words=_attributions(words[row]),
                    words_side="query",
                    word_method=run.words.name,
                    grounding=groundings[row],
                    rationales=reasons[row],
                )
        texts_at = [i for i, d in enumerate(data) if d.kind == "text"]
        if texts_at:
            scores = run.words.attribute(
                self.encoder,
                [data[i].text or "" for i in texts_at],
                np.repeat(query_embedding[None], len(texts_at), 0),
                stored=[data[i].word_contributions for i in texts_at],
            )
            for row, i in enumerate(texts_at):
                results[i] = Explanation(
                    hit=hits[i],
                    rank=i,
                    query_kind="text",
                    hit_kind="text",
                    text=data[i].text,
                    words=_attributions(scores[row]),
                    words_side="hit",
                    word_method=run.words.name,
                )
        return [results[i] for i in range(len(hits))]

    # -- image query --------------------------------------------------------------------

    def _explain_image_query(
        self, query: ImageInput, hits: list[models.ScoredPoint], data: list[_HitData], run: _Run
    ) -> list[Explanation]:
        loaded = query if isinstance(query, LoadedImage) else load_image(query)
        needs = _needed_fields(run.image, ImageEvidence())
        (query_features,) = self.encoder.encode_images(
            [loaded],
            patch_tokens="patch_tokens" in needs,
            last_layer="last_layer_inputs" in needs,
        )
        query_source = loaded.source if not loaded.source.startswith("<") else None
        query_box = self.encoder.crop_box(loaded.width, loaded.height)
        results: dict[int, Explanation] = {}
        texts_at = [i for i, d in enumerate(data) if d.kind == "text"]
        if texts_at:
            hit_texts = [data[i].text or "" for i in texts_at]
            missing = [
                t for i, t in zip(texts_at, hit_texts, strict=True) if data[i].embedding is None
            ]
            fresh = iter(self.encoder.embed_texts(missing))
            embeddings = np.stack(
                [
                    embedding if (embedding := data[i].embedding) is not None else next(fresh)
                    for i in texts_at
                ]
            )
            n = len(texts_at)
            evidence = _repeat_evidence(query_features, loaded, n)
            heatmaps = run.image.heatmaps(self.encoder, evidence, embeddings)
            targets = np.repeat(query_features.embedding[None], n, 0)
            words = run.words.attribute(
                self.encoder,
                hit_texts,
                targets,
                stored=[data[i].word_contributions for i in texts_at],
            )
            groundings = self._ground(run, hit_texts, [query_features.contributions] * n)
            reasons = run.rationales(hit_texts, targets)
            for row, i in enumerate(texts_at):
                results[i] = Explanation(
                    hit=hits[i],
                    rank=i,
                    query_kind="image",
                    hit_kind="text",
                    heatmap=heatmaps[row],
                    heatmap_side="query",
                    heatmap_method=run.image.name,
                    image_source=query_source,
                    image=loaded,
                    crop_box=query_box,
                    text=data[i].text,
                    words=_attributions(words[row]),
                    words_side="hit",
                    word_method=run.words.name,
                    grounding=groundings[row],
                    rationales=reasons[row],
                )
        results.update(
            self._image_hits(hits, data, query_features.embedding, query_kind="image", run=run)
        )
        return [results[i] for i in range(len(hits))]

    def _image_hits(
        self,
        hits: list[models.ScoredPoint],
        data: list[_HitData],
        query_embedding: np.ndarray,
        *,
        query_kind: Literal["text", "image"],
        run: _Run,
    ) -> dict[int, Explanation]:
        """Heatmap explanations of the image hits, by hit position."""
        images = [i for i, d in enumerate(data) if d.kind == "image"]
        if not images:
            return {}
        evidence = _stack_evidence([data[i] for i in images])
        heatmaps = run.image.heatmaps(self.encoder, evidence, query_embedding)
        return {
            i: Explanation(
                hit=hits[i],
                rank=i,
                query_kind=query_kind,
                hit_kind="image",
                heatmap=heatmaps[row],
                heatmap_side="hit",
                heatmap_method=run.image.name,
                image_source=data[i].source,
                image=data[i].image,
                crop_box=data[i].crop_box,
                sources=self._render_sources,
            )
            for row, i in enumerate(images)
        }

    def _ground(
        self, run: _Run, texts: list[str], contributions: Sequence[np.ndarray | None]
    ) -> list[Grounding | None]:
        if not run.grounding:
            return [None] * len(texts)
        stacked = np.stack([_required(c) for c in contributions])
        return list(ground(self.encoder, texts, stacked, occlusion=self._occlusion))

    # -- fetching what the hits need ----------------------------------------------------

    def _hit_data(
        self, hits: list[models.ScoredPoint], collection_name: str | None, run: _Run
    ) -> list[_HitData]:
        stored = self._fetch(hits, collection_name, run)
        data = [self._decode(hit, stored.get(str(hit.id)), run) for hit in hits]
        self._complete_image_hits(hits, data, run)
        self._verify_vectors(hits, data)
        return data

    def _fetch(
        self, hits: list[models.ScoredPoint], collection_name: str | None, run: _Run
    ) -> dict[str, models.Record]:
        """Payload features and vectors of the hits, in one request."""
        if self.client is None or collection_name is None:
            run.layout = self.layout
            return {}
        layout = run.layout = self._resolved_layout(collection_name)
        keys = [*_LIGHT_KEYS, *layout.payload_keys()]
        for option in run.image.requires:
            keys += [_STORED_FIELDS[f] for f in option if f in _STORED_FIELDS]
        try:
            records = self.retry.call(
                self.client.retrieve,
                collection_name,
                what=f"reading the features of {len(hits)} hits from {collection_name!r}",
                client=self.client,
                ids=[hit.id for hit in hits],
                with_payload=list(dict.fromkeys(keys)),
                with_vectors=layout.vector_request(),
            )
        except (ValueError, KeyError) as exc:
            raise QdrantXaiError(
                f"cannot fetch the hits' features from collection {collection_name!r} ({exc})"
            ) from exc
        return {str(r.id): r for r in records}

    def _resolved_layout(self, collection_name: str) -> CollectionLayout:
        if collection_name not in self._layouts:
            assert self.client is not None
            if self.layout.name == "qdrant-xai":
                self._layouts[collection_name] = self.layout
            else:
                self._layouts[collection_name] = self.layout.resolve(
                    self.client, collection_name, retry=self.retry
                )
        return self._layouts[collection_name]

    def _decode(self, hit: models.ScoredPoint, record: models.Record | None, run: _Run) -> _HitData:
        payload: dict[str, Any] = {
            **(hit.payload or {}),
            **((record.payload if record else None) or {}),
        }
        layout = run.layout or self.layout
        stored_vector = record.vector if record is not None else None
        if stored_vector is None:
            stored_vector = hit.vector
        source = layout.image_source(payload)
        text = layout.text(payload)
        recorded = payload.get(PayloadKeys.KIND)
        kind: str
        if (run.hit_kind == "image" and source) or (run.hit_kind == "text" and text):
            kind = run.hit_kind  # a point holding both (one image, one caption vector)
        elif recorded in ("image", "text"):
            kind = recorded
        else:
            kind = _infer_kind(run.default_kind, source, text)
        what = f"point {hit.id}"
        fingerprint = payload.get(PayloadKeys.FINGERPRINT)
        if fingerprint is not None:
            self.encoder.fingerprint.check(fingerprint, what=what)
        data = _HitData(kind=kind, source=source, text=text)
        if kind == "image" and recorded == "image":  # another tool's crop_box means its own
            data.crop_box = stored_crop_box(payload, what)
        vector = layout.vector_of(stored_vector, "image" if kind == "image" else "text")
        if vector is not None:
            unit = self._stored_unit(vector, what)
            # one vector for both kinds on a point holding an image and a text is the image's
            shared = layout.image_vector == layout.text_vector and source and kind == "text"
            if fingerprint is not None and recorded == kind:
                data.embedding = unit
            elif not shared:  # recomputed instead, then checked against it (_verify_vectors)
                data.unverified = unit
        fp = self.encoder.fingerprint
        if kind == "image" and recorded == "image":
            shapes = {
                PayloadKeys.FEATURES: (*fp.grid, fp.dim),
                PayloadKeys.PATCH_TOKENS: (*fp.grid, fp.dim),
                PayloadKeys.LAST_LAYER: (1 + fp.grid[0] * fp.grid[1], self.encoder.vision_width),
            }
            decoded = {
                key: self.codec.decode(
                    payload[key], fingerprint=fp.key, shape=shape, what=f"{what} {key}"
                )
                for key, shape in shapes.items()
                if payload.get(key) is not None
            }
            data.contributions = decoded.get(PayloadKeys.FEATURES)
            data.patch_tokens = decoded.get(PayloadKeys.PATCH_TOKENS)
            data.last_layer_inputs = decoded.get(PayloadKeys.LAST_LAYER)
        if kind == "text" and data.text is None:
            raise FeaturesMissingError(
                f"{what}: a text hit without a text in its payload (looked for "
                f"{', '.join(layout.text_keys)}); pass layout=... for collections written by "
                "other tools"
            )
        words = payload.get(PayloadKeys.WORDS)
        if (
            kind == "text"
            and recorded == "text"
            and run.words.name == "tokens"
            and payload.get(PayloadKeys.FEATURES) is not None
            and isinstance(words, list)
            and words
        ):
            check_stored_words(words, data.text or "", what)
            data.word_contributions = self.codec.decode(
                payload[PayloadKeys.FEATURES],
                fingerprint=fp.key,
                shape=(len(words), fp.dim),
                what=f"{what} word features",
            )
        return data

    def _stored_unit(self, vector: list[float], what: str) -> np.ndarray:
        """A hit's stored vector, normalised, if it can come from this model.

        Raises:
            ModelMismatchError: its dimension is not this model's.
            FeatureCodecError: it is not a finite vector of numbers.
        """
        try:
            array = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise FeatureCodecError(f"{what}: its stored vector is not a list of numbers") from exc
        if array.ndim != 1 or not np.isfinite(array).all():
            raise FeatureCodecError(f"{what}: its stored vector is not a finite 1-d vector")
        if array.shape[0] != self.encoder.dim:
            raise ModelMismatchError(
                f"{what}: its stored vector has dimension {array.shape[0]}, "
                f"{self.encoder.model_id} gives {self.encoder.dim}: the collection was built "
                "with another model; explain with that model"
            )
        return _unit(array)

    def _verify_vectors(self, hits: list[models.ScoredPoint], data: list[_HitData]) -> None:
        """Hits that no fingerprint vouches for must have been found with this model: their
        stored vector must agree with this model's re-encoding (as :func:`check_vectors`
        demands), or every explanation would be drawn with a model that did not retrieve
        them. Runs before any heatmap; image hits are re-encoded already, texts here.

        Raises:
            ModelMismatchError: a stored vector disagrees with its re-encoding.
        """
        texts = [i for i, d in enumerate(data) if d.unverified is not None and d.embedding is None]
        if texts:
            fresh = self.encoder.embed_texts([data[i].text or "" for i in texts])
            for i, embedding in zip(texts, fresh, strict=True):
                data[i].embedding = embedding
        for hit, d in zip(hits, data, strict=True):
            if d.unverified is None or d.embedding is None:
                continue
            agreement = float(d.unverified @ d.embedding)
            if agreement < MIN_AGREEMENT:
                raise ModelMismatchError(
                    f"point {hit.id}: its stored {d.kind} vector does not come from "
                    f"{self.encoder.model_id} (cosine {agreement:.3f} with the re-encoded "
                    f"{d.kind}, needs {MIN_AGREEMENT}); explain with the model the collection "
                    "was built with (check_vectors / qdrant-xai backfill check a sample)"
                )

    def _complete_image_hits(
        self, hits: list[models.ScoredPoint], data: list[_HitData], run: _Run
    ) -> None:
        """Reads the image of every hit whose stored features do not suffice, and encodes it."""
        images_at = [i for i, d in enumerate(data) if d.kind == "image"]
        stored = _stack_evidence([data[i] for i in images_at]) if images_at else ImageEvidence()
        needs = _needed_fields(run.image, stored)
        if run.grounding:
            needs.add("contributions")
        todo = [
            i
            for i in images_at
            if data[i].embedding is None or any(not _has(data[i], f) for f in needs)
        ]
        if not todo:
            return
        loaded = []
        for i in todo:
            missing = _what_is_missing(data[i], needs, fetched=self.client is not None)
            source = data[i].source
            if not source:
                raise FeaturesMissingError(
                    f"point {hits[i].id} has {missing} and no image source to read; re-index "
                    "it with qdrant-xai (features are stored by default; --profile full for "
                    "gradient methods)"
                )
            try:
                loaded.append(self.sources.open(source))
            except QdrantXaiError as exc:
                raise FeaturesMissingError(
                    f"point {hits[i].id} has {missing}, and its image cannot be read: {exc}. "
                    f"The image source policy: {self.sources.describe()}. Allow the image "
                    "folder with image_roots (CLI: --image-root) or its URL host (sources="
                    "ImageSourcePolicy(allow_urls=True, allowed_hosts=[...]); CLI: "
                    "--allow-url-host), or backfill / re-index the collection with qdrant-xai "
                    "(--profile full for gradient methods)"
                ) from exc
        encoded = self.encoder.encode_images(
            loaded,
            patch_tokens="patch_tokens" in needs,
            last_layer="last_layer_inputs" in needs,
        )
        for i, image, feats in zip(todo, loaded, encoded, strict=True):
            hit = data[i]
            hit.embedding = feats.embedding
            hit.contributions = feats.contributions
            hit.patch_tokens = feats.patch_tokens if hit.patch_tokens is None else hit.patch_tokens
            if hit.last_layer_inputs is None:
                hit.last_layer_inputs = feats.last_layer_inputs
            hit.image = image
            # the features are this image's now: so is the box (the file may have changed)
            hit.crop_box = self.encoder.crop_box(image.width, image.height)


@dataclass
class _Run:
    """The methods chosen for one :meth:`Explainer.explain` call."""

    image: HeatmapMethod
    words: WordMethod
    grounding: bool
    scorer: RationaleScorer | None
    hit_kind: Literal["image", "text"] | None = None  # given by the caller
    default_kind: Literal["image", "text"] | None = None  # for points that do not say
    layout: CollectionLayout | None = None

    def rationales(self, texts: list[str], images: np.ndarray) -> list[tuple[Rationale, ...]]:
        if self.scorer is None:
            return [()] * len(texts)
        return self.scorer.rationales(texts, images)


def _heatmap_method(method: str | HeatmapMethod) -> HeatmapMethod:
    return heatmap_method(method)


def _word_method(method: str | WordMethod) -> WordMethod:
    return word_method(method)


def _needed_fields(method: HeatmapMethod, stored: ImageEvidence) -> set[str]:
    """The evidence fields to have for every hit: the first option already stored for all
    hits, else the first option that a read of the image can provide."""
    for option in method.requires:
        if all(stored.has(f) for f in option):
            return set(option)
    return set(method.requires[0])


def _stack_evidence(hits: Sequence[_HitData]) -> ImageEvidence:
    """Evidence of several image hits; a field is present only when every hit has it."""

    def stacked(name: str) -> np.ndarray | None:
        values = [getattr(h, name) for h in hits]
        return None if any(v is None for v in values) else np.stack(values)

    images = [h.image for h in hits]
    return ImageEvidence(
        embeddings=stacked("embedding"),
        contributions=stacked("contributions"),
        patch_tokens=stacked("patch_tokens"),
        last_layer_inputs=stacked("last_layer_inputs"),
        images=None if any(im is None for im in images) else [im for im in images if im],
    )


def _repeat_evidence(features: ImageFeatures, image: LoadedImage, n: int) -> ImageEvidence:
    """Evidence of one (query) image, repeated for n pairs."""

    def repeated(value: np.ndarray | None) -> np.ndarray | None:
        return None if value is None else np.repeat(value[None], n, 0)

    return ImageEvidence(
        embeddings=repeated(features.embedding),
        contributions=repeated(features.contributions),
        patch_tokens=repeated(features.patch_tokens),
        last_layer_inputs=repeated(features.last_layer_inputs),
        images=[image] * n,
    )


def _infer_kind(
    default: Literal["image", "text"] | None, source: str | None, text: str | None
) -> str:
    """The kind of a point that does not record it (written by another tool)."""
    if source is not None and text is None:
        return "image"
    if text is not None and source is None:
        return "text"
    return default or "image"


def _has(data: _HitData, field: str) -> bool:
    return (data.image if field == "images" else getattr(data, field)) is not None


def _what_is_missing(data: _HitData, needs: set[str], *, fetched: bool) -> str:
    absent = [f for f in sorted(needs) if f != "images" and getattr(data, f) is None]
    if absent:
        return "no stored " + " or ".join(f.replace("_", " ") for f in absent)
    if "images" in needs:
        return "a method that reads the image"
    if fetched:
        return "no stored 'image' vector from this model"
    return (
        "no 'image' vector in the hit (search with with_vectors=True, or give the explainer "
        "the client and collection_name to fetch it)"
    )


def _attributions(scores: WordScores) -> tuple[WordAttribution, ...]:
    words, values = scores
    return tuple(
        WordAttribution(word=w.text, score=float(s), span=w.span)
        for w, s in zip(words, values, strict=True)
    )


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _required(array: np.ndarray | None) -> np.ndarray:
    if array is None:  # pragma: no cover - _complete_image_hits fills every image hit
        raise FeaturesMissingError("internal: image hit without features")
    return array
