"""A harder evaluation world: crowded, touching and overlapping shapes on textured clutter.

The plain shapes world (:mod:`qdrant_xai.demo.world`) keeps objects apart on a smooth
background, with every colour-shape pair distinct; methods that work there can still fail
on real scenes. This world is built to be hard for explanations on purpose:

* two to five objects per scene, most of them sharing a colour or a shape with another
  (a query "a red circle" next to a red square and a blue circle: the distractors share its
  colour and its shape);
* sizes from small to large; objects may touch and overlap, later ones hiding part of
  earlier ones (each object's mask is what is left visible);
* a background texture (stripes, checks or blotches) and clutter: thin lines and dots in
  random, muted colours;
* captions that name every object, and relation captions ("a red circle left of a blue
  square").

Every colour-shape pair still occurs at most once per scene, so a phrase names exactly one
object. :func:`query_kind` says how hard a one-object query is, and :func:`word_roles`
what each caption word refers to, for word-attribution benchmarks.

Use::

    from qdrant_xai.demo.clutter import generate_clutter_scenes, query_kind

    for scene in generate_clutter_scenes(4, seed=7):
        for obj in scene.objects:
            print(obj.phrase, query_kind(scene, obj), obj.mask.sum())
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from qdrant_xai.demo.world import COLORS, SHAPES, SceneObject, _draw_shape

__all__ = [
    "CLUTTER_WORDS",
    "QUERY_KINDS",
    "RELATIONS",
    "ClutterScene",
    "Relation",
    "generate_clutter_scenes",
    "query_kind",
    "relation_between",
    "relation_caption",
    "word_roles",
]

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
"""The spatial relations a relation caption can use."""

CLUTTER_WORDS: tuple[str, ...] = (
    "a",
    "and",
    *COLORS,
    *SHAPES,
    *sorted({word for relation in RELATIONS for word in relation.split()}),
)
"""Every word a caption of this world can contain."""

QUERY_KINDS: tuple[str, ...] = ("easy", "shares colour", "shares shape", "shares both")
"""How hard a one-object query is (see :func:`query_kind`)."""

_OBJECT_COUNTS = (2, 3, 4, 5)
_OBJECT_COUNT_WEIGHTS = (0.2, 0.35, 0.3, 0.15)
# Object side as a fraction of the image side.
_MIN_FRACTION, _MAX_FRACTION = 0.16, 0.38
# Chance that a new object copies the colour or the shape of one already placed.
_SHARE_PROBABILITY = 0.7
# Share of an object's own pixels that must stay visible, and at least this many pixels.
_MIN_VISIBLE, _MIN_VISIBLE_PIXELS = 0.55, 60
# A relation is stated only when the centres are this far apart along its axis (fraction of
# the image side) and that axis dominates; a relation claim holds when the centres are at
# least _RELATION_TRUE apart in the claimed direction.
_RELATION_MARGIN, _RELATION_TRUE = 0.12, 0.04
_MAX_TRIES = 400


@dataclass(frozen=True)
class Relation:
    """A spatial claim about two objects of a scene, e.g. "a red circle left of a blue square".

    Attributes:
        subject: ``(colour, shape)`` of the first object named.
        relation: One of :data:`RELATIONS`.
        other: ``(colour, shape)`` of the second object.
    """

    subject: tuple[str, str]
    relation: str
    other: tuple[str, str]

    @property
    def text(self) -> str:
        """The caption, e.g. ``"a red circle left of a blue square"``."""
        return f"a {' '.join(self.subject)} {self.relation} a {' '.join(self.other)}"

    def holds_in(self, scene: ClutterScene) -> bool:
        """Whether the scene holds both objects, placed as the relation says."""
        found = {(obj.color, obj.shape): obj for obj in scene.objects}
        if self.subject not in found or self.other not in found:
            return False
        (sx, sy), (ox, oy) = _centre(found[self.subject]), _centre(found[self.other])
        need = _RELATION_TRUE * scene.image.width
        return {
            "left of": sx + need <= ox,
            "right of": sx >= ox + need,
            "above": sy + need <= oy,
            "below": sy >= oy + need,
        }[self.relation]


@dataclass(frozen=True)
class ClutterScene:
    """A rendered clutter scene with its caption and ground-truth objects.

    Attributes:
        image: The RGB image, ``size x size`` pixels.
        caption: Names every object, in random order, e.g.
            ``"a red circle, a red square and a blue circle"``.
        objects: The objects in the order the caption names them; each ``mask`` holds the
            object's visible pixels only.
        depth: For each object (same order), its drawing order: higher is in front.
    """

    image: Image.Image = field(compare=False, repr=False)
    caption: str
    objects: tuple[SceneObject, ...]
    depth: tuple[int, ...]


def generate_clutter_scenes(n: int, *, seed: int = 0, size: int = 128) -> Iterator[ClutterScene]:
    """Yield ``n`` random clutter scenes, deterministically for a given ``seed``.

    Scene ``i`` depends only on ``(seed, i)``, like :func:`qdrant_xai.demo.world.generate_scenes`;
    the two worlds draw from differently keyed streams, so equal seeds give unrelated scenes.

    Args:
        n: Number of scenes.
        seed: Seed of the random world.
        size: Side of the square images in pixels (at least 64).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    for index in range(n):
        yield _render(np.random.default_rng([seed, index, 0xC1]), size)


