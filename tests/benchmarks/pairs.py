"""The (world, model) pairs the method benchmark measures, and their items.

Two worlds:

* ``shapes``: :mod:`qdrant_xai.demo.world`, one to three objects kept apart on a smooth
  background; the methods were developed on it;
* ``clutter``: :mod:`qdrant_xai.demo.clutter`, two to five objects that mostly share a
  colour or a shape, touching and overlapping, on textured clutter; built to be hard.

Three models:

* ``shapes-clip``: the bundled model (4 vision layers, 8x8 patches), the one the methods
  were developed and tuned on: its figures are development figures;
* ``clutter-4l`` and ``clutter-8l``: trained by ``examples/train_clutter_clip.py`` with
  their own seeds (11, 111, 1111 and 12, 112, ..., 1114), depths (4 and 8 vision layers)
  and patch grids (8x8 and 7x7) on the clutter world, and never used while developing a
  method: held out.

Every model is measured on both worlds (the clutter models know every word of the shapes
world). Queries are every object's phrase against its scene, labelled with
:func:`qdrant_xai.demo.clutter.query_kind`; word items swap one content word of a scene's
caption for a foil.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from qdrant_xai.demo.clutter import generate_clutter_scenes, query_kind
from qdrant_xai.demo.world import COLORS, SHAPES, caption_for, generate_scenes
from qdrant_xai.encoding.words import split_words
from tests.benchmarks.heatmap_quality import HeatmapItem
from tests.benchmarks.word_quality import FoilItem

__all__ = [
    "MODELS",
    "SIGLIP_MODELS",
    "WORLDS",
    "BenchItem",
    "BenchModel",
    "foil_items",
    "heatmap_items",
    "relies_on_target",
    "scenes_of",
]

MODELS_DIR = Path(__file__).resolve().parent / "models"
#: scene seeds of the benchmark (no model trained on them)
QUALITY_SEED = 4242


@dataclass(frozen=True)
class BenchModel:
    """A model of the benchmark: ``source`` is what ``ClipEncoder.from_pretrained`` takes."""

    name: str
    source: str
    held_out: bool
    about: str
    family: str = "clip"


MODELS: tuple[BenchModel, ...] = (
    BenchModel("shapes-clip", "shapes", False, "bundled; 4 layers, 8x8 patches; tuned on"),
    BenchModel(
        "clutter-4l",
        str(MODELS_DIR / "clutter-4l"),
        True,
        "4 layers, 8x8 patches, seeds 11/111/1111",
    ),
    BenchModel(
        "clutter-8l",
        str(MODELS_DIR / "clutter-8l"),
        True,
        "8 layers, 7x7 patches, seeds 12/112/.../1114",
    ),
)
#: SigLIP (issue 18), measured with the same tables; compared with ``shapes-clip``, the CLIP
#: trained on the same world (the codec and word-table sections keep to CLIP's MODELS)
SIGLIP_MODELS: tuple[BenchModel, ...] = (
    BenchModel(
        "shapes-siglip",
        str(MODELS_DIR / "shapes-siglip"),
        False,
        "SigLIP; 4 layers, 8x8 patches, seed 31; trained on the shapes world; the SigLIP "
        "split was chosen on it",
        family="siglip",
    ),
    BenchModel(
        "shapes-siglip-6l",
        str(MODELS_DIR / "shapes-siglip-6l"),
        True,
        "SigLIP; 6 layers, width 64, 7x7 patches, seed 41; trained on the shapes world",
        family="siglip",
    ),
)
WORLDS: tuple[str, ...] = ("shapes", "clutter")


def scenes_of(world: str, n: int, *, seed: int = QUALITY_SEED) -> Iterator[Any]:
    """``n`` scenes of a world (128 px), deterministic for ``seed``."""
    if world == "shapes":
        return generate_scenes(n, seed=seed)
    if world == "clutter":
        return generate_clutter_scenes(n, seed=seed)
    raise ValueError(f"unknown world {world!r}; choose one of {WORLDS}")


@dataclass(frozen=True)
class BenchItem(HeatmapItem):
    """A heatmap item that also knows its distractors: the masks of the other objects of
    the scene that share the target's colour or shape."""

    distractors: tuple[np.ndarray, ...] = ()


