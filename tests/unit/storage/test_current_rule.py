"""The one "is this point current" rule with model keys of two versions, and the content
check of image files (issue 14)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qdrant_xai import ClipEncoder
from qdrant_xai.errors import ModelMismatchError, StaleFeaturesError
from qdrant_xai.images.load import file_digest
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.payloads import check_content, is_current
from qdrant_xai.storage.schema import PayloadKeys
from qdrant_xai.storage.sidecar import current_entry, vector_stamp


def test_a_point_with_the_models_legacy_key_is_never_current(tiny_encoder: ClipEncoder) -> None:
    fp = tiny_encoder.fingerprint
    assert fp.legacy_key is not None
    for image in (True, False):
        point = {PayloadKeys.FINGERPRINT: fp.key, PayloadKeys.PROFILE: "standard"}
        assert is_current(point, fp.key, "standard", image=image)
        legacy = {**point, PayloadKeys.FINGERPRINT: fp.legacy_key}
        assert not is_current(legacy, fp.key, "standard", image=image)


def test_a_sidecar_entry_follows_the_same_rule(tiny_encoder: ClipEncoder) -> None:
    fp = tiny_encoder.fingerprint
    vector = np.arange(1, 17, dtype=np.float32)
    entry = {
        PayloadKeys.KIND: "text",
        PayloadKeys.FINGERPRINT: fp.key,
        PayloadKeys.SOURCE_VECTOR: vector_stamp(vector),
    }
    assert current_entry(entry, fingerprint=fp.key, stored_vector=vector)
    stale = {**entry, PayloadKeys.FINGERPRINT: fp.legacy_key}
    assert not current_entry(stale, fingerprint=fp.key, stored_vector=vector)


def test_check_content_passes_the_same_bytes_and_refuses_other_bytes(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG first picture")
    recorded = file_digest(photo)
    check_content(recorded, photo, what="point 7")
    check_content(None, photo, what="point 7")  # nothing recorded: nothing to compare
    photo.write_bytes(b"\x89PNG other picture")  # same size, other bytes
    with pytest.raises(StaleFeaturesError) as info:
        check_content(recorded, photo, what="point 7")
    message = str(info.value)
    assert message.startswith("point 7: its image") and "changed since it was indexed" in message
    assert "run `qdrant-xai index` again" in message
    check_content(recorded, tmp_path / "missing.png", what="point 7")  # loading says why


def test_codec_maps_written_with_the_legacy_key_are_not_current(
    tiny_encoder: ClipEncoder,
) -> None:
    fp = tiny_encoder.fingerprint
    codec = PayloadFeatureCodec()
    array = np.ones((4, 4, 16), dtype=np.float32)
    assert codec.decode(codec.encode(array, fingerprint=fp.key), fingerprint=fp.key).shape
    old = codec.encode(array, fingerprint=str(fp.legacy_key))
    with pytest.raises(ModelMismatchError, match=r"earlier model fingerprint .*index.*again"):
        codec.decode(old, fingerprint=fp.key, what="point 3 features")
    other = codec.encode(array, fingerprint="w2-0000000000000000:32x32:4x4:16")
    with pytest.raises(ModelMismatchError, match="computed by another model"):
        codec.decode(other, fingerprint=fp.key)
