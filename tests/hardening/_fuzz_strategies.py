"""Hostile payloads: property-based fuzzing of the feature decoder and of every payload reader.

Payloads come back from a database other tools (and people) can write to. Hypothesis
generates random JSON values and structured mutations of real payloads written by the
indexer (wrong types, NaN/inf, shapes off the model's grid, truncated or padded base64,
non-ASCII, huge values, nesting, foreign fingerprints, overflowing int8 scales...) and
drives them through:

* :meth:`PayloadFeatureCodec.decode` (both codecs): random values, round trips, mutations;
* :meth:`Explainer.explain` with hits built in memory (``models.ScoredPoint``, the object
  qdrant-client returns), every layout, text and image queries;
* real embedded Qdrant collections whose points were overwritten with hostile payloads,
  read back through the explainer, the searcher, the MCP backend, the LangChain retriever,
  the backfill, ``recorded_model`` and ``parse_point_id``;
* the collection layouts' readers, and the MCP/LangChain formatting of hits.

Properties: only :class:`~qdrant_xai.QdrantXaiError` subclasses come out; a decode that
succeeds returns exactly what the payload encodes (an independent reference decoder here);
a heatmap is finite, of the model's grid and drawn from features whose fingerprint and
shape matched. Oversized fields are refused quickly, without allocating their claimed size.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from qdrant_client import QdrantClient, models

from qdrant_xai import (
    Backfiller,
    ClipEncoder,
    Explainer,
    ImageSourcePolicy,
    Indexer,
    PayloadKeys,
    QdrantXaiError,
    Searcher,
)
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.images.load import load_image
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.layouts import LAYOUTS
from qdrant_xai.storage.schema import parse_point_id, recorded_model

pytestmark = pytest.mark.hardening

FAMILY = "fuzz"
CODECS = ("fp16", "int8")


# -- bookkeeping ----------------------------------------------------------------------------


@dataclass
class Tally:
    """Cases run against one target, and what came out of them."""

    cases: int = 0
    ok: int = 0
    typed: Counter[str] = field(default_factory=Counter)
    other: Counter[str] = field(default_factory=Counter)

    def run(self, call: Callable[[], Any]) -> Any:
        """``call()``; a typed error is counted, any other exception counted and re-raised
        (Hypothesis then shrinks it to a minimal payload). None when it raised."""
        self.cases += 1
        try:
            result = call()
        except QdrantXaiError as exc:
            self.typed[type(exc).__name__] += 1
            assert str(exc).strip(), "a typed error without a message"
            return None
        except Exception as exc:
            self.other[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
            raise
        self.ok += 1
        return result


@pytest.fixture
def tally(figures: Any, request: pytest.FixtureRequest) -> Iterator[Tally]:
    """A Tally for the test, written to the figures when it ends (passed or not)."""
    counts = Tally()
    yield counts
    target = request.node.name.removeprefix("test_")
    figures.record(FAMILY, f"{target}: cases run", counts.cases)
    figures.record(FAMILY, f"{target}: decoded or explained", counts.ok)
    figures.record(
        FAMILY,
        f"{target}: typed errors",
        ", ".join(f"{name} {n}" for name, n in sorted(counts.typed.items())) or "none",
    )
    figures.add(FAMILY, "cases run (all targets)", counts.cases)
    figures.add(FAMILY, "other exceptions (must be 0)", sum(counts.other.values()))
    for name, n in counts.typed.items():
        figures.add(FAMILY, f"typed errors: {name}", n)


# -- an independent reference decoder -------------------------------------------------------


def reference_decode(payload: Any) -> np.ndarray:
    """What a stored feature object encodes, written without the package's code: float32
    ``data`` (fp16 or int8 times the per-row scale), reshaped to ``shape``."""
    shape = [int(d) for d in payload["shape"]]
    raw = base64.b64decode(payload["data"], validate=True)
    if payload["codec"] == "fp16":
        flat = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        scale = np.frombuffer(base64.b64decode(payload["scale"], validate=True), dtype="<f4")
        rows = np.frombuffer(raw, dtype=np.int8).astype(np.float32).reshape(len(scale), -1)
        flat = (rows * scale[:, None]).reshape(-1)
    return flat.reshape(shape)


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


def assert_valid_features(payload: Any, fingerprint: str, shape: tuple[int, ...]) -> np.ndarray:
    """The stored features a heatmap was drawn from: of this model, this shape, finite."""
    assert isinstance(payload, dict)
    assert payload.get("fingerprint") == fingerprint, "features of another model were used"
    assert tuple(payload["shape"]) == shape, "features of another shape were reshaped"
    values = reference_decode(payload)
    assert np.isfinite(values).all()
    return values


# -- strategies -----------------------------------------------------------------------------

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\udcff\udcfe",
        "é" * 40,
        "💥" * 20,
        "\u202e\u200b",
        "../../../../etc/passwd",
        "/etc/passwd",
        "/dev/zero",
        "/proc/self/environ",
        "file:///etc/passwd",
        "http://127.0.0.1:9/x.png",
        "http://169.254.169.254/latest/meta-data",
        "data:image/png;base64,AAAA",
        "data:image/png;base64," + "A" * 200,
        "iVBORw0KGgo" + "A" * 100,
        "~/.ssh/id_rsa",
        "C:\\Windows\\win.ini",
        "\\\\server\\share\\x.png",
        "x" * 5000,
        '{"text": "a red circle", "image_path": "/etc/passwd"}',
        "[" * 3000,
        "{" * 3000,
    ]
)
TEXT = st.one_of(st.text(max_size=40), HOSTILE_TEXT, st.text(st.characters(), max_size=20))
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64, 10**12, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
LEAVES = st.one_of(st.none(), NUMBERS, TEXT)
JSON = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=16,
)


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def shapes_near(shape: list[int]) -> st.SearchStrategy[Any]:
    """Shapes next to the right one: off by one, transposed, flattened, wrong types."""
    n = len(shape)
    return st.one_of(
        st.builds(
            lambda i, d: [s + d if j == i else s for j, s in enumerate(shape)],
            st.integers(0, n - 1),
            st.sampled_from([-1, 1, 2, -shape[0]]),
        ),
        st.just(list(reversed(shape))),
        st.just([math.prod(shape)]),
        st.just([math.prod(shape[:-1]), shape[-1]]),
        st.just([*shape, 1]),
        st.just([1, *shape]),
        st.just([float(s) for s in shape]),
        st.just([str(s) for s in shape]),
        st.just([True] * n),
        st.just([10**12, 10**12]),
        st.just([2**20, 2**20, 2**20, 2**20]),
        st.just([2**21]),
        st.just([]),
        st.just(shape * 2),
        st.just({"0": shape[0]}),
        st.just(str(shape)),
        st.lists(st.integers(-5, 40), max_size=5),
        JSON,
    )


def base64_near(text: str) -> st.SearchStrategy[Any]:
    """Base64 next to the right one: truncated, padded, re-padded, non-ASCII, spaces."""
    size = len(text)
    return st.one_of(
        st.integers(1, max(1, size)).map(lambda k: text[:-k]),
        st.integers(1, 12).map(lambda k: text + "A" * k),
        st.integers(1, 3).map(lambda k: text + "=" * k),
        st.just(text[:-4] + "===="),
        st.integers(0, max(0, size - 1)).flatmap(
            lambda i: st.sampled_from(["é", "!", " ", "\n", "-", "_", "\x00", "\udcff"]).map(
                lambda c: text[:i] + c + text[i + 1 :]
            )
        ),
        st.just(text.replace("A", "-")),
        st.just(" " + text[1:]),
        st.just(base64.urlsafe_b64encode(base64.b64decode(text)).decode()),
        st.just(text.encode()),  # bytes are not a JSON string
        st.just(list(text[:8])),
        JSON,
    )


def bytes_with(size: int, codec: str) -> st.SearchStrategy[str]:
    """Base64 of ``size`` valid-length bytes: random, or with NaN, inf or -128 planted."""
    planted = [b"\x00\x7c", b"\x00\xfc", b"\x00\x7e", b"\xff\x7f"] if codec == "fp16" else [b"\x80"]
    return st.one_of(
        st.binary(min_size=size, max_size=size),
        st.tuples(st.integers(0, size // len(planted[0]) - 1), st.sampled_from(planted)).map(
            lambda t: bytes(t[0] * len(t[1])) + t[1] + bytes(size - (t[0] + 1) * len(t[1]))
        ),
    ).map(lambda b: base64.b64encode(b).decode())


def scales_with(valid: str) -> st.SearchStrategy[str]:
    """Base64 of the valid float32 scales with some replaced: overflowing, negated, zero, NaN,
    tiny, or any float."""
    scales = np.frombuffer(base64.b64decode(valid), dtype="<f4")
    special = st.sampled_from(
        [3.0e38, -1.0, 0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, 1e30, 1.0]
    )
    changes = st.lists(
        st.tuples(st.integers(0, len(scales) - 1), special | st.floats(width=32)), min_size=1
    )
    negated = st.just(base64.b64encode((-scales).astype("<f4").tobytes()).decode())

    def apply(pairs: list[tuple[int, float]]) -> str:
        changed = scales.copy()
        for i, value in pairs:
            changed[i] = value
        return base64.b64encode(changed.astype("<f4").tobytes()).decode()

    return changes.map(apply) | negated


def texts_near(text: str) -> st.SearchStrategy[str]:
    """The point's text with a word dropped, added, changed or moved."""
    words = text.split()
    return st.sampled_from(
        [
            " ".join(words[:-1]),
            " ".join(words[1:]),
            text + " and more",
            " ".join(reversed(words)),
            text.upper(),
            text.replace(" ", "  "),
            text + "!",
            "x" + text,
        ]
    )