def heatmap_items(world: str, n_scenes: int, *, seed: int = QUALITY_SEED) -> list[BenchItem]:
    """One item per object whose colour-shape pair is unique in its scene."""
    items = []
    for scene in scenes_of(world, n_scenes, seed=seed):
        pairs = [(o.color, o.shape) for o in scene.objects]
        for obj in scene.objects:
            if pairs.count((obj.color, obj.shape)) != 1:
                continue
            distractors = tuple(
                o.mask
                for o in scene.objects
                if o is not obj and (o.color == obj.color or o.shape == obj.shape)
            )
            kind = query_kind(scene, obj)
            items.append(BenchItem(scene.image, obj.phrase, obj.mask, kind, distractors))
    return items


def relies_on_target(encoder: Any, items: list[BenchItem], *, batch: int = 64) -> np.ndarray:
    """For each hard item, whether the model's own score leans on the target more than on
    any distractor: painting the target out (with the scene's median colour) lowers
    ``cos(image, query)`` more than painting out any one distractor. Easy items: True.

    Where this is False the model cannot tell the target from a distractor (or prefers
    the distractor), so no faithful heatmap should be expected to point at the target.
    """
    out = np.ones(len(items), dtype=bool)
    jobs: list[tuple[int, int, Any]] = []  # (item, 0 = target / k = distractor k, image)
    for index, item in enumerate(items):
        if not item.distractors:
            continue
        pixels = np.asarray(item.image.convert("RGB"))
        fill = np.median(pixels.reshape(-1, 3), axis=0).astype(np.uint8)
        for k, mask in enumerate((item.mask, *item.distractors)):
            painted = pixels.copy()
            painted[mask] = fill
            jobs.append((index, k, Image.fromarray(painted)))
    if not jobs:
        return out
    queries = {i: None for i, _, _ in jobs}
    texts = encoder.embed_texts([items[i].text for i in queries])
    query_of = dict(zip(queries, texts, strict=True))
    scores = np.concatenate(
        [
            encoder.embed_images([image for _, _, image in jobs[start : start + batch]])
            for start in range(0, len(jobs), batch)
        ]
    )
    by_item: dict[int, dict[int, float]] = {}
    for (index, k, _), vector in zip(jobs, scores, strict=True):
        by_item.setdefault(index, {})[k] = float(vector @ query_of[index])
    for index, painted in by_item.items():
        # lowest score when the target is gone = the model leaned on the target most
        out[index] = painted[0] < min(v for k, v in painted.items() if k)
    return out


def foil_items(world: str, n_scenes: int, *, seed: int = QUALITY_SEED) -> list[FoilItem]:
    """Two foil items per scene: one object's colour, then one's shape, swapped for a value
    that makes the pair absent from the scene (the caption keeps its other words)."""
    content = set(COLORS) | set(SHAPES)
    items = []
    for index, scene in enumerate(scenes_of(world, n_scenes, seed=seed)):
        rng = np.random.default_rng([seed, index, 7])
        pairs = [(o.color, o.shape) for o in scene.objects]
        words = split_words(scene.caption)
        caption_content = tuple(k for k, w in enumerate(words) if w.text in content)
        for slot, values in ((0, COLORS), (1, SHAPES)):
            # a crowded clutter scene may hold one shape in every colour (or one colour in
            # every shape): such objects cannot be foiled on that slot
            targets = [k for k, pair in enumerate(pairs) if _free(pairs, pair, slot, values)]
            if not targets:
                continue
            target = targets[int(rng.integers(len(targets)))]
            options = _free(pairs, pairs[target], slot, values)
            new = options[int(rng.integers(len(options)))]
            swapped = list(pairs)
            swapped[target] = (new, pairs[target][1]) if slot == 0 else (pairs[target][0], new)
            foil_caption = caption_for(swapped)
            foil_words = split_words(foil_caption)
            (foil_index,) = [
                k
                for k, (a, b) in enumerate(zip(words, foil_words, strict=True))
                if a.text != b.text
            ]
            elsewhere = any(p[slot] == new for p in pairs)
            items.append(
                FoilItem(
                    image=scene.image,
                    caption=scene.caption,
                    caption_content=caption_content,
                    foil_caption=foil_caption,
                    foil_index=foil_index,
                    foil_true=tuple(
                        k for k, w in enumerate(foil_words) if w.text in content and k != foil_index
                    ),
                    kind=("colour" if slot == 0 else "shape")
                    + (", elsewhere" if elsewhere else ""),
                )
            )
    return items


def _free(pairs: list[tuple[str, str]], pair: tuple[str, str], slot: int, values: Any) -> list[str]:
    """The values that make ``pair`` absent from the scene when put in its ``slot``."""
    return [str(v) for v in values if ((v, pair[1]) if slot == 0 else (pair[0], v)) not in pairs]
