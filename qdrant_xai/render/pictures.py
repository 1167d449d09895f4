"""One hit as pictures at display size: the image once, the heatmap and grounding as layers.

A page (an HTML report, the web UI) shows a hit as a small picture of its image with
transparent colour layers stretched over the model's crop box, instead of full-resolution
PNGs with the colours drawn in: the photo is sent once (JPEG, a few tens of kilobytes
whatever the file's size) and each map costs a few kilobytes more.

Grounding maps of one hit share one scale (the largest magnitude among its word maps), so a
word the image barely shows looks faint beside the word it shows well; a map whose peak is
below :data:`NEAR_ZERO` of that scale is *near zero* and gets no layer (drawn at full
contrast, such a map is noise that looks like an answer).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from qdrant_xai.errors import ImageLoadError
from qdrant_xai.images.overlay import heatmap_layer

if TYPE_CHECKING:
    from qdrant_xai.explain.results import Explanation

__all__ = [
    "NEAR_ZERO",
    "GroundingLayer",
    "HitPicture",
    "hit_picture",
    "image_data_uri",
    "png_data_uri",
]

#: a grounding map whose peak is below this fraction of the hit's common scale is near zero.
#: Measured on the shapes world (bundled model, 60 held-out scenes, the top 20 hits of each
#: "a <colour> <shape>" query, grounding "combined"): of 543 grounded words that name
#: something in the hit's image, 5.0 % peak below 0.15; of 257 that name nothing in it,
#: 44 % do (0.10 would hide 3.7 % and 32 %; 0.25, 11.6 % and 55 %).
NEAR_ZERO = 0.15
#: the longest side of a heatmap layer and of a grounding layer, in pixels, and their levels
#: of colour: pages stretch them smoothly; a layer weighs 2-8 kB
HEATMAP_LAYER, HEATMAP_LEVELS = 128, 128
GROUNDING_LAYER, GROUNDING_LEVELS = 64, 64
#: JPEG quality of the pictures of images
JPEG_QUALITY = 80


@dataclass(frozen=True)
class GroundingLayer:
    """Where one word is found, as a layer over the crop box of a :class:`HitPicture`.

    Attributes:
        word: the word as it appears in the text.
        layer: a transparent PNG data URI on the hit's common scale, ``None`` when the map
            is near zero.
        strength: the map's peak on the common scale, 0..1.
        near_zero: whether the peak is below :data:`NEAR_ZERO` (no layer is drawn).
    """

    word: str
    layer: str | None
    strength: float
    near_zero: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "word": self.word,
            "layer": self.layer,
            "strength": self.strength,
            "near_zero": self.near_zero,
        }


@dataclass(frozen=True)
class HitPicture:
    """A hit's image at display size with its heatmap and grounding as separate layers.

    Draw ``image`` at ``width`` x ``height``; stretch ``heatmap`` (and a grounding word's
    ``layer``) over the ``crop`` box; dim the rest of the image, which the model never saw.

    Attributes:
        image: data URI of the image itself (no heat drawn in, not letterboxed), its longest
            side ``size`` pixels (never upscaled); JPEG, or PNG/WebP when it has
            transparency.
        width, height: the pixel size of ``image``.
        crop: the model's crop box as fractions ``(left, top, right, bottom)`` of the image;
            ``None``: the whole image.
        heatmap: data URI of a transparent PNG colour layer (no photo pixels in it) for the
            crop box, ``None`` when the explanation has no heatmap.
        grounding: one layer per grounded word, in reading order, on one common scale.
    """

    image: str
    width: int
    height: int
    crop: tuple[float, float, float, float] | None
    heatmap: str | None
    grounding: tuple[GroundingLayer, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plain types only)."""
        return {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "crop": None if self.crop is None else list(self.crop),
            "heatmap": self.heatmap,
            "grounding": [g.to_dict() for g in self.grounding],
        }


@dataclass(frozen=True)
class Thumbnail:
    """An image shrunk for display, with the size of the image it came from."""

    image: Image.Image
    original_size: tuple[int, int]
    uri: str


def thumbnail(image: Image.Image, size: int) -> Thumbnail:
    """``image`` shrunk so that its longest side is at most ``size`` (never enlarged), and its
    data URI (:func:`image_data_uri`)."""
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    small = _shrunk(image, size)
    return Thumbnail(small, image.size, image_data_uri(small))


def _shrunk(image: Image.Image, size: int) -> Image.Image:
    if max(image.size) <= size:
        return image
    scale = size / max(image.size)
    dims = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: a box reduction by an integer factor first, Lanczos on the rest: a
    # 12 MP photo costs tens of milliseconds, not a full-size Lanczos pass
    return image.resize(dims, Image.Resampling.LANCZOS, reducing_gap=2.0)