@st.composite
def mutated_features(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    """A structurally mutated copy of a valid feature object (1 to 3 mutations)."""
    payload = copy.deepcopy(valid)
    shape = list(valid["shape"])
    count = math.prod(shape)
    rows = count // shape[-1]
    itemsize = 2 if valid["codec"] == "fp16" else 1
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["v", "codec", "dtype", "shape", "data", "scale", "fp", "x"]))
        if key == "v":
            payload["v"] = draw(st.sampled_from([0, 2, "1", 1.0, True, None, [1], 2**64]))
        elif key in ("codec", "dtype"):
            payload[key] = draw(
                st.sampled_from(
                    ["fp16", "int8", "float16", "int8 ", "FP16", "fp32", None, ["fp16"]]
                )
            )
        elif key == "shape":
            payload["shape"] = draw(shapes_near(shape))
        elif key == "data":
            payload["data"] = draw(
                st.one_of(base64_near(valid["data"]), bytes_with(count * itemsize, valid["codec"]))
            )
        elif key == "scale":
            scale = valid.get("scale") or base64.b64encode(bytes(rows * 4)).decode()
            payload["scale"] = draw(st.one_of(scales_with(scale), base64_near(scale)))
        elif key == "fp":
            payload["fingerprint"] = draw(
                st.one_of(
                    st.just(valid["fingerprint"] + "x"),
                    st.just(valid["fingerprint"].upper()),
                    st.just("0" * 16 + valid["fingerprint"][16:]),
                    st.just(None),
                    JSON,
                )
            )
        elif draw(st.booleans()):
            payload.pop(draw(st.sampled_from(sorted(payload))))
        else:
            payload[draw(st.text(max_size=6))] = draw(JSON)
    return payload


