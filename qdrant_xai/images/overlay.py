"""Drawing a heatmap over an image.

A perceptually uniform colormap (matplotlib's ``inferno``), upsampled smoothly (bicubic)
onto the region of the image the model saw (its crop box); the rest of the image is dimmed,
because the model never saw it. Only evidence for the match is coloured.

:func:`heatmap_layer` draws the colours alone, as a transparent layer that a page stretches
over the crop box of a small picture of the image (the reports and the web UI): the photo is
sent once and each map costs a few kilobytes.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

__all__ = ["heatmap_layer", "overlay_heatmap"]


def overlay_heatmap(
    image: Image.Image,
    heatmap: np.ndarray,
    crop_box: tuple[int, int, int, int] | None = None,
    *,
    alpha: float = 0.55,
    colormap: str = "inferno",
) -> Image.Image:
    """Draws ``heatmap`` ([gh, gw]) over ``crop_box`` of ``image`` (default: all of it).

    Values are divided by the heatmap's maximum, and patches that lowered the score are
    drawn as zero (only evidence for the match is coloured); the area outside the crop box
    is dimmed because the model never saw it.
    """
    from matplotlib import colormaps

    base = image.convert("RGB")
    x0, y0, x1, y1 = crop_box or (0, 0, base.width, base.height)
    if not (0 <= x0 < x1 <= base.width and 0 <= y0 < y1 <= base.height):
        raise ValueError(
            f"crop box {(x0, y0, x1, y1)} does not fit inside the {base.width}x{base.height} "
            "image; pass the box of this image (ClipEncoder.crop_box(width, height))"
        )
    width, height = x1 - x0, y1 - y0
    values = np.asarray(heatmap, dtype=np.float32)
    peak = float(values.max())
    scaled = np.clip(values, 0.0, None) / peak if peak > 0 else np.zeros_like(values)
    smooth = Image.fromarray(scaled, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    levels = np.clip(np.asarray(smooth), 0.0, 1.0)
    colours = (colormaps[colormap](levels)[..., :3] * 255.0).astype(np.float32)
    pixels = np.asarray(base, dtype=np.float32) * 0.45  # dim everything, then redraw the box
    region = np.asarray(base.crop((x0, y0, x1, y1)), dtype=np.float32)
    pixels[y0 : y0 + height, x0 : x0 + width] = (1 - alpha) * region + alpha * colours
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


#: the opacity of a layer's coldest pixels, as a fraction of its hottest pixels' opacity
LAYER_FLOOR = 0.4


def heatmap_layer(
    heatmap: np.ndarray,
    size: tuple[int, int],
    *,
    scale: float | None = None,
    alpha: float = 0.55,
    colormap: str = "inferno",
    levels: int = 256,
) -> Image.Image:
    """``heatmap`` ([gh, gw]) as a transparent layer of ``size`` (width, height): the colours
    of :func:`overlay_heatmap` without the photo, to be drawn over the crop box.

    Each pixel's level is ``max(value, 0) / scale`` (``scale``: the heatmap's maximum by
    default; pass a larger common scale to draw several maps alike, so that a weak map
    looks weak), upsampled bicubically. Its colour is the colormap at that level, its
    opacity ``alpha * (LAYER_FLOOR + (1 - LAYER_FLOOR) * level)``: the hottest pixels are
    blended as :func:`overlay_heatmap` blends them, the coldest ones only darken the photo a
    little, so the picture beneath stays readable where the map is dark. A map with no
    positive value (or a scale of 0) gives a layer of the coldest colour at the floor
    opacity. ``levels`` (2..256) steps of the colormap are used: fewer compress better.

    Returns:
        a palette image (mode ``"P"``), each level with its colour and opacity (PNG
        keeps both, at a fraction of the bytes of RGBA); ``.convert("RGBA")`` for RGBA.
    """
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"a layer needs a positive size, not {size}")
    values = np.asarray(heatmap, dtype=np.float32)
    peak = float(values.max()) if scale is None else float(scale)
    scaled = np.clip(values, 0.0, None) / peak if peak > 0 else np.zeros_like(values)
    smooth = Image.fromarray(scaled, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    if not 2 <= levels <= 256:
        raise ValueError(f"levels must be 2..256, not {levels}")
    index = np.round(np.clip(np.asarray(smooth), 0.0, 1.0) * (levels - 1)).astype(np.uint8)
    layer = Image.fromarray(index, mode="L").convert("P")
    colours, opacity = _palette(colormap, alpha, levels)
    layer.putpalette(colours)
    layer.info["transparency"] = opacity
    return layer


@functools.lru_cache(maxsize=16)
def _palette(colormap: str, alpha: float, levels: int) -> tuple[bytes, bytes]:
    """The RGB palette and the opacities of the levels of a layer."""
    from matplotlib import colormaps

    ramp = np.linspace(0.0, 1.0, levels)
    rgb = np.round(colormaps[colormap](ramp)[:, :3] * 255.0).astype(np.uint8)
    opacity = np.round(255.0 * alpha * (LAYER_FLOOR + (1.0 - LAYER_FLOOR) * ramp))
    return rgb.tobytes(), np.clip(opacity, 0, 255).astype(np.uint8).tobytes()
