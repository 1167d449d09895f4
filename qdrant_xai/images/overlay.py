"""Drawing a heatmap over an image.

A perceptually uniform colormap (matplotlib's ``inferno``), upsampled smoothly (bicubic)
onto the region of the image the model saw (its crop box); the rest of the image is dimmed,
because the model never saw it. Only evidence for the match is coloured.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["overlay_heatmap"]


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
