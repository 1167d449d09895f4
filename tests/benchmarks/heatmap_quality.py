"""Heatmap quality on any world: pointing, energy pointing, deletion and insertion, with
bootstrap 95 % confidence intervals, overall and split by query kind.

An item is one query against one image with the truth: the object's pixel mask and the
query's kind (``"easy"``, ``"shares colour"``, ``"shares shape"``, or whatever kinds a world
defines). Nothing here knows a world; build items from any of them::

    from tests.benchmarks.heatmap_quality import HeatmapItem, measure_heatmap_quality

    items = [HeatmapItem(scene.image, "a red circle", obj.mask, "shares colour"), ...]
    rows = measure_heatmap_quality(encoder, items, methods=("decomposition", "gae"))
    for row in rows:
        print(row.method, row.kind, row.pointing)

Every metric is per item, so the intervals are percentile bootstraps over items (the same
resamples for every method and metric, so methods can be compared row by row). Besides the
items' own kinds, two groups are reported: ``"all"`` and ``"hard"`` (every kind but
``"easy"``, the PG hard of issue 15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.eval import deletion_auc, energy_pointing_game, insertion_auc, pointing_game
from qdrant_xai.explain.base import HeatmapMethod, ImageEvidence, heatmap_method
from qdrant_xai.images.load import LoadedImage

__all__ = [
    "ALL",
    "EASY",
    "HARD",
    "Estimate",
    "HeatmapItem",
    "HeatmapQuality",
    "item_scores",
    "measure_heatmap_quality",
    "summarise",
]

ALL, HARD, EASY = "all", "hard", "easy"
METRICS = ("pointing", "energy", "deletion", "insertion")


@dataclass(frozen=True)
class HeatmapItem:
    """One query against one image, with the truth.

    Attributes:
        image: a Pillow image, path, encoded bytes or :class:`LoadedImage`.
        text: the query (it names the object).
        mask: [H, W] bool pixel mask of the named object, in the image's own pixels.
        kind: the query's kind; ``"easy"`` when no other object shares the target's colour
            or shape, else e.g. ``"shares colour"`` / ``"shares shape"``.
    """

    image: Any
    text: str
    mask: np.ndarray
    kind: str = EASY


@dataclass(frozen=True)
class Estimate:
    """A mean over items with its percentile-bootstrap 95 % interval."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class HeatmapQuality:
    """One method on one group of items (``kind`` is ``"all"``, ``"hard"`` or an item kind).

    ``pointing`` and ``energy`` are fractions in [0, 1]; ``deletion`` (lower is better) and
    ``insertion`` (higher is better) are RISE AUCs of the query's cosine.
    """

    method: str
    kind: str
    pointing: Estimate
    energy: Estimate
    deletion: Estimate
    insertion: Estimate


def _evidence(encoder: ClipEncoder, images: Sequence[Any]) -> ImageEvidence:
    features = encoder.encode_images(images, patch_tokens=True, last_layer=True)
    return ImageEvidence(
        embeddings=np.stack([f.embedding for f in features]),
        contributions=np.stack([f.contributions for f in features]),
        patch_tokens=np.stack([f.patch_tokens for f in features if f.patch_tokens is not None]),
        last_layer_inputs=np.stack(
            [f.last_layer_inputs for f in features if f.last_layer_inputs is not None]
        ),
        images=list(images),
    )


def _size(image: Any) -> tuple[int, int]:
    pil = image.image if isinstance(image, LoadedImage) else image
    return int(pil.size[0]), int(pil.size[1])


