"""The model fingerprint hashes every weight that produces embeddings and features (issue 14):
a changed attention layer changes it, a dtype does not; the projection-only key of earlier
releases stays known as the legacy key; devices are checked before any weight is read."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel

from qdrant_xai import ClipEncoder
from qdrant_xai.encoding.checkpoints import available_devices, check_device
from qdrant_xai.encoding.fingerprint import (
    KEY_VERSION,
    ModelFingerprint,
    hash_weights,
    is_versioned_key,
)
from qdrant_xai.errors import DeviceUnavailableError, ModelLoadError, ModelMismatchError
from qdrant_xai.testing import build_tiny_clip

#: the keys the shapes model's points carried before key version 2 (projections only)
SHAPES_LEGACY_KEY = "b2276d932006d5bd:64x64:8x8:64"


def _perturbed(source: Path, target: Path, name: str, scale: float = 0.05) -> Path:
    """A copy of a saved CLIP with one weight tensor shifted (its projections unchanged)."""
    model = CLIPModel.from_pretrained(source)
    with torch.no_grad():
        weight = dict(model.named_parameters())[name]
        generator = torch.Generator().manual_seed(7)
        weight.add_(torch.randn(weight.shape, generator=generator) * scale)
    model.save_pretrained(target)
    for file in source.iterdir():  # the processor files
        if file.name not in ("config.json", "model.safetensors"):
            (target / file.name).write_bytes(file.read_bytes())
    return target


def test_the_key_is_versioned_and_the_legacy_key_is_the_old_projection_hash() -> None:
    encoder = ClipEncoder.from_pretrained("shapes")
    fp = encoder.fingerprint
    assert fp.key.startswith(f"{KEY_VERSION}-") and fp.key.endswith(":64x64:8x8:64")
    assert is_versioned_key(fp.key) and not is_versioned_key(SHAPES_LEGACY_KEY)
    assert fp.legacy_key == SHAPES_LEGACY_KEY  # what collections written before carry
    assert fp.key != fp.legacy_key


def test_fp32_and_bf16_loads_share_the_key() -> None:
    fp32 = ClipEncoder.from_pretrained("shapes").fingerprint
    bf16 = ClipEncoder.from_pretrained("shapes", dtype="bfloat16").fingerprint
    assert (fp32.key, fp32.legacy_key) == (bf16.key, bf16.legacy_key)


@pytest.mark.parametrize(
    "name",
    [
        "vision_model.encoder.layers.0.self_attn.q_proj.weight",
        "text_model.encoder.layers.1.self_attn.v_proj.weight",
        "vision_model.post_layernorm.bias",
        "text_model.embeddings.token_embedding.weight",
    ],
)
def test_a_changed_inner_weight_changes_the_key_but_not_the_legacy_key(
    tiny_model_dir: Path, tiny_encoder: ClipEncoder, tmp_path: Path, name: str
) -> None:
    changed = ClipEncoder.from_pretrained(_perturbed(tiny_model_dir, tmp_path / "m", name))
    assert changed.fingerprint.key != tiny_encoder.fingerprint.key
    # the old key could not tell them apart: why it is never taken as current again
    assert changed.fingerprint.legacy_key == tiny_encoder.fingerprint.legacy_key


def test_the_logit_scale_is_not_part_of_the_key(tiny_encoder: ClipEncoder) -> None:
    model = tiny_encoder.model
    before = hash_weights(model)
    with torch.no_grad():
        saved = model.logit_scale.clone()
        model.logit_scale.add_(1.0)
        try:
            assert hash_weights(model) == before
        finally:
            model.logit_scale.copy_(saved)


def test_the_hash_is_deterministic_and_follows_names(tmp_path: Path) -> None:
    first = CLIPModel.from_pretrained(build_tiny_clip(tmp_path / "a", seed=3))
    again = CLIPModel.from_pretrained(build_tiny_clip(tmp_path / "b", seed=3))
    other = CLIPModel.from_pretrained(build_tiny_clip(tmp_path / "c", seed=4))
    assert hash_weights(first) == hash_weights(again) != hash_weights(other)


def test_check_accepts_the_key_flags_the_legacy_key_and_refuses_others(
    tiny_encoder: ClipEncoder,
) -> None:
    fp = tiny_encoder.fingerprint
    assert fp.check(fp.key, what="point 1") is True
    assert fp.check(fp.legacy_key, what="point 1") is False
    assert fp.is_legacy(fp.legacy_key) and not fp.is_legacy(fp.key)
    for other in ("0123456789abcdef:32x32:4x4:16", f"{KEY_VERSION}-0000000000000000:32x32:4x4:16"):
        with pytest.raises(ModelMismatchError, match="point 1 was written by another model"):
            fp.check(other, what="point 1")
    unknown = ModelFingerprint("m", (32, 32), (4, 4), 16, "ab" * 8)  # no legacy hash known
    assert unknown.legacy_key is None and not unknown.is_legacy(None)


def test_the_fingerprint_is_computed_on_first_use_and_kept(tiny_model_dir: Path) -> None:
    encoder = ClipEncoder.from_pretrained(tiny_model_dir)
    assert encoder._fingerprint is None  # loading does not pay for hashing
    started = time.perf_counter()
    first = encoder.fingerprint
    assert time.perf_counter() - started < 5.0  # milliseconds for a tiny model
    assert encoder.fingerprint is first


# -- devices ------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps", "gpu", "cuda:x", ""])
def test_an_unavailable_or_malformed_device_is_refused_before_loading(
    device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if device == "mps" and "mps" in available_devices():
        pytest.skip("this torch has MPS")

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights were read before the device was checked")

    monkeypatch.setattr(CLIPModel, "from_pretrained", no_loading)
    with pytest.raises(DeviceUnavailableError) as info:
        ClipEncoder.from_pretrained("shapes", device=device)
    message = str(info.value)
    assert repr(device) in message and "available here: cpu" in message
    assert "\n" not in message
    assert isinstance(info.value, ModelLoadError)


def test_cpu_devices_pass() -> None:
    assert check_device("cpu").type == "cpu"
    assert check_device("cpu:0").type == "cpu"
    assert "cpu" in available_devices()