# -- the world: a tiny model, images, real collections --------------------------------------


@dataclass
class World:
    encoder: ClipEncoder
    folder: Path
    client: QdrantClient
    images: dict[str, models.Record]  # codec -> an image point written by the indexer
    texts: dict[str, models.Record]  # codec -> a caption point
    query_image: Any

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint.key

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (*self.encoder.fingerprint.grid, self.encoder.dim)


def _index(client: QdrantClient, encoder: ClipEncoder, name: str, folder: Path, codec: str) -> None:
    summary = Indexer(client, encoder, collection_name=name, codec=codec).index_folder(  # type: ignore[arg-type]
        folder, captions=folder / "captions.csv", progress=False
    )
    assert summary.failed == []


@pytest.fixture(scope="module")
def world(tiny_encoder: ClipEncoder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("fuzz-scenes")
    write_scene_folder(folder, 4, seed=5, size=48)
    client = QdrantClient(":memory:")
    images, texts = {}, {}
    for codec in CODECS:
        _index(client, tiny_encoder, f"fuzz_{codec}", folder, codec)
        points, _ = client.scroll(f"fuzz_{codec}", limit=100, with_payload=True, with_vectors=True)
        images[codec] = next(p for p in points if p.payload and p.payload["xai_kind"] == "image")
        texts[codec] = next(p for p in points if p.payload and p.payload["xai_kind"] == "text")
    query_image = load_image(sorted(folder.glob("*.png"))[0])
    yield World(tiny_encoder, folder, client, images, texts, query_image)
    client.close()


# -- the feature decoder --------------------------------------------------------------------


def test_codec_decodes_random_json_into_typed_errors_only(
    world: World, figures: Any, tally: Tally
) -> None:
    n = figures.count(FAMILY, "codec, random JSON", reduced=500, full=3000)
    expected = world.feature_shape

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
            {"fingerprint": world.fingerprint, "shape": expected} if checked else {}
        )
        result = tally.run(lambda: decoder.decode(value, **kwargs))
        if result is not None:
            assert np.isfinite(result).all()
            np.testing.assert_array_equal(result, reference_decode(value))

    run()
    assert not tally.other


