"""The world-agnostic heatmap benchmark (tests/benchmarks/heatmap_quality.py) on a tiny CLIP."""

from __future__ import annotations

import numpy as np
import pytest

from qdrant_xai import ClipEncoder
from qdrant_xai.demo.world import generate_scenes
from tests.benchmarks.heatmap_quality import (
    EASY,
    Estimate,
    HeatmapItem,
    measure_heatmap_quality,
    render_table,
    summarise,
)


def _items() -> list[HeatmapItem]:
    items = []
    for scene in generate_scenes(3, seed=23, size=64):
        for obj in scene.objects:
            kind = EASY if len(scene.objects) == 1 else "shares nothing but the scene"
            items.append(HeatmapItem(scene.image, f"a {obj.color} {obj.shape}", obj.mask, kind))
    return items


@pytest.mark.slow
def test_every_method_and_group_gets_means_with_intervals(tiny_encoder: ClipEncoder) -> None:
    items = _items()
    rows = measure_heatmap_quality(
        tiny_encoder, items, methods=("decomposition", "patch"), steps=4, resamples=200
    )
    kinds = {item.kind for item in items}
    groups = {"all", *kinds} | ({"hard"} if kinds - {EASY} else set())
    assert {(r.method, r.kind) for r in rows} == {
        (m, g) for m in ("decomposition", "patch") for g in groups
    }
    for row in rows:
        for estimate in (row.pointing, row.energy, row.deletion, row.insertion):
            assert estimate.low <= estimate.mean <= estimate.high
        assert 0.0 <= row.pointing.mean <= 1.0 and 0.0 <= row.energy.mean <= 1.0
    everything = next(r for r in rows if r.kind == "all")
    assert everything.pointing.n == len(items)
    assert "| decomposition | all |" in render_table(rows)


def test_intervals_come_from_the_items_and_groups_split_them() -> None:
    scores = {
        "m": {
            "pointing": np.array([1.0, 1.0, 0.0, 0.0]),
            "energy": np.array([0.5, 0.5, 0.5, 0.5]),
            "deletion": np.zeros(4),
            "insertion": np.ones(4),
        }
    }
    rows = {r.kind: r for r in summarise(scores, ["easy", "easy", "shares colour", "x"])}
    assert rows["easy"].pointing == Estimate(1.0, 1.0, 1.0, 2)
    assert rows["hard"].pointing == Estimate(0.0, 0.0, 0.0, 2)
    assert rows["all"].pointing.mean == 0.5 and rows["all"].pointing.low < 0.5
    assert rows["all"].energy == Estimate(0.5, 0.5, 0.5, 4)


def test_no_items_is_refused(tiny_encoder: ClipEncoder) -> None:
    with pytest.raises(ValueError, match="no items"):
        measure_heatmap_quality(tiny_encoder, [])
