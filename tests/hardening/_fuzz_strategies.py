"""Hypothesis strategies for hostile payloads (``test_fuzz_*.py``).

Random JSON values, hostile strings and numbers; values next to the right one (shapes off by
one, truncated or re-padded base64, planted NaN/inf, overflowing int8 scales, texts with a
word changed); structured mutations of a valid feature object; and :func:`hostile_payload`,
a real point of the fuzz world with 1 to 3 fields of its payload made hostile.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from typing import Any

import numpy as np
from hypothesis import strategies as st
from qdrant_client import models

from qdrant_xai import PayloadKeys
from tests.hardening._fuzz import CODECS, FuzzWorld

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


# -- payloads of real points ---------------------------------------------------------------

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
def hostile_payload(draw: st.DrawFn, world: FuzzWorld) -> tuple[models.Record, dict[str, Any]]:
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