def test_codec_round_trips_valid_maps(world: World, figures: Any, tally: Tally) -> None:
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
        decoded = tally.run(
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
    assert tally.ok == tally.cases and not tally.other


def test_codec_refuses_mutated_payloads_or_decodes_them_exactly(
    world: World, figures: Any, tally: Tally
) -> None:
    n = figures.count(FAMILY, "codec, structured mutations", reduced=900, full=2500)
    expected = world.feature_shape
    valid = {c: world.images[c].payload[PayloadKeys.FEATURES] for c in CODECS}  # type: ignore[index]

    @settings(max_examples=n)
    @given(data=st.data(), codec=st.sampled_from(CODECS))
    def run(data: st.DataObject, codec: str) -> None:
        payload = data.draw(mutated_features(valid[codec]))
        decoded = tally.run(
            lambda: PayloadFeatureCodec().decode(
                payload, fingerprint=world.fingerprint, shape=expected
            )
        )
        if decoded is not None:  # only mutations that keep a valid map (extra keys, data)
            assert decoded.shape == expected, "a map of another shape was reshaped"
            assert payload["fingerprint"] == world.fingerprint
            assert np.isfinite(decoded).all()
            np.testing.assert_array_equal(decoded, reference_decode(payload))
            if payload["codec"] == "int8":
                scale = np.frombuffer(base64.b64decode(payload["scale"]), "<f4")
                assert (scale > 0).all(), "negative or zero int8 scales flip or erase a map"
                raw = np.frombuffer(base64.b64decode(payload["data"]), np.int8)
                assert (raw > -128).all(), "the encoder never writes -128"

    run()
    assert not tally.other
    assert tally.typed, "no mutation was refused: the generator is broken"


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


def test_oversized_fields_are_refused_before_allocation(world: World, figures: Any) -> None:
    valid = copy.deepcopy(world.images["int8"].payload)
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
    explainer = Explainer(world.encoder)
    point = world.images["int8"]
    hostile = [
        {**valid, PayloadKeys.FEATURES: {**features, "data": big}},
        {**valid, PayloadKeys.FEATURES: {**features, "shape": [10**6, 10**6, 16]}},
        {**valid, PayloadKeys.FINGERPRINT: big},
        {**valid, PayloadKeys.CROP_BOX: [0, 0, 10**12, 10**12]},
    ]
    for payload in hostile:
        hit = models.ScoredPoint(
            id=point.id, version=0, score=0.5, payload=payload, vector=point.vector
        )
        error, seconds, peak = _refusal(explainer.explain, "a red circle", [hit])
        assert issubclass(error, QdrantXaiError)
        assert seconds < 2.0 and peak < 8 * 1024 * 1024, (seconds, peak)
        worst_seconds = max(worst_seconds, seconds)

    # a recorded size of 10^12 x 10^12 with the matching box: explained from the (valid)
    # features, but drawing it over the actual 48x48 file is refused, not allocated
    giant = {**valid, PayloadKeys.WIDTH: 10**12, PayloadKeys.HEIGHT: 10**12}
    giant[PayloadKeys.CROP_BOX] = [0, 0, 10**12, 10**12]
    hit = models.ScoredPoint(id=point.id, version=0, score=0.5, payload=giant, vector=point.vector)
    (explanation,) = explainer.explain("a red circle", [hit])
    assert explanation.crop_box == (0, 0, 10**12, 10**12) and explanation.image is None
    error, seconds, peak = _refusal(explanation.overlay)
    assert error.__name__ == "ImageLoadError"
    assert seconds < 2.0 and peak < 8 * 1024 * 1024, (seconds, peak)
    hostile.append(giant)
    figures.record(FAMILY, "oversized fields refused", len(cases) + len(hostile))
    figures.record(FAMILY, "oversized: slowest refusal (s)", round(worst_seconds, 4))
    figures.record(FAMILY, "oversized: peak bytes allocated by a codec refusal", worst_peak)


# -- the explainer, hits built in memory ----------------------------------------------------

PAYLOAD_KEYS = [
    PayloadKeys.KIND,
    PayloadKeys.FINGERPRINT,
    PayloadKeys.FEATURES,
    PayloadKeys.PATCH_TOKENS,
    PayloadKeys.LAST_LAYER,
    PayloadKeys.MODEL,
    PayloadKeys.PROFILE,
    PayloadKeys.SOURCE,
    PayloadKeys.WIDTH,
    PayloadKeys.HEIGHT,
    PayloadKeys.CROP_BOX,
    PayloadKeys.CAPTION_IDS,
    PayloadKeys.TEXT,
    PayloadKeys.WORDS,
    PayloadKeys.IMAGE_ID,
    "metadata",
    "page_content",
    "_node_content",
    "document",
    "image",
    "caption",
]


#: fields that must agree with each other (features, words and text, box and size)
CONSISTENCY_KEYS = [
    PayloadKeys.FEATURES,
    PayloadKeys.FINGERPRINT,
    PayloadKeys.TEXT,
    PayloadKeys.WORDS,
    PayloadKeys.CROP_BOX,
    PayloadKeys.WIDTH,
    PayloadKeys.HEIGHT,
]


@st.composite
def hostile_payload(draw: st.DrawFn, world: World) -> tuple[models.Record, dict[str, Any]]:
    """A real point and a hostile version of its payload."""
    codec = draw(st.sampled_from(CODECS))
    point = draw(st.sampled_from([world.images[codec], world.texts[codec]]))
    payload = copy.deepcopy(point.payload or {})
    if draw(st.integers(0, 19)) == 0:
        return point, draw(st.dictionaries(st.sampled_from(PAYLOAD_KEYS), JSON, max_size=8))
    if draw(st.integers(0, 39)) == 0:
        payload[draw(st.sampled_from(PAYLOAD_KEYS))] = deep(draw(st.sampled_from([50, 500])))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(PAYLOAD_KEYS) | st.sampled_from(CONSISTENCY_KEYS))
        valid_features = (point.payload or {}).get(PayloadKeys.FEATURES)  # never a mutated one
        if key in (PayloadKeys.FEATURES, PayloadKeys.PATCH_TOKENS, PayloadKeys.LAST_LAYER):
            if isinstance(valid_features, dict) and draw(st.integers(0, 3)):
                value: Any = draw(mutated_features(valid_features))
            else:
                value = draw(JSON)
        elif key == PayloadKeys.CROP_BOX:
            value = draw(
                st.one_of(
                    st.lists(st.integers(-(10**12), 10**12), min_size=4, max_size=4),
                    st.lists(st.integers(-2, 70), min_size=4, max_size=4),
                    st.lists(
                        st.sampled_from([True, False, 0.5, "1", None]), min_size=4, max_size=4
                    ),
                    st.lists(st.integers(0, 48), max_size=6),
                    JSON,
                )
            )
        elif key in (PayloadKeys.WIDTH, PayloadKeys.HEIGHT):
            value = draw(st.one_of(st.integers(-5, 100), NUMBERS, JSON))
        elif key == PayloadKeys.WORDS:
            words = payload.get(PayloadKeys.WORDS)
            value = draw(
                st.one_of(
                    st.just(list(reversed(words)) if isinstance(words, list) else words),
                    st.just(words[:-1] if isinstance(words, list) else words),
                    st.just([*words, ["x", 0, 1]] if isinstance(words, list) else words),
                    st.lists(st.tuples(TEXT, st.integers(-3, 50), st.integers(-3, 50)).map(list)),
                    JSON,
                )
            )
        elif key == PayloadKeys.FINGERPRINT:
            value = draw(
                st.one_of(
                    st.just(world.fingerprint + " "),
                    st.just(world.fingerprint.replace("4x4", "7x7")),
                    st.just(world.fingerprint),
                    JSON,
                )
            )
        elif key == PayloadKeys.KIND:
            value = draw(st.one_of(st.sampled_from(["image", "text", "IMAGE", "", None]), JSON))
        elif key in (PayloadKeys.TEXT, PayloadKeys.SOURCE, "page_content", "document", "image"):
            near = texts_near(str((point.payload or {}).get(PayloadKeys.TEXT)))
            value = draw(near | TEXT | JSON)
        elif key == "_node_content":
            value = draw(
                st.one_of(
                    TEXT,
                    JSON.map(lambda v: json.dumps(v, allow_nan=True)),
                    st.builds(lambda t, p: json.dumps({"text": t, "image_path": p}), TEXT, TEXT),
                )
            )
        elif key == "metadata":
            value = draw(
                st.one_of(
                    st.dictionaries(st.sampled_from(["source", "image", "uri", "url"]), TEXT),
                    JSON,
                )
            )
        else:
            value = draw(JSON)
        if draw(st.integers(0, 9)) == 0:
            payload.pop(key, None)
        else:
            payload[key] = value
    return point, payload


