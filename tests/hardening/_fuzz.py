"""Shared parts of the hostile-payload fuzzing (``test_fuzz_*.py``).

The world the fuzzing runs in (a tiny model, a few scenes, real in-memory collections of
both codecs), the :class:`Tally` of what each fuzzed call did, an independent reference
decoder of stored feature objects, and what a successful explanation of a hostile payload
must satisfy. The hardening ``conftest.py`` serves the fixtures ``fuzz_world`` and
``fuzz_tally`` defined here.
"""

from __future__ import annotations

import base64
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, Indexer, PayloadKeys, QdrantXaiError
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.images.load import load_image

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
def fuzz_tally(figures: Any, request: pytest.FixtureRequest) -> Iterator[Tally]:
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


def assert_valid_features(payload: Any, fingerprint: str, shape: tuple[int, ...]) -> np.ndarray:
    """The stored features a heatmap was drawn from: of this model, this shape, finite."""
    assert isinstance(payload, dict)
    assert payload.get("fingerprint") == fingerprint, "features of another model were used"
    assert tuple(payload["shape"]) == shape, "features of another shape were reshaped"
    values = reference_decode(payload)
    assert np.isfinite(values).all()
    return values


# -- the world: a tiny model, images, real collections --------------------------------------


@dataclass
class FuzzWorld:
    """A tiny model, its scene folder, and an in-memory client with one collection per
    codec (``fuzz_fp16``, ``fuzz_int8``); one image and one caption point of each."""

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
def fuzz_world(
    tiny_encoder: ClipEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzWorld]:
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
    yield FuzzWorld(tiny_encoder, folder, client, images, texts, query_image)
    client.close()


def scored(point: models.Record, payload: dict[str, Any]) -> models.ScoredPoint:
    """A hit on ``point`` whose payload is ``payload``, as qdrant-client returns one."""
    return models.ScoredPoint(
        id=point.id, version=0, score=0.5, payload=payload, vector=point.vector
    )


def check_explanations(
    world: FuzzWorld, payload: dict[str, Any], explanations: list[Any], hits: list[Any]
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
