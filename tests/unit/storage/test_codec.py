"""PayloadFeatureCodec: round trips, and refusal of every malformed or tampered payload."""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from qdrant_xai import FeatureCodecError, ModelMismatchError, PayloadFeatureCodec
from qdrant_xai.storage import codec as codec_module

REPO = Path(__file__).resolve().parents[3]

FP = "0123456789abcdef:32x32:4x4:16"


def features(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * rng.uniform(0.01, 3.0, size=(*shape[:-1], 1))).astype(
        np.float32
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 16), (4, 4, 16), (7, 7, 512)])
def test_fp16_round_trip_is_within_half_precision(shape: tuple[int, ...]) -> None:
    codec = PayloadFeatureCodec("fp16")
    array = features(shape)
    payload = codec.encode(array, fingerprint=FP)
    assert payload["v"] == 1 and payload["codec"] == "fp16" and payload["dtype"] == "float16"
    assert payload["shape"] == list(shape) and payload["fingerprint"] == FP
    assert "scale" not in payload
    decoded = codec.decode(payload, fingerprint=FP, shape=shape)
    assert decoded.shape == shape and decoded.dtype == np.float32
    # fp16 has a 10-bit mantissa: relative error at most 2**-11 for normal numbers
    np.testing.assert_allclose(decoded, array, rtol=1e-3, atol=1e-6)
    assert len(payload["data"]) == codec.encoded_size(shape)


@pytest.mark.parametrize("shape", [(5, 16), (4, 4, 16), (7, 7, 512)])
def test_int8_round_trip_is_within_half_a_step_per_row(shape: tuple[int, ...]) -> None:
    codec = PayloadFeatureCodec("int8")
    array = features(shape, seed=1)
    payload = codec.encode(array, fingerprint=FP)
    assert payload["codec"] == "int8" and payload["dtype"] == "int8"
    decoded = codec.decode(payload, fingerprint=FP, shape=shape)
    assert decoded.shape == shape and decoded.dtype == np.float32
    rows = array.reshape(-1, shape[-1])
    scale = np.abs(rows).max(axis=1) / 127.0
    error = np.abs(decoded.reshape(rows.shape) - rows)
    assert (error <= scale[:, None] / 2 * (1 + 1e-5) + 1e-12).all()
    # the row maximum is represented exactly (up to float32 rounding)
    peak = np.abs(rows).argmax(axis=1)
    np.testing.assert_allclose(
        np.abs(decoded.reshape(rows.shape)[np.arange(len(rows)), peak]),
        np.abs(rows[np.arange(len(rows)), peak]),
        rtol=1e-6,
    )
    assert len(payload["data"]) + len(payload["scale"]) == codec.encoded_size(shape)


def test_int8_all_zero_rows_round_trip_to_zero() -> None:
    codec = PayloadFeatureCodec("int8")
    array = np.zeros((3, 8), dtype=np.float32)
    array[1] = np.linspace(-1, 1, 8)
    decoded = codec.decode(codec.encode(array, fingerprint=FP))
    assert (decoded[0] == 0).all() and (decoded[2] == 0).all()
    np.testing.assert_allclose(decoded[1], array[1], atol=1 / 254 + 1e-7)


def test_decoding_accepts_either_codec_whatever_the_decoder_is_set_to() -> None:
    array = features((4, 4, 16))
    written = PayloadFeatureCodec("int8").encode(array, fingerprint=FP)
    decoded = PayloadFeatureCodec("fp16").decode(written, fingerprint=FP)
    np.testing.assert_allclose(decoded, array, atol=np.abs(array).max() / 127)


def test_decoding_survives_a_json_round_trip() -> None:
    codec = PayloadFeatureCodec("int8")
    array = features((4, 4, 16))
    payload = json.loads(json.dumps(codec.encode(array, fingerprint=FP)))
    assert codec.decode(payload, fingerprint=FP).shape == (4, 4, 16)


def test_fp16_clips_values_beyond_half_range_instead_of_storing_inf() -> None:
    codec = PayloadFeatureCodec("fp16")
    decoded = codec.decode(codec.encode(np.array([[1e6, -1e6, 1.0]]), fingerprint=FP))
    assert np.isfinite(decoded).all()
    assert decoded[0, 0] == pytest.approx(65000, rel=1e-3)
    assert decoded[0, 1] == pytest.approx(-65000, rel=1e-3)


