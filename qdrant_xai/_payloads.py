"""The feature part of a point's payload, shared by the indexer and the backfill.

Both write the same keys for the same features, so a point indexed by qdrant-xai and a
point of another tool's collection backfilled by it are read back the same way.
"""

from __future__ import annotations

from typing import Any

from qdrant_xai.codec import PayloadFeatureCodec
from qdrant_xai.collection import PayloadKeys
from qdrant_xai.encoder import ClipEncoder, ImageFeatures, TextFeatures
from qdrant_xai.images import LoadedImage


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
    if feats.patch_tokens is not None:
        payload[PayloadKeys.PATCH_TOKENS] = codec.encode(feats.patch_tokens, fingerprint=key)
    if feats.last_layer_inputs is not None:
        payload[PayloadKeys.LAST_LAYER] = codec.encode(feats.last_layer_inputs, fingerprint=key)
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
