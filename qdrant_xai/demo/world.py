"""A synthetic "shapes world": coloured shapes on a noisy background, with captions.

Every scene holds one to three non-overlapping shapes, each a distinct
``(colour, shape)`` pair, and a caption that names all of them
(``"a red circle and a blue square"``). Each object carries its bounding box and
pixel mask, so a heatmap can be scored against ground truth (the pointing game:
does the hottest patch fall on the object the query names?).

The world is small enough that a tiny CLIP trained from scratch on it
(``examples/train_shapes_clip.py``) learns to bind colours to shapes, which makes
it a fast, offline stand-in for a real CLIP checkpoint in tests and demos.

Use::

    from qdrant_xai.demo.world import generate_scenes, write_scene_folder

    for scene in generate_scenes(4, seed=1):
        print(scene.caption, [obj.box for obj in scene.objects])
    csv_path = write_scene_folder("scenes/", 100, seed=1)
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "SHAPES",
    "WORLD_WORDS",
    "SceneObject",
    "ShapeScene",
    "caption_for",
    "generate_scenes",
    "misbound_phrase",
    "recolour",
    "reshape_one",
    "swap_colours",
    "write_scene_folder",
]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 165, 55),
    "blue": (35, 75, 225),
    "yellow": (240, 210, 30),
    "purple": (145, 50, 190),
}
"""Colour name -> base RGB. Hues are well apart so that each stays recognisable
after per-object jitter and downsampling to the model's input size."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Shape names, each drawn by :func:`_draw_shape`."""

WORLD_WORDS: tuple[str, ...] = ("a", "and", *COLORS, *SHAPES)
"""Every word a caption can contain."""

# Number of objects per scene and how often each count occurs.
_OBJECT_COUNTS = (1, 2, 3)
_OBJECT_COUNT_WEIGHTS = (0.15, 0.7, 0.15)
# Object side length as a fraction of the image side.
_MIN_FRACTION, _MAX_FRACTION = 0.22, 0.36
# Free pixels kept between two objects' boxes (as a fraction of the image side).
_GAP_FRACTION = 0.03
_MAX_PLACEMENT_TRIES = 200


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene.

    Attributes:
        color: Colour name, a key of :data:`COLORS`.
        shape: Shape name, one of :data:`SHAPES`.
        box: Tight bounding box of ``mask`` as ``(x0, y0, x1, y1)`` pixels, with
            ``x1`` and ``y1`` exclusive (``mask[y0:y1, x0:x1]`` holds every pixel).
        mask: Boolean pixel mask of the shape, shape ``[H, W]``.
    """

    color: str
    shape: str
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(compare=False, repr=False)

    @property
    def phrase(self) -> str:
        """The noun phrase naming this object, e.g. ``"a red circle"``."""
        return f"a {self.color} {self.shape}"


@dataclass(frozen=True)
class ShapeScene:
    """A rendered scene with its caption and ground-truth objects.

    Attributes:
        image: The RGB image, ``size x size`` pixels.
        caption: Names every object, in random order, e.g.
            ``"a red circle and a blue square"``.
        objects: The objects, in the order the caption names them.
    """

    image: Image.Image = field(compare=False, repr=False)
    caption: str
    objects: tuple[SceneObject, ...]


def caption_for(pairs: Sequence[tuple[str, str]]) -> str:
    """Build the caption naming ``(colour, shape)`` pairs in the given order.

    ``[("red", "circle")]`` -> ``"a red circle"``; two pairs are joined by
    ``" and "``; three or more by commas and a final ``" and "``.
    """
    phrases = [f"a {color} {shape}" for color, shape in pairs]
    if len(phrases) <= 2:
        return " and ".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def generate_scenes(n: int, *, seed: int = 0, size: int = 128) -> Iterator[ShapeScene]:
    """Yield ``n`` random scenes, deterministically for a given ``seed``.

    Scene ``i`` depends only on ``(seed, i)``, so the first scenes of a longer
    run equal those of a shorter one, and two seeds give independent worlds
    (use one seed for training and another for held-out evaluation).

    Args:
        n: Number of scenes.
        seed: Seed of the random world.
        size: Side of the square images in pixels (at least 32).

    Yields:
        :class:`ShapeScene` objects with ``size x size`` RGB images.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    for index in range(n):
        yield _render_scene(np.random.default_rng([seed, index]), size)