@pytest.mark.parametrize(
    "bad", [np.zeros((0, 4)), np.float32(1.0), np.array([[1.0, np.nan]]), np.array([[np.inf]])]
)
def test_encode_refuses_empty_and_non_finite_maps(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"empty|NaN or infinite"):
        PayloadFeatureCodec().encode(bad, fingerprint=FP)


def test_unknown_codec_name_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="'fp16', 'int8' or 'svd'"):
        PayloadFeatureCodec("fp8")  # type: ignore[arg-type]


# -- the documented sizes ---------------------------------------------------------------


def test_encoded_size_matches_the_docstring_numbers_for_vit_b32() -> None:
    shape = (7, 7, 512)
    fp16, int8 = PayloadFeatureCodec("fp16"), PayloadFeatureCodec("int8")
    svd = PayloadFeatureCodec("svd")
    count = math.prod(shape)
    assert fp16.encoded_size(shape) == len(fp16.encode(np.ones(shape), fingerprint=FP)["data"])
    encoded = int8.encode(np.ones(shape), fingerprint=FP)
    assert int8.encoded_size(shape) == len(encoded["data"]) + len(encoded["scale"])

    doc = " ".join((codec_module.__doc__ or "").split())
    numbers = [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]{3,}", doc)]
    assert numbers == [
        count * 2,  # fp16 raw
        fp16.encoded_size(shape),  # fp16 base64
        count + 7 * 7 * 4,  # int8 raw with one float32 scale per patch
        int8.encoded_size(shape),  # int8 base64
        (49 + 512) + 3 * math.ceil((49 + 512) * 19 / 4) + 20 * 2 * 4,  # svd raw, rank 20
        3 * math.ceil((49 + 512) * 19 / 4),  # of which components 1-19: 6 bits, 4 per 3 bytes
        svd.encoded_size(shape),  # svd base64
        11_800,  # about, with its JSON keys
        12_100,  # about, with the point's other keys
    ]
    encoded = svd.encode(np.ones(shape), fingerprint="w2-0123456789abcdef:224x224:7x7:512")
    assert abs(len(json.dumps(encoded)) - 11_800) < 100


# -- refusals ---------------------------------------------------------------------------


@pytest.fixture(params=["fp16", "int8"])
def codec_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def payload(codec_name: str) -> dict:
    return PayloadFeatureCodec(codec_name).encode(features((4, 4, 16)), fingerprint=FP)  # type: ignore[arg-type]


