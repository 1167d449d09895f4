"""Typed explanation results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image
from qdrant_client import models

from qdrant_xai.encoding.words import split_words
from qdrant_xai.errors import ImageLoadError, QdrantXaiError, brief_repr
from qdrant_xai.images.load import LoadedImage, load_image
from qdrant_xai.images.overlay import overlay_heatmap
from qdrant_xai.images.policy import ImageSourcePolicy, SourceKind
from qdrant_xai.images.sniff import looks_like_base64_image
from qdrant_xai.storage.payloads import check_content, check_source_content
from qdrant_xai.storage.schema import PayloadKeys, without_features

if TYPE_CHECKING:
    from collections.abc import Mapping

    from qdrant_xai.explain.base import WordScores
    from qdrant_xai.explain.grounding import Grounding
    from qdrant_xai.explain.rationales import Rationale

__all__ = [
    "Explanation",
    "WordAttribution",
    "attributions",
    "grid_region",
    "hit_image",
    "text_fields",
    "unexplained_record",
]

Side = Literal["query", "hit"]


@dataclass(frozen=True)
class WordAttribution:
    """How much one word moved the similarity score.

    Attributes:
        word: the word as it appears in the text.
        score: its attribution (cosine points; positive = the word raised the score).
        span: ``(start, end)`` character span of the word in the text.
    """

    word: str
    score: float
    span: tuple[int, int]


@dataclass(frozen=True)
class Explanation:
    """Why one hit matched its query.

    The hit is kept as Qdrant returned it: ``id``, ``score`` and rank are never changed.

    Attributes:
        hit: the ``ScoredPoint`` being explained.
        rank: its 0-based position in the hit list.
        query_kind: ``"text"`` or ``"image"``.
        hit_kind: ``"image"`` or ``"text"``.
        heatmap: [gh, gw] relevance of each patch of the pair's image to the other side,
            or ``None`` for a text-text pair.
        heatmap_side: whose image the heatmap covers: ``"hit"`` (text→image, image→image)
            or ``"query"`` (image→text).
        image_source: path or URL of that image, when known.
        crop_box: ``(x0, y0, x1, y1)``, the region of that image the patch grid covers.
        text: the text whose words are attributed (the query's, or the hit's).
        words: attributions of ``text``'s words, in reading order.
        words_side: ``"query"`` (text→image) or ``"hit"`` (image→text, text→text).
        heatmap_method, word_method: the names of the methods that produced them.
        grounding: where each content word of ``text`` is found in the heatmap's image
            (text-image pairs, when asked for).
        rationales: concepts that explain the match, best first, when asked for: ``None``
            when rationales were not asked for, ``()`` when they were and no concept both
            raises the match and is supported by the image ("no rationale found").
        words_left_out: words of ``text`` past the model's context (CLIP never saw them,
            so they are not attributed; the embedding ignores them too).
        chars_left_out: characters of the hit's text past
            :attr:`~qdrant_xai.encoding.text_limits.TextLimits.max_chars`, not read at all
            (``text`` is the text's first ``max_chars`` characters); 0 for most hits.
        error: why this hit could not be explained (model mismatch, missing features, an
            unreadable image...), or ``None``; the other hits of the call are explained
            all the same. See :attr:`ok` and :meth:`raise_for_status`.
    """

    hit: models.ScoredPoint
    rank: int
    query_kind: Literal["text", "image"]
    hit_kind: Literal["image", "text"]
    heatmap: np.ndarray | None = None
    heatmap_side: Side | None = None
    image_source: str | None = None
    crop_box: tuple[int, int, int, int] | None = None
    text: str | None = None
    words: tuple[WordAttribution, ...] = ()
    words_side: Side | None = None
    heatmap_method: str | None = None
    word_method: str | None = None
    grounding: Grounding | None = None
    rationales: tuple[Rationale, ...] | None = None
    #: the decoded image the heatmap covers, when the explainer read it (foreign sources)
    image: LoadedImage | None = field(default=None, repr=False, compare=False)
    #: the policy the explainer read images under, when it names image folders or URL
    #: hosts: rendering then reads ``image_source`` through it too
    sources: ImageSourcePolicy | None = field(default=None, repr=False, compare=False)
    error: QdrantXaiError | None = field(default=None, compare=False)
    words_left_out: int = 0
    chars_left_out: int = 0

    @property
    def ok(self) -> bool:
        """Whether the hit was explained (``error`` is ``None``)."""
        return self.error is None

    @property
    def status(self) -> Literal["ok", "failed"]:
        """``"ok"``, or ``"failed"`` with the reason in :attr:`error`."""
        return "ok" if self.error is None else "failed"

    def raise_for_status(self) -> Explanation:
        """This explanation, or its :attr:`error` raised when the hit could not be explained
        (for callers that want all-or-nothing)."""
        if self.error is not None:
            raise self.error
        return self

    @property
    def id(self) -> models.ExtendedPointId:
        return self.hit.id

    @property
    def score(self) -> float:
        return self.hit.score

    @property
    def payload(self) -> dict[str, Any]:
        """The hit's payload without the stored feature maps."""
        return without_features(self.hit.payload)

    def top_words(self, n: int = 3) -> list[WordAttribution]:
        """The ``n`` words with the highest attribution."""
        return sorted(self.words, key=lambda w: w.score, reverse=True)[:n]

    def peak(self) -> tuple[int, int] | None:
        """``(row, col)`` of the heatmap's maximum, 0-based from the top-left cell (the grid
        coordinates of every output: JSON, CLI, LangChain, MCP)."""
        if self.heatmap is None:
            return None
        row, col = np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape)
        return int(row), int(col)

    def peak_region(self) -> str | None:
        """Where the heatmap's maximum is, in words (``"top-left"``, ``"center"``, ...)."""
        peak = self.peak()
        if peak is None or self.heatmap is None:
            return None
        return grid_region(*peak, *self.heatmap.shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``id``, ``score``, ``rank``, ``payload`` (no features),
        ``heatmap`` as a nested list, ``words`` as ``[word, score, [start, end]]``."""
        return {
            "id": self.id,
            "score": self.score,
            "rank": self.rank,
            "status": self.status,
            "error": None
            if self.error is None
            else {"type": type(self.error).__name__, "message": str(self.error)},
            "payload": self.payload,
            "query_kind": self.query_kind,
            "hit_kind": self.hit_kind,
            "heatmap": None if self.heatmap is None else np.round(self.heatmap, 6).tolist(),
            "heatmap_side": self.heatmap_side,
            "heatmap_method": self.heatmap_method,
            "image_source": self.image_source,
            "crop_box": None if self.crop_box is None else list(self.crop_box),
            "text": self.text,
            "words": [[w.word, round(w.score, 6), list(w.span)] for w in self.words],
            "words_side": self.words_side,
            "word_method": self.word_method,
            "grounding": None if self.grounding is None else self.grounding.to_dict(),
            "rationales": (
                None if self.rationales is None else [r.to_dict() for r in self.rationales]
            ),
            "words_left_out": self.words_left_out,
            "chars_left_out": self.chars_left_out,
        }

    def left_out_note(self) -> str | None:
        """One sentence saying which part of :attr:`text` the model never saw (words past
        its context, characters past the text limit), or ``None`` when it saw all of it."""
        if not (self.words_left_out or self.chars_left_out):
            return None
        whose = "the query" if self.words_side == "query" else "the hit's text"
        parts = []
        if self.words_left_out:
            parts.append(
                f"the last {self.words_left_out:,} words of {whose} are past the model's "
                "context: CLIP never saw them and they are not attributed"
            )
        if self.chars_left_out:
            parts.append(
                f"{self.chars_left_out:,} characters past the text limit (TextLimits.max_chars) "
                "were not read"
            )
        note = "; ".join(parts)
        return note[0].upper() + note[1:] + "."

    def overlay(self, image: Image.Image | None = None, *, alpha: float = 0.55) -> Image.Image:
        """The heatmap drawn over its image: ``image`` if given, else the one the explainer
        read, else the source the hit's payload names, read under the explainer's source
        policy when it had one (so a planted path cannot put a file outside
        ``image_roots`` into a report), else as a local file (qdrant-xai's own collections
        store local paths).

        Raises:
            ValueError: the explanation has no heatmap (a text-text pair).
            ImageLoadError: no image can be read, or it is smaller than the recorded crop
                box (the file changed since it was indexed).
        """
        if self.heatmap is None:
            raise ValueError(f"the explanation of hit {self.id} has no heatmap")
        if image is None:
            image = self.original_image()
        box = self.crop_box
        if box is not None and not (box[2] <= image.width and box[3] <= image.height):
            raise ImageLoadError(
                self.image_source or f"the image of hit {self.id}",
                f"is {image.width}x{image.height}, smaller than the crop box {box} recorded "
                "when the hit was indexed: the file changed since; re-index or backfill it",
            )
        return overlay_heatmap(image, self.heatmap, box, alpha=alpha)

    def original_image(self) -> Image.Image:
        """The image under the heatmap, read as :meth:`overlay` says."""
        if self.image is not None:
            return self.image.image
        source = self.image_source
        if not source:
            raise ImageLoadError(
                f"hit {self.id}", "no image given and no image source known in its payload"
            )
        what = f"hit {self.id}"
        if self.sources is not None:
            return hit_image(self.sources, source, self.payload, what=what).image
        if source.startswith("data:") or looks_like_base64_image(source):
            # inline in the payload: no file or host is read, so no roots are needed
            return ImageSourcePolicy.from_roots([]).open(source, "base64").image
        if "://" in source:
            raise ImageLoadError(
                brief_repr(source), "not a local file; pass the image to overlay(image=...)"
            )
        check_content(self.payload.get(PayloadKeys.CONTENT), source, what=what)
        return load_image(source).image


def unexplained_record(hit: models.ScoredPoint, rank: int) -> dict[str, Any]:
    """The JSON of a hit searched but not explained: the fields of
    :meth:`Explanation.to_dict` that a search alone gives (``search --json`` without
    ``--explain``, the server's ``explain=false``)."""
    return {
        "id": hit.id,
        "score": hit.score,
        "rank": rank,
        "payload": without_features(hit.payload),
        "heatmap": None,
        "words": [],
    }


def hit_image(
    sources: ImageSourcePolicy,
    source: str,
    payload: Mapping[str, Any],
    *,
    what: str,
    kind: SourceKind = "auto",
) -> LoadedImage:
    """A hit's image read under ``sources``, refused when its file changed since the point
    was written (its bytes no longer hash to the payload's ``xai_content``): a heatmap of the
    old picture is never drawn over the new one.

    Raises:
        StaleFeaturesError: the file was overwritten since it was indexed.
        SourceNotAllowedError, ImageLoadError: as :meth:`ImageSourcePolicy.open`.
    """
    if kind in ("auto", "path"):
        check_source_content(payload.get(PayloadKeys.CONTENT), source, sources, what=what)
    return sources.open(source, kind)


def grid_region(row: int, col: int, rows: int, cols: int) -> str:
    """A cell of a ``rows x cols`` grid (0-based) in words, by thirds: ``"top-left"``,
    ``"top"``, ``"top-right"``, ``"middle-left"``, ``"center"``, ..., ``"bottom-right"``."""
    vertical = ("top", "middle", "bottom")[min(2, row * 3 // max(rows, 1))]
    horizontal = ("left", "center", "right")[min(2, col * 3 // max(cols, 1))]
    if vertical == "middle":
        return "center" if horizontal == "center" else f"middle-{horizontal}"
    return vertical if horizontal == "center" else f"{vertical}-{horizontal}"


def attributions(scores: WordScores) -> tuple[WordAttribution, ...]:
    """Word scores of a method as :class:`WordAttribution` s, in reading order."""
    words, values = scores
    return tuple(
        WordAttribution(word=w.text, score=float(s), span=w.span)
        for w, s in zip(words, values, strict=True)
    )


def text_fields(text: str, scores: WordScores, *, full_text: str | None = None) -> dict[str, Any]:
    """The :class:`Explanation` fields of an attributed text: ``text``, ``words``, and
    what the model never saw: ``words_left_out`` (words of ``text`` the method left out,
    past the model's context) and ``chars_left_out`` (``full_text`` past ``text``, when
    ``text`` is its first characters)."""
    return {
        "text": text,
        "words": attributions(scores),
        "words_left_out": max(0, len(split_words(text)) - len(scores[0])),
        "chars_left_out": 0 if full_text is None else len(full_text) - len(text),
    }
