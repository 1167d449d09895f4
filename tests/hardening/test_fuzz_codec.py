"""Hostile payloads against the feature decoder: :meth:`PayloadFeatureCodec.decode`.

Random JSON values, round trips of random valid maps (through JSON, as a server stores
them) and structured mutations of feature objects the indexer wrote (wrong types, NaN/inf,
shapes off the model's grid, truncated or padded base64, foreign fingerprints, overflowing
int8 scales...). Only :class:`~qdrant_xai.QdrantXaiError` subclasses may come out; a decode
that succeeds returns exactly what the payload encodes (the reference decoder in
:mod:`tests.hardening._fuzz`). Oversized fields are refused quickly, without allocating
their claimed size, by the decoder and through the explainer.
"""

from __future__ import annotations

import base64
import copy
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qdrant_xai import Explainer, PayloadKeys, QdrantXaiError
from qdrant_xai.storage.codec import PayloadFeatureCodec
from tests.hardening._fuzz import CODECS, FAMILY, FuzzWorld, Tally, reference_decode, scored
from tests.hardening._fuzz_strategies import JSON, mutated_features

pytestmark = [pytest.mark.hardening, pytest.mark.slow]


def quantised(array: np.ndarray, codec: str) -> np.ndarray:
    """The values an encoding of ``array`` must decode to (the codec's documented loss)."""
    array = np.asarray(array, dtype=np.float32)
    if codec == "fp16":
        return np.clip(array, -65000.0, 65000.0).astype(np.float16).astype(np.float32)
    rows = array.reshape(-1, array.shape[-1])
    scale = np.abs(rows).max(axis=1) / np.float32(127.0)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(rows / scale[:, None]), -127, 127)
    return (q.astype(np.float32) * scale[:, None]).reshape(array.shape)


# -- the feature decoder --------------------------------------------------------------------


def test_codec_decodes_random_json_into_typed_errors_only(
    fuzz_world: FuzzWorld, figures: Any, fuzz_tally: Tally
) -> None:
    n = figures.count(FAMILY, "codec, random JSON", reduced=500, full=3000)
    expected = fuzz_world.feature_shape

    @settings(max_examples=n)
    @given(
        value=st.one_of(
            JSON,
            st.dictionaries(
                st.sampled_from(["v", "codec", "dtype", "shape", "data", "scale", "fingerprint"]),
                JSON,
                max_size=7,
            ),
        ),
        codec=st.sampled_from(CODECS),
        checked=st.booleans(),
    )
    def run(value: Any, codec: str, checked: bool) -> None:
        decoder = PayloadFeatureCodec(codec)  # type: ignore[arg-type]
        kwargs: dict[str, Any] = (
            {"fingerprint": fuzz_world.fingerprint, "shape": expected} if checked else {}
        )
        result = fuzz_tally.run(lambda: decoder.decode(value, **kwargs))
        if result is not None:
            assert np.isfinite(result).all()
            np.testing.assert_array_equal(result, reference_decode(value))

    run()
    assert not fuzz_tally.other


def test_codec_round_trips_valid_maps(
    fuzz_world: FuzzWorld, figures: Any, fuzz_tally: Tally
) -> None:
    n = figures.count(FAMILY, "codec, round trips", reduced=300, full=1500)

    @settings(max_examples=n)
    @given(
        array=hnp.arrays(
            np.float32,
            hnp.array_shapes(min_dims=1, max_dims=4, max_side=9),
            elements=st.floats(-1e4, 1e4, width=32)
            | st.sampled_from([0.0, -0.0, 1e-30, -1e-30, 65000.0, -65000.0]),
        ),
        codec=st.sampled_from(CODECS),
        fingerprint=st.text(min_size=1, max_size=30),
    )
    def run(array: np.ndarray, codec: str, fingerprint: str) -> None:
        coder = PayloadFeatureCodec(codec)  # type: ignore[arg-type]
        payload = coder.encode(array, fingerprint=fingerprint)
        # through JSON, as a Qdrant server would store it
        stored = json.loads(json.dumps(payload))
        assert len(stored["data"]) + len(stored.get("scale", "")) == coder.encoded_size(array.shape)
        decoded = fuzz_tally.run(
            lambda: coder.decode(stored, fingerprint=fingerprint, shape=array.shape)
        )
        assert decoded is not None, "a valid payload was refused"
        assert decoded.shape == array.shape and decoded.dtype == np.float32
        np.testing.assert_array_equal(decoded, quantised(array, codec))
        np.testing.assert_array_equal(decoded, reference_decode(stored))
        # the other codec's decoder reads it too (the payload names its codec)
        other = PayloadFeatureCodec("int8" if codec == "fp16" else "fp16")
        np.testing.assert_array_equal(other.decode(stored), decoded)

    run()
    assert fuzz_tally.ok == fuzz_tally.cases and not fuzz_tally.other