def refused(payload: object, match: str, **kwargs: object) -> FeatureCodecError:
    with pytest.raises(FeatureCodecError, match=match) as info:
        PayloadFeatureCodec().decode(payload, what="point 7 features", **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith("point 7 features")
    return info.value


@pytest.mark.parametrize("bad", [None, "features", 42, [1, 2], b"{}"])
def test_not_an_object_is_refused(bad: object) -> None:
    refused(bad, f"expected an object, got {type(bad).__name__}")


@pytest.mark.parametrize("version", [None, 0, 2, "1", [1]])
def test_unknown_version_is_refused_with_the_fix(payload: dict, version: object) -> None:
    payload["v"] = version
    if version is None:
        del payload["v"]
    refused(payload, r"unknown codec version .*upgrade qdrant-xai or re-index")


@pytest.mark.parametrize("codec", ["fp32", "", None, 16, ["fp16"], {"fp16": 1}])
def test_unknown_codec_is_refused(payload: dict, codec: object) -> None:
    payload["codec"] = codec
    refused(payload, "unknown codec/dtype")


def test_dtype_not_matching_the_codec_is_refused(payload: dict) -> None:
    payload["dtype"] = "int8" if payload["codec"] == "fp16" else "float16"
    refused(payload, "unknown codec/dtype")
    del payload["dtype"]
    refused(payload, "unknown codec/dtype")


@pytest.mark.parametrize(
    "shape",
    [
        [4, -4, 16],
        [4, 0, 16],
        [True, 4, 16],
        [4, 4, 16.0],
        [4, 4, "16"],
        [1, 1, 1, 4, 4],  # too many dims
        [],
        "4x4x16",
        {"h": 4},
        None,
        [4, 4, 1 << 21],
    ],
)
def test_bad_shape_is_refused(payload: dict, shape: object) -> None:
    payload["shape"] = shape
    refused(payload, "invalid shape")


def test_missing_shape_is_refused(payload: dict) -> None:
    del payload["shape"]
    refused(payload, "invalid shape None")


def test_truncated_data_is_refused(payload: dict) -> None:
    payload["data"] = payload["data"][:-4]
    refused(payload, r"data has \d+ base64 characters, \d+ expected .*truncated or tampered")


def test_extra_data_is_refused(payload: dict) -> None:
    payload["data"] += "AAAA"
    refused(payload, "data has .* base64 characters")


def test_data_of_a_smaller_shape_is_refused(payload: dict) -> None:
    payload["shape"] = [4, 4, 8]
    refused(payload, "data has .* base64 characters")


@pytest.mark.parametrize("bad_char", ["!", "*", " ", "é", "\n"])
def test_invalid_base64_characters_of_the_right_length_are_refused(
    payload: dict, bad_char: str
) -> None:
    data = payload["data"]
    payload["data"] = data[:10] + bad_char + data[11:]
    assert len(payload["data"]) == len(data)
    error = refused(payload, "data is not valid base64")
    assert error.__cause__ is not None


def test_padding_inside_base64_is_refused(payload: dict) -> None:
    data = payload["data"]
    payload["data"] = data[:8] + "====" + data[12:]
    refused(payload, "data (is not valid base64|decodes to)")


@pytest.mark.parametrize("data", [None, 123, b"AAAA", ["AAAA"]])
def test_data_that_is_not_a_string_is_refused(payload: dict, data: object) -> None:
    payload["data"] = data
    refused(payload, "field 'data' is missing or not a string")


def test_int8_without_scales_is_refused() -> None:
    payload = PayloadFeatureCodec("int8").encode(features((4, 4, 16)), fingerprint=FP)
    del payload["scale"]
    refused(payload, "field 'scale' is missing or not a string")


def test_int8_with_too_few_scales_is_refused() -> None:
    payload = PayloadFeatureCodec("int8").encode(features((4, 4, 16)), fingerprint=FP)
    payload["scale"] = b64(np.ones(15, "<f4").tobytes())
    refused(payload, "scale has .* base64 characters")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_int8_with_non_finite_scales_is_refused(bad: float) -> None:
    payload = PayloadFeatureCodec("int8").encode(features((4, 4, 16)), fingerprint=FP)
    scales = np.ones(16, "<f4")
    scales[3] = bad
    payload["scale"] = b64(scales.tobytes())
    refused(payload, "non-finite int8 scales")


def test_int8_scales_that_overflow_float32_are_refused() -> None:
    payload = PayloadFeatureCodec("int8").encode(np.ones((4, 4, 16)), fingerprint=FP)
    payload["scale"] = b64(np.full(16, 3e38, "<f4").tobytes())
    refused(payload, "contains NaN or infinite values")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fp16_nan_and_inf_values_are_refused(bad: float) -> None:
    values = np.ones((4, 4, 16), "<f2")
    values[2, 1, 5] = bad
    payload = PayloadFeatureCodec("fp16").encode(np.ones((4, 4, 16)), fingerprint=FP)
    payload["data"] = b64(values.tobytes())
    refused(payload, "contains NaN or infinite values")


def test_huge_shape_is_refused_before_allocation() -> None:
    payload = PayloadFeatureCodec("fp16").encode(np.ones((2, 2)), fingerprint=FP)
    payload["shape"] = [1 << 20, 1 << 20, 1 << 20, 1 << 20]
    with pytest.raises(FeatureCodecError, match=r"exceed the .*-byte decode limit"):
        PayloadFeatureCodec().decode(payload)


def test_size_cap_is_configurable() -> None:
    small = PayloadFeatureCodec("fp16", max_bytes=1000)
    payload = small.encode(np.ones((16, 16)), fingerprint=FP)  # 256 values, 1024 bytes decoded
    with pytest.raises(FeatureCodecError, match="256 values exceed the 1000-byte decode limit"):
        small.decode(payload)
    assert PayloadFeatureCodec("fp16", max_bytes=1024).decode(payload).shape == (16, 16)


@pytest.mark.parametrize(
    "expected",
    [(4, 4, 32), (5, None, 16), (4, 4), (1, 4, 4, 16), (None, None, None, None)],
)
def test_expected_shape_mismatch_is_refused(payload: dict, expected: tuple) -> None:
    refused(payload, r"shape \[4, 4, 16\] where .* was expected", shape=expected)


@pytest.mark.parametrize("expected", [(4, 4, 16), (None, None, 16), (None, None, None)])
def test_expected_shape_with_wildcards_is_accepted(payload: dict, expected: tuple) -> None:
    assert PayloadFeatureCodec().decode(payload, shape=expected).shape == (4, 4, 16)


@pytest.mark.parametrize("stored", ["another:32x32:4x4:16", None, ""])
def test_fingerprint_mismatch_raises_model_mismatch(payload: dict, stored: object) -> None:
    payload["fingerprint"] = stored
    with pytest.raises(ModelMismatchError, match="computed by another model") as info:
        PayloadFeatureCodec().decode(payload, fingerprint=FP, what="point 7 features")
    assert repr(stored) in str(info.value) and repr(FP) in str(info.value)
    assert "re-index" in str(info.value)
    # without an expected fingerprint the same payload decodes
    assert PayloadFeatureCodec().decode(payload).shape == (4, 4, 16)


def test_decode_errors_tuple_catches_both_kinds() -> None:
    assert codec_module.DecodeErrors == (FeatureCodecError, ModelMismatchError)


# -- randomised tampering ---------------------------------------------------------------


def _tamper(text: str, rng: np.random.Generator) -> str:
    """Flip, delete, insert or truncate characters of a JSON document."""
    chars = list(text)
    op = rng.integers(4)
    pos = int(rng.integers(len(chars)))
    if op == 0:
        chars[pos] = chr(ord(chars[pos]) ^ (1 << int(rng.integers(7))))
    elif op == 1:
        del chars[pos : pos + int(rng.integers(1, 5))]
    elif op == 2:
        chars.insert(pos, chr(int(rng.integers(32, 127))))
    else:
        chars = chars[:pos]
    return "".join(chars)


def _tamper_field(payload: dict, rng: np.random.Generator) -> dict:
    """Tamper with one field's JSON text, keeping the rest of the object intact."""
    tampered = copy.deepcopy(payload)
    key = list(tampered)[int(rng.integers(len(tampered)))]
    field = json.dumps(tampered[key])
    for _ in range(int(rng.integers(1, 4))):
        field = _tamper(field, rng) or field
    try:
        tampered[key] = json.loads(field)
    except json.JSONDecodeError:
        tampered[key] = field  # the raw text, as a tool that wrote a string would store it
    return tampered


def test_random_tampering_raises_typed_errors_or_decodes_a_finite_map() -> None:
    rng = np.random.default_rng(20240607)
    shape = (4, 4, 16)
    originals = {
        name: PayloadFeatureCodec(name).encode(features(shape, seed=3), fingerprint=FP)  # type: ignore[arg-type]
        for name in ("fp16", "int8")
    }
    outcomes = {"refused": 0, "decoded": 0, "mismatch": 0}
    for trial in range(300):
        original = originals["fp16" if trial % 2 else "int8"]
        tampered = _tamper_field(original, rng) if trial % 3 else _tamper_whole(original, rng)
        try:
            decoded = PayloadFeatureCodec(max_bytes=1 << 20).decode(tampered, fingerprint=FP)
        except ModelMismatchError:
            outcomes["mismatch"] += 1
        except FeatureCodecError:
            outcomes["refused"] += 1
        else:
            outcomes["decoded"] += 1
            assert isinstance(tampered, dict)
            assert decoded.dtype == np.float32
            assert decoded.shape == tuple(tampered["shape"])
            assert np.isfinite(decoded).all()
    # the loop exercised every outcome, so it can tell them apart
    assert min(outcomes.values()) > 0, outcomes


def _tamper_whole(payload: dict, rng: np.random.Generator) -> object:
    text = _tamper(json.dumps(payload), rng)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def test_readme_payload_table_matches_the_codec() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name, label in (("fp16", "`fp16` (default)"), ("int8", "`int8` (one scale per row)")):
        codec = PayloadFeatureCodec(name)  # type: ignore[arg-type]
        row = next(line for line in readme.splitlines() if line.startswith(f"| {label} |"))
        expected = []
        for shape in ((7, 7, 512), (50, 768)):
            encoded = codec.encode(np.ones(shape), fingerprint=FP)
            raw = math.prod(shape) * (2 if name == "fp16" else 1)
            raw += 4 * math.prod(shape[:-1]) if name == "int8" else 0
            expected.append(f"{codec.encoded_size(shape):,} ({raw:,})")
            assert codec.encoded_size(shape) == len(encoded["data"]) + len(encoded.get("scale", ""))
        assert row == f"| {label} | {expected[0]} | {expected[1]} |"