def check_explanations(
    world: World, payload: dict[str, Any], explanations: list[Any], hits: list[Any]
) -> None:
    """What a successful explanation of a hostile payload must satisfy."""
    assert [e.id for e in explanations] == [h.id for h in hits]
    assert [e.score for e in explanations] == [h.score for h in hits]
    for e in explanations:
        json.dumps(e.to_dict())
        if e.heatmap is None:
            continue
        assert e.heatmap.shape == world.encoder.fingerprint.grid
        assert np.isfinite(e.heatmap).all(), "a non-finite heatmap"
        if e.heatmap_side == "hit" and e.image is None:  # drawn from stored features
            assert payload.get(PayloadKeys.FINGERPRINT) == world.fingerprint
            assert_valid_features(
                payload[PayloadKeys.FEATURES], world.fingerprint, world.feature_shape
            )
            if e.crop_box is not None:
                x0, y0, x1, y1 = e.crop_box
                assert 0 <= x0 < x1 <= payload[PayloadKeys.WIDTH]
                assert 0 <= y0 < y1 <= payload[PayloadKeys.HEIGHT]
        for w in e.words:
            assert math.isfinite(w.score)


def test_explainer_handles_hostile_payloads_in_memory(
    world: World, figures: Any, tally: Tally
) -> None:
    n = figures.count(FAMILY, "explainer, in-memory hits", reduced=300, full=2500)
    explainers = {
        name: Explainer(world.encoder, image_roots=[world.folder], layout=name) for name in LAYOUTS
    }
    overlays = Counter[str]()

    @settings(max_examples=n)
    @given(
        case=hostile_payload(world),
        layout=st.sampled_from(sorted(LAYOUTS)) | st.just("qdrant-xai"),
        query=st.sampled_from(["a red circle", "image"]),
        words=st.sampled_from(["occlusion", "tokens"]),
        hit_kind=st.sampled_from([None, "image", "text"]),
        overlay=st.integers(0, 9),
    )
    def run(
        case: tuple[models.Record, dict[str, Any]],
        layout: str,
        query: str,
        words: str,
        hit_kind: Any,
        overlay: int,
    ) -> None:
        point, payload = case
        hits = [
            models.ScoredPoint(
                id=point.id, version=0, score=0.5, payload=payload, vector=point.vector
            )
        ]
        asked = world.query_image if query == "image" else query
        explanations = tally.run(
            lambda: explainers[layout].explain(asked, hits, word_method=words, hit_kind=hit_kind)
        )
        if explanations is None:
            return
        check_explanations(world, payload, explanations, hits)
        e = explanations[0]
        if overlay == 0 and e.heatmap is not None and e.heatmap_side == "hit":
            image = tally.run(e.overlay)  # reads the payload's source for stored features
            overlays["drawn" if image is not None else "refused"] += 1

    run()
    figures.record(
        FAMILY,
        "explainer, in-memory hits: overlays drawn / refused",
        f"{overlays['drawn']} / {overlays['refused']}",
    )
    assert not tally.other


