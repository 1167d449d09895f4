"""The post-retrieval explainer: one explanation per hit of any Qdrant search.

Orchestration only: :mod:`.evidence` reads and checks what each hit needs, the methods of
:mod:`.heatmaps` and :mod:`.words` compute, :mod:`.grounding` and :mod:`.rationales` add
their parts, and :class:`~qdrant_xai.explain.results.Explanation` carries the result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from qdrant_client import QdrantClient, models

from qdrant_xai.encoding.encoder import ClipEncoder, ImageInput
from qdrant_xai.encoding.text_limits import TextLimits
from qdrant_xai.errors import QdrantXaiError
from qdrant_xai.explain.base import (
    HEATMAP_METHODS,
    WORD_METHODS,
    HeatmapMethod,
    ImageEvidence,
    WordMethod,
)
from qdrant_xai.explain.evidence import EvidenceReader, FetchRequest
from qdrant_xai.explain.grounding import Grounding, ground
from qdrant_xai.explain.hits import (
    HitData,
    failure,
    layout_of_hits,
    needed_fields,
    repeat_evidence,
    required,
    stack_evidence,
)
from qdrant_xai.explain.rationales import Rationale, RationaleScorer, reference_images
from qdrant_xai.explain.results import Explanation, text_fields
from qdrant_xai.explain.words.occlusion import WordOcclusion
from qdrant_xai.images.load import ImageLimits, LoadedImage, load_image
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.images.query import bounded_query_image
from qdrant_xai.retry import RetryPolicy
from qdrant_xai.storage.detect import resolve_layout
from qdrant_xai.storage.layouts import AUTO, CollectionLayout, LayoutSpec, layout_named
from qdrant_xai.storage.sidecar import Sidecar

__all__ = ["Explainer"]


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
        word_method: default word-attribution method (see :data:`~qdrant_xai.explain.
            WORD_METHODS`); ``None``: the family's (``prefix``; SigLIP: ``tokens``).
        grounding: attach word-to-region grounding to text-image pairs by default.
        rationales: attach rationales by default; ``True`` uses the default concept
            vocabulary, a :class:`RationaleScorer` uses yours.
        layout: where the collection keeps vectors, image sources and texts: ``"auto"``
            (default: detected from the collection, see :mod:`qdrant_xai.storage.detect`),
            a preset name (``"qdrant-xai"``, ``"langchain"``, ``"llamaindex"``,
            ``"fastembed"``, ``"qdrant-tutorial"``) or a
            :class:`~qdrant_xai.storage.layouts.CollectionLayout`. Points written by other
            tools have no stored features: they come from the sidecar, or are recomputed
            from the image (under ``image_roots``) through the same encoder path as indexing.
        sources: the policy for reading images named in payloads (overrides
            ``image_roots``/``image_limits``), e.g. to allow URLs from given hosts.
        retry: how Qdrant calls are retried (default: :class:`RetryPolicy` defaults).
        sidecar: where the features of a collection qdrant-xai did not write are kept
            (:mod:`qdrant_xai.storage.sidecar`): ``"auto"`` (default) the collection
            ``"<collection>__xai"``, or a name of your own; ``False``: none. Features read
            there skip the image; features computed from an image are written there (the
            sidecar is created on first use), so a hit's next explanation reads no image.
            The source collection itself is never written to.
        write_sidecar: ``False`` only reads an existing sidecar (read-only deployments).
        text_limits: bounds on a text query (else ``InputTooLargeError``, before any model
            work); a hit's longer text is explained from its first ``max_chars`` characters.
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
        word_method: str | WordMethod | None = None,
        grounding: bool = False,
        rationales: bool | RationaleScorer = False,
        layout: LayoutSpec = AUTO,
        sources: ImageSourcePolicy | None = None,
        retry: RetryPolicy | None = None,
        sidecar: str | bool = "auto",
        write_sidecar: bool = True,
        text_limits: TextLimits | None = None,
    ) -> None:
        self.encoder = encoder
        self.text_limits = text_limits or TextLimits()
        self.client = client
        self.retry = retry or RetryPolicy()
        self.collection_name = collection_name
        self.sources = sources or ImageSourcePolicy.from_roots(image_roots, limits=image_limits)
        # reports read hit images through the policy too once it names image folders or URL
        # hosts; else (the default) they read the local files qdrant-xai's collections name
        configured = bool(self.sources.roots) or self.sources.allow_urls
        self._render_sources = self.sources if configured else None
        if layout is not None and layout != AUTO:
            layout_named(layout)  # an unknown preset name fails here, not at the first call
        self.layout = layout
        self._layouts: dict[str, CollectionLayout] = {}
        self._reader = EvidenceReader(
            encoder, client, sources=self.sources, retry=self.retry, write_sidecar=write_sidecar
        )
        self.sidecar = sidecar
        self._sidecars: dict[str, Sidecar] = {}
        # a method the model's family cannot run fails here, not at the first explanation
        self.heatmap_method = HEATMAP_METHODS.create(heatmap_method).check_model(encoder)
        words = word_method or encoder.family.default_word_method
        self.word_method = WORD_METHODS.create(words).check_model(encoder)
        self.grounding = grounding
        self.rationales = rationales
        self._occlusion = WordOcclusion()
        self._scorer: RationaleScorer | None = (
            rationales if isinstance(rationales, RationaleScorer) else None
        )
        self._references: dict[str, np.ndarray | None] = {}  # rationale support, per collection

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
        records: Sequence[models.Record] | None = None,
        errors: Literal["report", "raise"] = "report",
    ) -> list[Explanation]:
        """One explanation per hit, in the hits' order.

        A hit that cannot be explained (its vector or features come from another model, its
        stored features are damaged, its image may not be read...) is still returned, with
        the reason in :attr:`Explanation.error` (``explanation.ok`` is ``False``); the other
        hits are explained all the same. ``errors="raise"`` raises the first such reason
        instead.

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
            records: the hits' stored features and vectors, read by the caller as
                :meth:`fetch_request` says (e.g. with an ``AsyncQdrantClient``); the
                explainer then reads nothing from Qdrant itself.
            errors: ``"report"`` (default: failed hits carry their reason) or ``"raise"``.

        Raises:
            ModelMismatchError: (``errors="raise"``) a hit's features or vectors come from
                another model.
            FeatureCodecError: (``errors="raise"``) a hit's stored features, crop box or
                words are damaged.
            FeaturesMissingError: (``errors="raise"``) a hit needs features that are not
                stored and its image may not be read (the message says how to allow it).
            QdrantUnavailableError: Qdrant did not answer (no hit can be explained).
            InputTooLargeError: a text query over ``text_limits``.
        """
        if errors not in ("report", "raise"):
            raise ValueError(f"errors must be 'report' or 'raise', not {errors!r}")
        if isinstance(query, str):
            self.text_limits.check(query, what="the text query")
        hits = list(hits)
        if not hits:
            return []
        run = _Run(
            heatmaps=self._heatmaps(heatmap_method),
            words_by=self._words(word_method),
            grounding=self.grounding if grounding is None else grounding,
            scorer=self._rationale_scorer(self.rationales if rationales is None else rationales),
        )
        name = collection_name or self.collection_name
        layout = self._resolved_layout(name, hits)
        if run.scorer and run.scorer.calibration is None and name and self.client is not None:
            if name not in self._references:  # one sample of the collection's image vectors
                self._references[name] = reference_images(
                    self.client, name, layout, retry=self.retry
                )
            run.reference = self._references[name]
        request = None if name is None else self._reader.request(hits, name, layout, run.heatmaps)
        data = self._reader.read(
            hits,
            layout=layout,
            request=request,
            records=records,
            method=run.heatmaps,
            stored_words=run.words_by.name == "tokens",
            grounding=run.grounding,
            hit_kind=hit_kind,
            default_kind="image",
            sidecar=self._sidecar(name, layout),
        )
        failed = {i: d for i, d in enumerate(data) if d.error is not None}
        if failed and errors == "raise":
            raise next(d.error for d in failed.values() if d.error is not None)
        ok = [i for i in range(len(hits)) if i not in failed]
        explained: list[Explanation] = []
        if ok:
            ok_hits, ok_data = [hits[i] for i in ok], [data[i] for i in ok]
            if isinstance(query, str):
                explained = self._explain_text_query(query, ok_hits, ok_data, run)
            else:
                explained = self._explain_image_query(query, ok_hits, ok_data, run)
        results = dict(zip(ok, explained, strict=True))
        return [
            replace(results[i], rank=i) if i in results else failure(hits[i], i, query, data[i])
            for i in range(len(hits))
        ]

    def _heatmaps(self, given: str | HeatmapMethod | None) -> HeatmapMethod:
        method = self.heatmap_method if given is None else HEATMAP_METHODS.create(given)
        return method.check_model(self.encoder)  # CLIP-only methods refuse SigLIP

    def _words(self, given: str | WordMethod | None) -> WordMethod:
        method = self.word_method if given is None else WORD_METHODS.create(given)
        return method.check_model(self.encoder)  # prefix needs CLIP's causal text tower

    def _rationale_scorer(self, rationales: bool | RationaleScorer) -> RationaleScorer | None:
        if isinstance(rationales, RationaleScorer) or not rationales:
            return rationales if isinstance(rationales, RationaleScorer) else None
        self._scorer = self._scorer or RationaleScorer(self.encoder)  # made once, then reused
        return self._scorer

    # -- text query ---------------------------------------------------------------------

    def _explain_text_query(
        self, query: str, hits: list[models.ScoredPoint], data: list[HitData], run: _Run
    ) -> list[Explanation]:
        query_embedding = self.encoder.embed_texts([query])[0]
        results = self._image_hits(hits, data, query_embedding, query_kind="text", run=run)
        images = list(results)
        if images:
            embeddings = np.stack([required(data[i].embedding) for i in images])
            texts = [query] * len(images)
            words = run.words_by.attribute(self.encoder, texts, embeddings)
            groundings = self._ground(run, texts, [data[i].contributions for i in images])
            reasons = run.rationales(texts, embeddings)
            for row, i in enumerate(images):
                results[i] = replace(
                    results[i],
                    **text_fields(query, words[row]),
                    words_side="query",
                    word_method=run.words_by.name,
                    grounding=groundings[row],
                    rationales=reasons[row],
                )
        texts_at = [i for i, d in enumerate(data) if d.kind == "text"]
        if texts_at:
            hit_texts = [(data[i].text or "")[: self.text_limits.max_chars] for i in texts_at]
            scores = run.words_by.attribute(
                self.encoder,
                hit_texts,
                np.repeat(query_embedding[None], len(texts_at), 0),
                stored=[data[i].word_contributions for i in texts_at],
            )
            for row, i in enumerate(texts_at):
                results[i] = Explanation(
                    hit=hits[i],
                    rank=i,
                    query_kind="text",
                    hit_kind="text",
                    **text_fields(hit_texts[row], scores[row], full_text=data[i].text),
                    words_side="hit",
                    word_method=run.words_by.name,
                )
        return [results[i] for i in range(len(hits))]

    # -- image query --------------------------------------------------------------------

    def _explain_image_query(
        self, query: ImageInput, hits: list[models.ScoredPoint], data: list[HitData], run: _Run
    ) -> list[Explanation]:
        loaded = bounded_query_image(query if isinstance(query, LoadedImage) else load_image(query))
        needs = needed_fields(run.heatmaps, ImageEvidence())
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
            hit_texts = [(data[i].text or "")[: self.text_limits.max_chars] for i in texts_at]
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
            evidence = repeat_evidence(query_features, loaded, n)
            heatmaps = run.heatmaps.heatmaps(self.encoder, evidence, embeddings)
            targets = np.repeat(query_features.embedding[None], n, 0)
            words = run.words_by.attribute(
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
                    heatmap_method=run.heatmaps.name,
                    image_source=query_source,
                    image=loaded,
                    crop_box=query_box,
                    **text_fields(hit_texts[row], words[row], full_text=data[i].text),
                    words_side="hit",
                    word_method=run.words_by.name,
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
        data: list[HitData],
        query_embedding: np.ndarray,
        *,
        query_kind: Literal["text", "image"],
        run: _Run,
    ) -> dict[int, Explanation]:
        """Heatmap explanations of the image hits, by hit position."""
        images = [i for i, d in enumerate(data) if d.kind == "image"]
        if not images:
            return {}
        evidence = stack_evidence([data[i] for i in images])
        heatmaps = run.heatmaps.heatmaps(self.encoder, evidence, query_embedding)
        return {
            i: Explanation(
                hit=hits[i],
                rank=i,
                query_kind=query_kind,
                hit_kind="image",
                heatmap=heatmaps[row],
                heatmap_side="hit",
                heatmap_method=run.heatmaps.name,
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
        stacked = np.stack([required(c) for c in contributions])
        return list(ground(self.encoder, texts, stacked, occlusion=self._occlusion))

    # -- what to fetch ------------------------------------------------------------------

    def fetch_request(
        self,
        hits: Sequence[models.ScoredPoint],
        *,
        collection_name: str | None = None,
        heatmap_method: str | HeatmapMethod | None = None,
    ) -> FetchRequest:
        """The one ``retrieve`` call that reads what explaining ``hits`` needs (their
        stored features for the heatmap method, their vectors), for callers that read
        Qdrant themselves and pass the records to :meth:`explain` (``records=``).

        Raises:
            QdrantXaiError: no collection is named here or on the explainer.
        """
        name = collection_name or self.collection_name
        method = self._heatmaps(heatmap_method)
        hits = list(hits)
        layout = self._resolved_layout(name, hits)
        request = None if name is None else self._reader.request(hits, name, layout, method)
        if request is None:
            raise QdrantXaiError(
                "fetch_request needs a collection: pass collection_name= here or to Explainer"
            )
        return request

    def _sidecar(self, collection_name: str | None, layout: CollectionLayout) -> Sidecar | None:
        """The sidecar of a collection another tool wrote (None for qdrant-xai's own)."""
        if (
            self.client is None
            or collection_name is None
            or self.sidecar is False
            or layout.name == "qdrant-xai"
        ):
            return None
        if collection_name not in self._sidecars:
            name = None if self.sidecar in (True, "auto") else str(self.sidecar)
            self._sidecars[collection_name] = Sidecar(
                self.client, collection_name, name=name, retry=self.retry
            )
        return self._sidecars[collection_name]

    def _resolved_layout(
        self, collection_name: str | None, hits: Sequence[models.ScoredPoint] = ()
    ) -> CollectionLayout:
        """The layout, detected when asked (``"auto"``) and with its vector names resolved
        against the collection, once per collection; without a collection to read, the one
        the hits' payloads name."""
        if self.client is None or collection_name is None:
            if self.layout is not None and self.layout != AUTO:
                return layout_named(self.layout)
            return layout_of_hits(hits)
        if collection_name not in self._layouts:
            self._layouts[collection_name] = resolve_layout(
                self.client, collection_name, self.layout, retry=self.retry
            )
        return self._layouts[collection_name]


@dataclass
class _Run:
    """The methods chosen for one :meth:`Explainer.explain` call."""

    heatmaps: HeatmapMethod
    words_by: WordMethod
    grounding: bool
    scorer: RationaleScorer | None
    reference: np.ndarray | None = None  # image vectors to calibrate support on

    def rationales(
        self, texts: list[str], images: np.ndarray
    ) -> list[tuple[Rationale, ...]] | list[None]:
        if self.scorer is None:  # not asked for: None, unlike () for "none found"
            return [None] * len(texts)
        return self.scorer.rationales(texts, images, reference=self.reference)