def query_kind(scene: ClutterScene, target: SceneObject) -> str:
    """How hard the query naming ``target`` is in ``scene``: one of :data:`QUERY_KINDS`.

    "easy": no other object shares its colour or its shape; "shares colour" / "shares
    shape": another object has its colour (resp. shape); "shares both": one other object
    has its colour and another its shape.
    """
    others = [obj for obj in scene.objects if obj is not target]
    colour = any(obj.color == target.color for obj in others)
    shape = any(obj.shape == target.shape for obj in others)
    if colour and shape:
        return "shares both"
    if colour:
        return "shares colour"
    return "shares shape" if shape else "easy"


def relation_between(scene: ClutterScene, first: SceneObject, second: SceneObject) -> str | None:
    """The relation clearly true of ``first`` with respect to ``second``, or ``None``."""
    (fx, fy), (sx, sy) = _centre(first), _centre(second)
    dx, dy = sx - fx, sy - fy
    margin = _RELATION_MARGIN * scene.image.width
    if abs(dx) >= abs(dy) and abs(dx) >= margin:
        return "left of" if dx > 0 else "right of"
    if abs(dy) > abs(dx) and abs(dy) >= margin:
        return "above" if dy > 0 else "below"
    return None


def relation_caption(scene: ClutterScene, rng: np.random.Generator) -> Relation | None:
    """A random true relation between two objects of the scene, or ``None`` if none is clear."""
    pairs = [
        (a, b, rel)
        for a in scene.objects
        for b in scene.objects
        if a is not b and (rel := relation_between(scene, a, b)) is not None
    ]
    if not pairs:
        return None
    first, second, rel = pairs[int(rng.integers(len(pairs)))]
    return Relation((first.color, first.shape), rel, (second.color, second.shape))


def word_roles(caption: str) -> list[tuple[str, str]]:
    """Each word of a caption with its role: "colour", "shape", "relation" or "function".

    Commas are dropped; ``"a red circle, a cube"`` is split on spaces after removing them.
    """
    roles = []
    relation_words = {word for relation in RELATIONS for word in relation.split()}
    for word in caption.replace(",", " ").split():
        if word in COLORS:
            roles.append((word, "colour"))
        elif word in SHAPES:
            roles.append((word, "shape"))
        elif word in relation_words:
            roles.append((word, "relation"))
        else:
            roles.append((word, "function"))
    return roles


def _centre(obj: SceneObject) -> tuple[float, float]:
    ys, xs = np.nonzero(obj.mask)
    return float(xs.mean()), float(ys.mean())