def item_scores(
    encoder: ClipEncoder,
    items: Sequence[HeatmapItem],
    *,
    methods: Sequence[str | HeatmapMethod] = ("decomposition",),
    steps: int = 16,
    batch: int = 64,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-item scores: ``{method: {metric: [n_items]}}`` (metrics as in :data:`METRICS`).

    Images are read once per batch of ``batch`` items; ``methods`` are registered names or
    method instances (named by their ``name``).
    """
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        images = [item.image for item in chunk]
        evidence = _evidence(encoder, images)
        texts = encoder.embed_texts([item.text for item in chunk])
        pixels = encoder.pixel_values(images)
        crops = [encoder.crop_box(*_size(image)) for image in images]
        for entry in methods:
            method = heatmap_method(entry)
            maps = method.heatmaps(encoder, evidence, texts)
            per = scores.setdefault(method.name, {m: [] for m in METRICS})
            per["pointing"].append(
                np.array(
                    [
                        pointing_game(h, it.mask, crop_box=c)
                        for h, it, c in zip(maps, chunk, crops, strict=True)
                    ],
                    dtype=np.float64,
                )
            )
            per["energy"].append(
                np.array(
                    [
                        energy_pointing_game(h, it.mask, crop_box=c)
                        for h, it, c in zip(maps, chunk, crops, strict=True)
                    ]
                )
            )
            per["deletion"].append(deletion_auc(encoder, pixels, maps, texts, steps=steps))
            per["insertion"].append(insertion_auc(encoder, pixels, maps, texts, steps=steps))
    return {
        name: {metric: np.concatenate(values) for metric, values in per.items()}
        for name, per in scores.items()
    }


def summarise(
    scores: dict[str, dict[str, np.ndarray]],
    kinds: Sequence[str],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> list[HeatmapQuality]:
    """Means with bootstrap 95 % intervals per method and group of :func:`item_scores`.

    Args:
        scores: from :func:`item_scores`.
        kinds: the kind of each item.
        resamples: bootstrap resamples (shared by every method and metric of a group).
        seed: of the resampling.
    """
    kind_array = np.asarray(kinds)
    groups = {ALL: np.ones(len(kind_array), dtype=bool), HARD: kind_array != EASY}
    for kind in dict.fromkeys(kinds):
        groups[kind] = kind_array == kind
    rng = np.random.default_rng(seed)
    rows = []
    for group, members in groups.items():
        index = np.flatnonzero(members)
        if index.size == 0:
            continue
        draws = rng.integers(0, index.size, size=(resamples, index.size))
        for method, per in scores.items():
            estimates = {}
            for metric in METRICS:
                values = per[metric][index]
                means = values[draws].mean(axis=1)
                low, high = np.percentile(means, [2.5, 97.5])
                estimates[metric] = Estimate(
                    float(values.mean()), float(low), float(high), int(index.size)
                )
            rows.append(HeatmapQuality(method=method, kind=group, **estimates))
    return rows


def measure_heatmap_quality(
    encoder: ClipEncoder,
    items: Sequence[HeatmapItem],
    *,
    methods: Sequence[str | HeatmapMethod] = ("decomposition",),
    steps: int = 16,
    resamples: int = 1000,
    seed: int = 0,
) -> list[HeatmapQuality]:
    """Every method on ``items``: overall, on hard items and per kind, with 95 % CIs.

    Args:
        encoder: the model the heatmaps explain (and the metrics query).
        items: queries with their truth, from any world.
        methods: registered heatmap method names, or method instances.
        steps: deletion/insertion steps per curve.
        resamples: bootstrap resamples.
        seed: of the bootstrap.

    Returns:
        One :class:`HeatmapQuality` per (method, group); groups are ``"all"``, ``"hard"``
        (any kind but ``"easy"``, when there are such items) and each kind present.
    """
    if not items:
        raise ValueError("no items to measure; pass at least one HeatmapItem")
    scores = item_scores(encoder, items, methods=methods, steps=steps)
    return summarise(scores, [item.kind for item in items], resamples=resamples, seed=seed)


def render_table(rows: Sequence[HeatmapQuality]) -> str:
    """A markdown table of :func:`measure_heatmap_quality`'s rows."""
    lines = [
        "| method | kind | n | pointing | energy PG | deletion AUC ↓ | insertion AUC ↑ |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.method} | {row.kind} | {row.pointing.n} | {row.pointing} | {row.energy} | "
            f"{row.deletion} | {row.insertion} |"
        )
    return "\n".join(lines)
