"""The feature part of a point's payload, shared by the indexer and the backfill, and the
checks a stored point must pass: whether it is current for a model (indexer and backfill
skip it), and whether it reads back (explainer, ``backfill --repair``).

Both write the same keys for the same features, so a point indexed by qdrant-xai and a
point of another tool's collection backfilled by it are read back the same way.
"""

from __future__ import annotations

import os
from typing import Any

from qdrant_xai.encoding.encoder import ClipEncoder, ImageFeatures, TextFeatures
from qdrant_xai.encoding.words import split_words
from qdrant_xai.errors import (
    FeatureCodecError,
    SourceNotAllowedError,
    StaleFeaturesError,
    brief_repr,
)
from qdrant_xai.images.load import ImageLimits, LoadedImage, file_digest
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.schema import PayloadKeys, Profile

__all__ = [
    "check_content",
    "check_source_content",
    "check_stored_words",
    "image_features_payload",
    "is_current",
    "stored_crop_box",
    "text_features_payload",
]


def image_features_payload(
    encoder: ClipEncoder,
    codec: PayloadFeatureCodec,
    image: LoadedImage,
    feats: ImageFeatures,
    *,
    profile: str,
) -> dict[str, Any]:
    """Kind, model, geometry and encoded features of one image point."""
    key = encoder.fingerprint.key
    payload: dict[str, Any] = {
        PayloadKeys.KIND: "image",
        PayloadKeys.FINGERPRINT: key,
        PayloadKeys.MODEL: encoder.model_id,
        PayloadKeys.PROFILE: profile,
        PayloadKeys.WIDTH: image.width,
        PayloadKeys.HEIGHT: image.height,
        PayloadKeys.CROP_BOX: list(encoder.crop_box(image.width, image.height)),
        PayloadKeys.FEATURES: codec.encode(feats.contributions, fingerprint=key),
    }
    # the svd codec is for contribution maps: the residual stream is stored whole (int8)
    dense = codec.dense()
    if feats.patch_tokens is not None:
        payload[PayloadKeys.PATCH_TOKENS] = dense.encode(feats.patch_tokens, fingerprint=key)
    if feats.last_layer_inputs is not None:
        payload[PayloadKeys.LAST_LAYER] = dense.encode(feats.last_layer_inputs, fingerprint=key)
    return payload


def text_features_payload(
    encoder: ClipEncoder, codec: PayloadFeatureCodec, feats: TextFeatures
) -> dict[str, Any]:
    """Kind, model, words and encoded word features of one text point."""
    key = encoder.fingerprint.key
    payload: dict[str, Any] = {
        PayloadKeys.KIND: "text",
        PayloadKeys.FINGERPRINT: key,
        PayloadKeys.MODEL: encoder.model_id,
        PayloadKeys.WORDS: [[w.text, w.start, w.end] for w in feats.words],
    }
    if feats.words:
        payload[PayloadKeys.FEATURES] = codec.encode(feats.word_contributions, fingerprint=key)
    return payload


# -- reading back: what the indexer, the backfill and the explainer demand of a point ----


def is_current(
    payload: dict[str, Any],
    fingerprint: str,
    profile: Profile,
    *,
    image: bool,
    content: str | None = None,
) -> bool:
    """Whether a stored point already holds the features of the model with ``fingerprint``,
    at least at ``profile`` for an image point, and (when ``content`` is given) of the
    image whose bytes hash to ``content``: then indexing and backfill leave it alone.

    The one rule of "is this point current" (the sidecar's
    :func:`~qdrant_xai.storage.sidecar.current_entry` adds the stored vector to it). Only
    the model's current key counts: a point carrying its legacy key
    (:attr:`~qdrant_xai.encoding.fingerprint.ModelFingerprint.legacy_key`, projections
    only) is re-encoded, so a changed backbone never passes as unchanged.
    """
    if payload.get(PayloadKeys.FINGERPRINT) != fingerprint:
        return False
    if content is not None and payload.get(PayloadKeys.CONTENT) != content:
        return False
    return not image or profile == "standard" or payload.get(PayloadKeys.PROFILE) == profile


def check_content(
    recorded: object,
    path: str | os.PathLike[str],
    *,
    what: str,
    limits: ImageLimits | None = None,
) -> None:
    """Raise :class:`~qdrant_xai.errors.StaleFeaturesError` when the file at ``path`` no
    longer hashes to ``recorded`` (the point's ``xai_content``): the stored vector and
    features describe the picture the file held when it was indexed, not the one it holds
    now. Nothing is compared when no content was recorded or the file cannot be hashed
    (reading it then reports why). Reads the whole file (bounded by ``limits.max_bytes``).
    """
    if not isinstance(recorded, str):
        return
    digest = file_digest(path, limits)
    if digest is not None and digest != recorded:
        raise StaleFeaturesError(
            f"{what}: its image {brief_repr(os.fspath(path))} changed since it was indexed "
            "(its bytes no longer match the stored content hash), so its stored vector and "
            "features describe the old picture; run `qdrant-xai index` again"
        )


def check_source_content(
    recorded: object, source: str | None, sources: ImageSourcePolicy, *, what: str
) -> None:
    """:func:`check_content` for the image a payload names, read under ``sources``: local
    files only (a URL or an inline image is not a file the policy resolves; opening it
    reports why it cannot be read, if it cannot).

    Raises:
        StaleFeaturesError: the file changed since it was indexed.
    """
    if not isinstance(recorded, str) or not source:
        return
    try:
        path = sources.resolve(source)
    except SourceNotAllowedError:
        return
    check_content(recorded, path, what=what, limits=sources.limits)


def stored_crop_box(payload: dict[str, Any], what: str) -> tuple[int, int, int, int] | None:
    """The recorded crop box of an image point: four integers inside its recorded width and
    height, or None when there is none.

    Raises:
        FeatureCodecError: a crop box is recorded but is not such a box (a heatmap drawn
            over it would land on the wrong region, or on none).
    """
    box = payload.get(PayloadKeys.CROP_BOX)
    if box is None:
        return None
    width, height = payload.get(PayloadKeys.WIDTH), payload.get(PayloadKeys.HEIGHT)
    values = [*box, width, height] if isinstance(box, list | tuple) and len(box) == 4 else []
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        x0, y0, x1, y1, w, h = values
        if 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h:
            return (x0, y0, x1, y1)
    raise FeatureCodecError(
        f"{what}: crop_box {brief_repr(box)} is not a box inside its recorded width x height "
        f"({brief_repr(width)} x {brief_repr(height)}); the payload is corrupt or was edited: "
        "rewrite it with `qdrant-xai backfill --repair` (or delete the point and index it again)"
    )


def check_stored_words(words: list[Any], text: str, what: str) -> None:
    """Stored word features belong to the text's words (a prefix, when the text was cut at
    the model's length): otherwise they would be attributed to the wrong words."""
    expected = [[w.text, w.start, w.end] for w in split_words(text)]
    stored = [list(w) if isinstance(w, list | tuple) else w for w in words]
    if len(stored) > len(expected) or stored != expected[: len(stored)]:
        raise FeatureCodecError(
            f"{what}: its stored words {brief_repr(words)} are not the words of its text "
            f"{brief_repr(text)}; the payload is corrupt or was edited: rewrite it with "
            "`qdrant-xai backfill --repair` (or delete the point and index it again)"
        )