def test_codec_refuses_mutated_payloads_or_decodes_them_exactly(
    fuzz_world: FuzzWorld, figures: Any, fuzz_tally: Tally
) -> None:
    n = figures.count(FAMILY, "codec, structured mutations", reduced=900, full=2500)
    expected = fuzz_world.feature_shape
    valid = {c: fuzz_world.images[c].payload[PayloadKeys.FEATURES] for c in CODECS}  # type: ignore[index]

    @settings(max_examples=n)
    @given(data=st.data(), codec=st.sampled_from(CODECS))
    def run(data: st.DataObject, codec: str) -> None:
        payload = data.draw(mutated_features(valid[codec]))
        decoded = fuzz_tally.run(
            lambda: PayloadFeatureCodec().decode(
                payload, fingerprint=fuzz_world.fingerprint, shape=expected
            )
        )
        if decoded is not None:  # only mutations that keep a valid map (extra keys, data)
            assert decoded.shape == expected, "a map of another shape was reshaped"
            assert payload["fingerprint"] == fuzz_world.fingerprint
            assert np.isfinite(decoded).all()
            np.testing.assert_array_equal(decoded, reference_decode(payload))
            if payload["codec"] == "int8":
                scale = np.frombuffer(base64.b64decode(payload["scale"]), "<f4")
                assert (scale > 0).all(), "negative or zero int8 scales flip or erase a map"
                raw = np.frombuffer(base64.b64decode(payload["data"]), np.int8)
                assert (raw > -128).all(), "the encoder never writes -128"

    run()
    assert not fuzz_tally.other
    assert fuzz_tally.typed, "no mutation was refused: the generator is broken"


# -- oversized fields -----------------------------------------------------------------------


def _refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[type, float, int]:
    """The error ``call(*args, **kwargs)`` raises, the seconds it took and the peak bytes it
    allocated meanwhile."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        call(*args, **kwargs)
    except QdrantXaiError as exc:
        error: type[BaseException] = type(exc)
    else:  # pragma: no cover - reported by the assertion below
        error = type(None)  # type: ignore[assignment]
    finally:
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, seconds, peak


def test_oversized_fields_are_refused_before_allocation(
    fuzz_world: FuzzWorld, figures: Any
) -> None:
    valid = copy.deepcopy(fuzz_world.images["int8"].payload)
    assert valid is not None
    features = valid[PayloadKeys.FEATURES]
    big = "A" * (100 * 1024 * 1024)  # a 100 MB base64 string, well-formed
    cases: dict[str, tuple[Any, dict[str, Any]]] = {
        "shape claiming 10^12 values": ({**features, "shape": [10**6, 10**6]}, {}),
        "shape claiming 2^80 values": ({**features, "shape": [2**20] * 4}, {}),
        "100 MB data string": ({**features, "data": big}, {}),
        "100 MB int8 scale string": ({**features, "scale": big}, {}),
        "100 MB fingerprint": ({**features, "fingerprint": big}, {"fingerprint": "x"}),
        "shape list of 10^6 sizes": ({**features, "shape": list(range(1, 10**6))}, {}),
        # consistent: 4096x4096 fp16 and the 45 MB of base64 it takes; over the 16 MB cap
        "4096x4096 map with matching data": (
            {
                **features,
                "codec": "fp16",
                "dtype": "float16",
                "shape": [4096, 4096],
                "data": "A" * PayloadFeatureCodec().encoded_size((4096, 4096)),
            },
            {},
        ),
        "10,000-digit version": ({**features, "v": 10**10000}, {}),
    }
    worst_seconds, worst_peak = 0.0, 0
    for name, (payload, kwargs) in cases.items():
        error, seconds, peak = _refusal(PayloadFeatureCodec().decode, payload, **kwargs)
        assert error.__name__ in ("FeatureCodecError", "ModelMismatchError"), name
        assert seconds < 1.0, f"{name}: refused after {seconds:.2f} s"
        assert peak < 1024 * 1024, f"{name}: {peak} bytes allocated before the refusal"
        worst_seconds, worst_peak = max(worst_seconds, seconds), max(worst_peak, peak)

    # through the explainer: the whole hit payload, a 100 MB features field and texts
    explainer = Explainer(fuzz_world.encoder)
    point = fuzz_world.images["int8"]
    hostile = [
        {**valid, PayloadKeys.FEATURES: {**features, "data": big}},
        {**valid, PayloadKeys.FEATURES: {**features, "shape": [10**6, 10**6, 16]}},
        {**valid, PayloadKeys.FINGERPRINT: big},
        {**valid, PayloadKeys.CROP_BOX: [0, 0, 10**12, 10**12]},
    ]
    for payload in hostile:
        hit = scored(point, payload)
        error, seconds, peak = _refusal(explainer.explain, "a red circle", [hit], errors="raise")
        assert issubclass(error, QdrantXaiError)
        assert seconds < 2.0 and peak < 8 * 1024 * 1024, (seconds, peak)
        worst_seconds = max(worst_seconds, seconds)

    # a recorded size of 10^12 x 10^12 with the matching box: explained from the (valid)
    # features, but drawing it over the actual 48x48 file is refused, not allocated
    giant = {**valid, PayloadKeys.WIDTH: 10**12, PayloadKeys.HEIGHT: 10**12}
    giant[PayloadKeys.CROP_BOX] = [0, 0, 10**12, 10**12]
    hit = scored(point, giant)
    (explanation,) = explainer.explain("a red circle", [hit])
    assert explanation.crop_box == (0, 0, 10**12, 10**12) and explanation.image is None
    error, seconds, peak = _refusal(explanation.overlay)
    assert error.__name__ == "ImageLoadError"
    assert seconds < 2.0 and peak < 8 * 1024 * 1024, (seconds, peak)
    hostile.append(giant)
    figures.record(FAMILY, "oversized fields refused", len(cases) + len(hostile))
    figures.record(FAMILY, "oversized: slowest refusal (s)", round(worst_seconds, 4))
    figures.record(FAMILY, "oversized: peak bytes allocated by a codec refusal", worst_peak)