def _pick_pairs(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    colours, shapes = list(COLORS), list(SHAPES)
    picked: list[tuple[str, str]] = []
    while len(picked) < count:
        if picked and rng.random() < _SHARE_PROBABILITY:
            base = picked[int(rng.integers(len(picked)))]
            if rng.random() < 0.5:
                pair = (base[0], shapes[int(rng.integers(len(shapes)))])
            else:
                pair = (colours[int(rng.integers(len(colours)))], base[1])
        else:
            pair = (
                colours[int(rng.integers(len(colours)))],
                shapes[int(rng.integers(len(shapes)))],
            )
        if pair not in picked:
            picked.append(pair)
    return picked


def _render(rng: np.random.Generator, size: int) -> ClutterScene:
    count = int(rng.choice(_OBJECT_COUNTS, p=_OBJECT_COUNT_WEIGHTS))
    pairs = _pick_pairs(rng, count)
    for _ in range(_MAX_TRIES):
        masks = _place(rng, size, [pair[1] for pair in pairs])
        if masks is not None:
            break
    else:  # pragma: no cover - crowded beyond hope; drop one object and try again
        return _render(rng, size)
    canvas = _textured_background(rng, size)
    _clutter(rng, canvas)
    own_masks, visible = masks
    objects = []
    for (color, shape), own, seen in zip(pairs, own_masks, visible, strict=True):
        jitter = rng.integers(-18, 19, size=3)
        rgb = np.array(COLORS[color], dtype=np.float32) + jitter
        ys, xs = np.nonzero(own)
        canvas[ys, xs] = rgb + 6.0 * rng.standard_normal((len(ys), 1), dtype=np.float32)
        ys, xs = np.nonzero(seen)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append(SceneObject(color=color, shape=shape, box=box, mask=seen))
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    order = [int(i) for i in rng.permutation(count)]
    named = tuple(objects[i] for i in order)
    phrases = [obj.phrase for obj in named]
    caption = phrases[0] if count == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return ClutterScene(image=image, caption=caption, objects=named, depth=tuple(order))


def _place(
    rng: np.random.Generator, size: int, shapes: Sequence[str]
) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """Masks for ``shapes`` drawn in order (later in front), each enough visible, or None."""
    own: list[np.ndarray] = []
    for shape in shapes:
        for _ in range(60):
            side = int(rng.integers(round(_MIN_FRACTION * size), round(_MAX_FRACTION * size) + 1))
            x0 = int(rng.integers(1, size - side))
            y0 = int(rng.integers(1, size - side))
            mask = _draw_shape(shape, (x0, y0, x0 + side, y0 + side), size)
            # the new object may cover at most 1 - _MIN_VISIBLE of each earlier one
            if all(
                _visible_share(old, [*own[i + 1 :], mask]) >= _MIN_VISIBLE
                for i, old in enumerate(own)
            ):
                own.append(mask)
                break
        else:
            return None
    visible = []
    for i, mask in enumerate(own):
        seen = mask.copy()
        for later in own[i + 1 :]:
            seen &= ~later
        if seen.sum() < _MIN_VISIBLE_PIXELS:
            return None
        visible.append(seen)
    return own, visible


def _visible_share(mask: np.ndarray, covers: Sequence[np.ndarray]) -> float:
    seen = mask.copy()
    for cover in covers:
        seen &= ~cover
    return float(seen.sum()) / max(1.0, float(mask.sum()))


def _textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A grey canvas with one texture: stripes, checks or blotches, plus pixel noise."""
    base = rng.uniform(90.0, 180.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = int(rng.integers(3))
    amplitude = rng.uniform(8.0, 22.0)
    if kind == 0:  # stripes at a random angle
        angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(5.0, 16.0)
        texture = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
    elif kind == 1:  # checks
        cell = int(rng.integers(5, 17))
        texture = ((xx // cell + yy // cell) % 2) * 2.0 - 1.0
    else:  # blotches
        coarse = rng.normal(0.0, 1.0, size=(8, 8)).astype(np.float32)
        texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    grey = base + amplitude * texture
    tint = rng.uniform(-12.0, 12.0, size=3).astype(np.float32)
    noise = 7.0 * rng.standard_normal((size, size, 3), dtype=np.float32)
    return (grey[..., None] + tint) + noise


def _clutter(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Draw thin lines and dots in muted random colours onto ``canvas`` (in place)."""
    size = canvas.shape[0]
    layer = Image.new("RGB", (size, size))
    drawn = Image.new("L", (size, size), 0)
    draw, where = ImageDraw.Draw(layer), ImageDraw.Draw(drawn)
    for _ in range(int(rng.integers(3, 11))):
        grey = rng.uniform(60, 200)
        colour = tuple(int(np.clip(grey + rng.uniform(-45, 45), 0, 255)) for _ in range(3))
        if rng.random() < 0.5:
            points = [tuple(float(v) for v in rng.uniform(0, size, 2)) for _ in range(2)]
            width = int(rng.integers(1, 3))
            draw.line(points, fill=colour, width=width)
            where.line(points, fill=255, width=width)
        else:
            cx, cy = rng.uniform(0, size, 2)
            radius = rng.uniform(1.0, 3.5)
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            draw.ellipse(box, fill=colour)
            where.ellipse(box, fill=255)
    covered = np.asarray(drawn) > 0
    canvas[covered] = np.asarray(layer, dtype=np.float32)[covered]
