"""Loading CLIP checkpoints through the user path, dtypes, geometry, word spans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qdrant_xai import ClipEncoder, ModelLoadError
from qdrant_xai.testing import build_tiny_clip


def test_bf16_load_shares_the_fingerprint_and_nearly_the_embeddings(
    tiny_model_dir: Path, tiny_encoder: ClipEncoder
) -> None:
    bf16 = ClipEncoder.from_pretrained(tiny_model_dir, dtype="bfloat16", num_threads=1)
    assert bf16.dtype == torch.bfloat16
    assert torch.get_num_threads() == 1
    assert bf16.fingerprint.key == tiny_encoder.fingerprint.key
    image = Image.new("RGB", (50, 40), (200, 30, 30))
    a, b = tiny_encoder.encode_images([image])[0], bf16.encode_images([image])[0]
    assert float(a.embedding @ b.embedding) > 0.98
    assert b.contributions.dtype == np.float32 and b.contributions.shape == (4, 4, 16)


def test_models_with_other_weights_have_other_fingerprints(
    tmp_path: Path, tiny_encoder: ClipEncoder
) -> None:
    other = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "m", seed=5))
    assert other.fingerprint.key != tiny_encoder.fingerprint.key
    assert other.fingerprint.grid == tiny_encoder.fingerprint.grid


def test_loading_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such model directory"):
        ClipEncoder.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="save_pretrained"):
        ClipEncoder.from_pretrained(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="hub id"):
        ClipEncoder.from_pretrained("no-such-org/no-such-clip")  # offline: refused at once
    with pytest.raises(ValueError, match="dtype"):
        ClipEncoder.from_pretrained(tmp_path, dtype="int4")


def test_crop_box_is_the_centre_square_the_model_sees(tiny_encoder: ClipEncoder) -> None:
    assert tiny_encoder.crop_box(300, 100) == (100, 0, 200, 100)
    assert tiny_encoder.crop_box(64, 128) == (0, 32, 64, 96)
    assert tiny_encoder.crop_box(32, 32) == (0, 0, 32, 32)


def test_word_spans_point_into_the_original_text(tiny_encoder: ClipEncoder) -> None:
    text = "  A RED Circle,   and a blue-square!"
    (feats,) = tiny_encoder.encode_texts([text])
    assert [w.text for w in feats.words] == ["A", "RED", "Circle", "and", "a", "blue-square"]
    for word in feats.words:
        assert text[word.start : word.end] == word.text
    assert feats.word_contributions.shape == (6, tiny_encoder.dim)
    assert not feats.truncated


def test_embeddings_are_normalised_and_agree_between_paths(tiny_encoder: ClipEncoder) -> None:
    texts = ["a red circle", "a green cross and a purple square"]
    fast = tiny_encoder.embed_texts(texts)
    full = np.stack([t.embedding for t in tiny_encoder.encode_texts(texts)])
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(fast, full, atol=1e-5)
    image = Image.new("RGB", (48, 48), (20, 60, 220))
    np.testing.assert_allclose(
        tiny_encoder.embed_images([image])[0],
        tiny_encoder.encode_images([image])[0].embedding,
        atol=1e-5,
    )