@st.composite
def inconsistent_payload(draw: st.DrawFn, world: World) -> tuple[models.Record, dict[str, Any]]:
    """A real point whose fields disagree: words and text, crop box and size."""
    codec = draw(st.sampled_from(CODECS))
    point = draw(st.sampled_from([world.images[codec], world.texts[codec]]))
    payload = copy.deepcopy(point.payload or {})
    if payload[PayloadKeys.KIND] == "text":
        words, text = payload[PayloadKeys.WORDS], payload[PayloadKeys.TEXT]
        if draw(st.booleans()):
            payload[PayloadKeys.TEXT] = draw(texts_near(text))
        else:
            shifted = [[w, a + 1, b + 1] for w, a, b in words]
            payload[PayloadKeys.WORDS] = draw(
                st.sampled_from([words[::-1], shifted, [[w.upper(), a, b] for w, a, b in words]])
            )
    else:
        w, h = payload[PayloadKeys.WIDTH], payload[PayloadKeys.HEIGHT]
        box = draw(
            st.lists(st.integers(-2, max(w, h) + 2), min_size=4, max_size=4)
            | st.sampled_from([[0, 0, w + 1, h], [0, 0, w, h + 1], [w, 0, 0, h], [0, 0, 0, 0]])
        )
        payload[PayloadKeys.CROP_BOX] = box
        if draw(st.booleans()):
            payload[draw(st.sampled_from([PayloadKeys.WIDTH, PayloadKeys.HEIGHT]))] = draw(
                st.sampled_from([1, 0, -w, True, float(w), str(w), None])
            )
    return point, payload


def test_explainer_refuses_fields_that_disagree(world: World, figures: Any, tally: Tally) -> None:
    """Words stored for another text, crop boxes outside the recorded size: refused, never
    attributed to the wrong words or drawn over the wrong region."""
    n = figures.count(FAMILY, "explainer, fields that disagree", reduced=150, full=1000)
    explainer = Explainer(world.encoder, image_roots=[world.folder])

    @settings(max_examples=n)
    @given(
        case=inconsistent_payload(world),
        query=st.sampled_from(["a red circle", "image"]),
        words=st.sampled_from(["tokens", "occlusion"]),
    )
    def run(case: tuple[models.Record, dict[str, Any]], query: str, words: str) -> None:
        point, payload = case
        hits = [
            models.ScoredPoint(
                id=point.id, version=0, score=0.5, payload=payload, vector=point.vector
            )
        ]
        asked = world.query_image if query == "image" else query
        explanations = tally.run(lambda: explainer.explain(asked, hits, word_method=words))
        if explanations is not None:
            check_explanations(world, payload, explanations, hits)

    run()
    assert not tally.other