def write_scene_folder(directory: str | Path, n: int, *, seed: int = 0, size: int = 128) -> Path:
    """Write ``n`` scenes as PNG files plus a ``captions.csv`` index.

    The folder receives ``scene_0000.png``, ``scene_0001.png``, … and
    ``captions.csv`` with the header ``image,caption`` (image names are
    relative to the folder).

    Args:
        directory: Target folder; created if missing.
        n: Number of scenes.
        seed: Seed of the random world (see :func:`generate_scenes`).
        size: Side of the square images in pixels.

    Returns:
        Path of the written ``captions.csv``.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(max(n - 1, 0))))
    csv_path = folder / "captions.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for index, scene in enumerate(generate_scenes(n, seed=seed, size=size)):
            name = f"scene_{index:0{width}d}.png"
            scene.image.save(folder / name)
            writer.writerow([name, scene.caption])
    return csv_path


def _render_scene(rng: np.random.Generator, size: int) -> ShapeScene:
    count = int(rng.choice(_OBJECT_COUNTS, p=_OBJECT_COUNT_WEIGHTS))
    combos = [(color, shape) for color in COLORS for shape in SHAPES]
    picked = [combos[i] for i in rng.choice(len(combos), size=count, replace=False)]

    canvas = _background(rng, size)
    boxes = _place_boxes(rng, size, count)
    objects = []
    for (color, shape), box in zip(picked, boxes, strict=True):
        mask = _draw_shape(shape, box, size)
        jitter = rng.integers(-18, 19, size=3)
        rgb = np.array(COLORS[color], dtype=np.float32) + jitter
        ys, xs = np.nonzero(mask)
        shading = 6.0 * rng.standard_normal((len(ys), 1), dtype=np.float32)
        canvas[ys, xs] = rgb + shading
        tight = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append(SceneObject(color=color, shape=shape, box=tight, mask=mask))

    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    caption = caption_for([(obj.color, obj.shape) for obj in objects])
    return ShapeScene(image=image, caption=caption, objects=tuple(objects))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A neutral grey canvas with a gentle gradient, blotches and pixel noise.

    Returns:
        Float32 array of shape ``[size, size, 3]``, roughly in ``[0, 255]`` (the
        caller clips).
    """
    base = rng.uniform(95.0, 175.0)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    strength = rng.uniform(-25.0, 25.0)
    gradient = strength * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])
    # Low-frequency blotches: coarse noise upsampled with bilinear filtering.
    coarse = rng.normal(0.0, 10.0, size=(6, 6)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
    grey = base + gradient + blotches
    tint = rng.uniform(-6.0, 6.0, size=3).astype(np.float32)  # a faint cast, far from any hue
    noise = 7.0 * rng.standard_normal((size, size, 3), dtype=np.float32)
    return (grey[..., None] + tint) + noise


def _place_boxes(
    rng: np.random.Generator, size: int, count: int
) -> list[tuple[int, int, int, int]]:
    """Pick ``count`` square, pairwise non-overlapping boxes ``(x0, y0, x1, y1)``."""
    gap = max(1, round(_GAP_FRACTION * size))
    while True:
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(_MAX_PLACEMENT_TRIES):
            side = int(rng.integers(round(_MIN_FRACTION * size), round(_MAX_FRACTION * size) + 1))
            x0 = int(rng.integers(1, size - side))
            y0 = int(rng.integers(1, size - side))
            box = (x0, y0, x0 + side, y0 + side)
            if all(_separated(box, other, gap) for other in boxes):
                boxes.append(box)
                if len(boxes) == count:
                    return boxes
        # Unlucky early placements left no room: start over (rarely needed).


def _separated(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _draw_shape(shape: str, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Rasterise ``shape`` inside ``box``.

    Returns:
        Boolean mask of shape ``[size, size]``.
    """
    x0, y0, x1, y1 = box
    right, bottom = x1 - 1, y1 - 1  # PIL's drawing boxes are inclusive
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    if shape == "circle":
        draw.ellipse((x0, y0, right, bottom), fill=255)
    elif shape == "square":
        inset = round(0.08 * (x1 - x0))  # a square fills its box less than a circle does
        draw.rectangle((x0 + inset, y0 + inset, right - inset, bottom - inset), fill=255)
    elif shape == "triangle":
        draw.polygon([((x0 + right) / 2, y0), (right, bottom), (x0, bottom)], fill=255)
    elif shape == "cross":
        arm = (x1 - x0) / 3
        draw.rectangle((x0, y0 + arm, right, bottom - arm), fill=255)
        draw.rectangle((x0 + arm, y0, right - arm, bottom), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    return np.asarray(layer) > 0


# Hard negatives for contrastive training (examples/train_shapes_clip.py and
# examples/train_clutter_clip.py): texts that are almost, but not, true of a scene.


def swap_colours(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """Rotate colours one object along (``red circle, blue square`` -> ``blue
    circle, red square``); ``None`` when that changes no object."""
    if len(pairs) < 2:
        return None
    colours = [color for color, _ in pairs]
    rotated = [(colours[i - 1], shape) for i, (_, shape) in enumerate(pairs)]
    return rotated if set(rotated) != set(pairs) else None


def recolour(pair: tuple[str, str], rng: np.random.Generator) -> tuple[str, str]:
    others = [color for color in COLORS if color != pair[0]]
    return (others[int(rng.integers(len(others)))], pair[1])


def reshape_one(
    pairs: Sequence[tuple[str, str]], rng: np.random.Generator
) -> list[tuple[str, str]]:
    """The caption with one object's shape replaced by a shape it does not have
    (``red circle, blue square`` -> ``red circle, blue cross``); when the scene already
    holds that colour in every shape, the object's colour is changed instead."""
    index = int(rng.integers(len(pairs)))
    color, shape = pairs[index]
    others = [other for other in SHAPES if other != shape and (color, other) not in set(pairs)]
    changed = list(pairs)
    if others:
        changed[index] = (color, others[int(rng.integers(len(others)))])
    else:
        colours = [other for other in COLORS if (other, shape) not in set(pairs)]
        changed[index] = (colours[int(rng.integers(len(colours)))], shape)
    return changed


def misbound_phrase(pairs: Sequence[tuple[str, str]], rng: np.random.Generator) -> tuple[str, str]:
    """A one-object phrase using a colour and a shape of the scene that do not
    belong together, or another colour for a lone object."""
    candidates = [
        (color, shape)
        for color, _ in pairs
        for _, shape in pairs
        if (color, shape) not in set(pairs)
    ]
    if candidates:
        return candidates[int(rng.integers(len(candidates)))]
    return recolour(pairs[int(rng.integers(len(pairs)))], rng)