def hit_picture(
    explanation: Explanation, image: Image.Image | None = None, *, size: int = 256
) -> HitPicture:
    """The picture of one explained hit: its image at display size, the heatmap and each
    grounded word as layers over the model's crop box.

    Args:
        explanation: the hit's explanation.
        image: the image the heatmap covers; by default read as
            :meth:`~qdrant_xai.explain.results.Explanation.original_image` reads it (for a
            query-side heatmap of an image query, pass the query image).
        size: the picture's longest side in pixels (smaller images keep their size).

    Raises:
        ImageLoadError: no image can be read, or it is smaller than the crop box recorded
            when the hit was indexed (the file changed since).
        SourceNotAllowedError: the image source is outside the explainer's policy.
    """
    if image is None:
        image = explanation.original_image()
    return picture_of(explanation, thumbnail(image, size))


def picture_of(explanation: Explanation, shown: Thumbnail) -> HitPicture:
    """:func:`hit_picture` from an image already shrunk (a report shrinks a query image
    once for all of its hits)."""
    width, height = shown.original_size
    box = explanation.crop_box
    if box is not None and not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
        raise ImageLoadError(
            explanation.image_source or f"the image of hit {explanation.id}",
            f"is {width}x{height}, smaller than the crop box {box} recorded when the hit was "
            "indexed: the file changed since; re-index or backfill it",
        )
    crop = None if box is None else _fractions(box, width, height)
    small = shown.image
    left, top, right, bottom = crop or (0.0, 0.0, 1.0, 1.0)
    crop_size = ((right - left) * small.width, (bottom - top) * small.height)
    heatmap = None
    if explanation.heatmap is not None:
        layer = heatmap_layer(
            explanation.heatmap, _layer_size(*crop_size, HEATMAP_LAYER), levels=HEATMAP_LEVELS
        )
        heatmap = _png_uri(layer)
    return HitPicture(
        image=shown.uri,
        width=small.width,
        height=small.height,
        crop=crop,
        heatmap=heatmap,
        grounding=grounding_layers(explanation, _layer_size(*crop_size, GROUNDING_LAYER)),
    )


def grounding_layers(
    explanation: Explanation, layer_size: tuple[int, int]
) -> tuple[GroundingLayer, ...]:
    """One :class:`GroundingLayer` per grounded word, all divided by the largest magnitude
    among the hit's word maps; ``()`` when the explanation has no grounding."""
    grounding = explanation.grounding
    if grounding is None or not grounding.words:
        return ()
    maps = np.asarray(grounding.maps, dtype=np.float32)
    common = float(np.abs(maps).max()) if maps.size else 0.0
    layers = []
    for word, values in zip(grounding.words, maps, strict=True):
        strength = max(0.0, float(values.max())) / common if common > 0 else 0.0
        near_zero = strength < NEAR_ZERO
        layer = None
        if not near_zero:
            drawn = heatmap_layer(values, layer_size, scale=common, levels=GROUNDING_LEVELS)
            layer = _png_uri(drawn)
        layers.append(GroundingLayer(word.text, layer, round(strength, 4), near_zero))
    return tuple(layers)


def _fractions(
    box: tuple[int, int, int, int], width: int, height: int
) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (
        round(x0 / width, 6),
        round(y0 / height, 6),
        round(x1 / width, 6),
        round(y1 / height, 6),
    )


def _layer_size(width: float, height: float, longest: int) -> tuple[int, int]:
    """The crop box's displayed size, at most ``longest`` on its longest side."""
    scale = min(1.0, longest / max(width, height, 1.0))
    return max(8, round(width * scale)), max(8, round(height * scale))


def image_data_uri(image: Image.Image, *, max_side: int | None = None) -> str:
    """A data URI of ``image`` for a page: JPEG (quality :data:`JPEG_QUALITY`), or WebP (PNG
    when this Pillow has no WebP) when the image has transparency.

    Args:
        image: the image; it is not changed.
        max_side: shrink it first (aspect kept) so that no side is longer.
    """
    if max_side is not None:
        image = _shrunk(image, max_side)
    buffer = io.BytesIO()
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        if _webp():
            rgba.save(buffer, format="WEBP", quality=JPEG_QUALITY)
            return "data:image/webp;base64," + _b64(buffer)
        rgba.save(buffer, format="PNG", optimize=True)
        return "data:image/png;base64," + _b64(buffer)
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + _b64(buffer)


def png_data_uri(image: Image.Image, max_side: int | None = None) -> str:
    """``data:image/png;base64,...`` for embedding an image in HTML or chat messages.

    Args:
        image: the image; it is not changed.
        max_side: shrink the image (aspect kept, Lanczos) so that no side is longer.
    """
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + _b64(buffer)


def _png_uri(layer: Image.Image) -> str:
    buffer = io.BytesIO()
    layer.save(buffer, format="PNG")
    return "data:image/png;base64," + _b64(buffer)


def _has_transparency(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA"):
        return bool(image.getextrema()[-1][0] < 255)  # type: ignore[index]
    return image.mode == "P" and "transparency" in image.info


def _webp() -> bool:
    from PIL import features

    return bool(features.check("webp"))


def _b64(buffer: io.BytesIO) -> str:
    return base64.b64encode(buffer.getvalue()).decode("ascii")