# -- real embedded collections --------------------------------------------------------------


def test_embedded_collection_with_hostile_payloads(
    world: World, figures: Any, tally: Tally
) -> None:
    """Points of a real collection overwritten with hostile payloads, read back through the
    explainer, the searcher, the MCP backend, the LangChain retriever and recorded_model."""
    from langchain_qdrant_xai import QdrantXaiRetriever, describe_documents, documents_html
    from qdrant_xai_mcp import ServerSettings
    from qdrant_xai_mcp.server import XaiBackend

    n = figures.count(FAMILY, "embedded collection, overwritten payloads", reduced=40, full=400)
    client = world.client
    reads = Counter[str]()

    @settings(max_examples=n)
    @given(
        case=hostile_payload(world),
        reader=st.sampled_from(["explainer", "mcp", "langchain", "recorded_model"]),
    )
    def run(case: tuple[models.Record, dict[str, Any]], reader: str) -> None:
        point, payload = case
        features = (point.payload or {}).get(PayloadKeys.FEATURES) or {}
        name = f"fuzz_{features.get('codec', 'fp16')}"  # both collections share point ids
        original = copy.deepcopy(point.payload)
        client.overwrite_payload(name, payload=payload, points=[point.id])
        try:
            kind = "text" if (point.payload or {}).get(PayloadKeys.KIND) == "text" else "image"
            reads[reader] += 1
            if reader == "explainer":
                query: Any = "a red circle" if kind == "image" else world.query_image
                searcher = Searcher(client, world.encoder, collection_name=name)
                hits = (searcher.search_images if kind == "image" else searcher.search_texts)(
                    query, limit=20
                )
                explainer = Explainer(
                    world.encoder, client, collection_name=name, image_roots=[world.folder]
                )
                result = tally.run(lambda: explainer.explain(query, hits))
                if result is not None:
                    fetched = client.retrieve(name, ids=[h.id for h in hits], with_payload=True)
                    by_id = {str(r.id): r.payload or {} for r in fetched}
                    for e in result:
                        check_explanations(world, by_id[str(e.id)], [e], [e.hit])
            elif reader == "mcp":
                backend = XaiBackend(
                    ServerSettings(collection_name=name, image_roots=(world.folder,)),
                    client,
                    encoder=world.encoder,
                )
                result = tally.run(
                    lambda: (
                        backend.search_images("a red circle", limit=3)
                        if kind == "image"
                        else backend.search_texts(image_path=str(world.query_image.source), limit=3)
                    )
                )
                if result is not None:
                    json.dumps(result.model_dump(mode="json"))
                    tally.run(lambda: backend.explain_hit(str(point.id), query_text="a circle"))
            elif reader == "langchain":
                retriever = QdrantXaiRetriever(
                    client=client,
                    encoder=world.encoder,
                    collection_name=name,
                    k=3,
                    image_roots=[world.folder],
                )
                docs = tally.run(lambda: retriever.invoke("a red circle"))
                if docs is not None:
                    describe_documents(docs)
                    documents_html(docs)
            else:
                found = tally.run(lambda: recorded_model(client, name))
                assert found is None or isinstance(found, str)
        finally:
            client.overwrite_payload(name, payload=original or {}, points=[point.id])

    run()
    figures.record(
        FAMILY,
        "embedded collection: reads by reader",
        ", ".join(f"{k} {v}" for k, v in sorted(reads.items())),
    )
    assert not tally.other


def test_backfill_over_hostile_payloads(
    world: World, figures: Any, tally: Tally, tmp_path: Path
) -> None:
    """A backfill over a collection of points without features (as another tool writes
    them), some with hostile payloads: each point is updated, unchanged or reported as failed
    with its reason, the counts add up, and every point it wrote holds valid features."""
    n = figures.count(FAMILY, "backfill runs over hostile payloads", reduced=10, full=100)
    client = world.client
    source = "fuzz_fp16"
    points, _ = client.scroll(source, limit=100, with_payload=True, with_vectors=True)
    totals = Counter[str]()

    @settings(max_examples=n)
    @given(
        cases=st.lists(hostile_payload(world), min_size=1, max_size=4),
        layout=st.sampled_from(["qdrant-xai", "qdrant-tutorial"]),
    )
    def run(cases: list[tuple[models.Record, dict[str, Any]]], layout: str) -> None:
        name = "fuzz_backfill"
        if client.collection_exists(name):
            client.delete_collection(name)
        client.create_collection(
            name, vectors_config=client.get_collection(source).config.params.vectors
        )
        client.upsert(name, points=[_without_features(p) for p in points])
        for point, payload in cases:
            client.overwrite_payload(name, payload=payload, points=[point.id])
        backfiller = Backfiller(
            client,
            world.encoder,
            collection_name=name,
            layout=layout,
            sources=ImageSourcePolicy.from_roots([world.folder]),
        )
        summary = tally.run(lambda: backfiller.run(progress=False))
        if summary is not None:
            assert summary.updated + summary.unchanged + len(summary.failed) == len(points)
            assert all(reason for _, reason in summary.failed)
            _check_backfilled(world, client, name, {str(p.id) for p, _ in cases}, layout)
            totals["updated"] += summary.updated
            totals["unchanged"] += summary.unchanged
            totals["failed"] += len(summary.failed)

    run()
    figures.record(
        FAMILY,
        "backfill: points updated / unchanged / reported failed",
        f"{totals['updated']} / {totals['unchanged']} / {totals['failed']}",
    )
    assert not tally.other


def _without_features(point: models.Record) -> models.PointStruct:
    payload = {k: v for k, v in (point.payload or {}).items() if not k.startswith("xai_")}
    return models.PointStruct(id=point.id, vector=point.vector, payload=payload)  # type: ignore[arg-type]


def _check_backfilled(
    world: World, client: QdrantClient, name: str, hostile: set[str], layout: str
) -> None:
    """Every point the backfill was given clean (no features, a readable image or a text)
    now holds valid features of this model (with the layout the points were written in);
    the hostile ones may be left as they were."""
    records, _ = client.scroll(name, limit=100, with_payload=True)
    for record in records:
        if str(record.id) in hostile:
            continue
        payload = record.payload or {}
        if layout != "qdrant-xai" and PayloadKeys.FINGERPRINT not in payload:
            continue  # the tutorial layout looks for the image under "image", not "source"
        assert payload.get(PayloadKeys.FINGERPRINT) == world.fingerprint, "a clean point skipped"
        features = payload.get(PayloadKeys.FEATURES)
        if payload.get(PayloadKeys.KIND) == "image":
            shape: tuple[int, ...] = world.feature_shape
        else:
            shape = (len(payload[PayloadKeys.WORDS]), world.encoder.dim)
        PayloadFeatureCodec().decode(features, fingerprint=world.fingerprint, shape=shape)


# -- readers of single fields ---------------------------------------------------------------


def test_payload_readers_of_layouts_ids_and_formatting(
    world: World, figures: Any, tally: Tally
) -> None:
    """The layouts' readers, point-id parsing of caption ids, the LangChain caption lookup,
    the MCP formatting of unexplained hits: on random payloads."""
    from langchain_qdrant_xai.retrievers import QdrantXaiRetriever, _first_caption
    from qdrant_xai_mcp.server import _unexplained, _user_payload

    n = figures.count(FAMILY, "layout readers, ids and formatting", reduced=300, full=1500)

    @settings(max_examples=n)
    @given(
        payload=st.one_of(
            st.dictionaries(st.sampled_from(PAYLOAD_KEYS), JSON, max_size=8),
            st.dictionaries(st.text(max_size=8), JSON, max_size=6),
            st.sampled_from(PAYLOAD_KEYS).map(lambda k: {k: deep(400)}),
            st.builds(lambda t: {"_node_content": t}, HOSTILE_TEXT),
        ),
        pid=st.one_of(JSON, st.uuids().map(str), st.sampled_from(["²", "١٢", "٣", " 7 "])),
    )
    def run(payload: dict[str, Any], pid: Any) -> None:
        def read() -> None:
            point = models.ScoredPoint(id=1, version=0, score=0.1, payload=payload)
            for reader in LAYOUTS.values():
                source, text = reader.image_source(payload), reader.text(payload)
                assert source is None or (isinstance(source, str) and source.strip())
                assert text is None or (isinstance(text, str) and text.strip())
                _unexplained(point, 0, "image", reader, "a reason")
            json.dumps(_user_payload(payload), allow_nan=True)
            QdrantXaiRetriever._caption_ids([point])
            _first_caption({PayloadKeys.CAPTION_IDS: [pid]}, {})

        tally.run(read)
        parsed = tally.run(lambda: parse_point_id(pid))
        if parsed is not None:
            assert (isinstance(parsed, int) and 0 <= parsed < 2**64) or isinstance(parsed, str)

    run()
    assert not tally.other
