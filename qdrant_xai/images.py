"""Reading images safely: odd modes, corrupt files, decompression bombs, extreme shapes.

Image bytes come from folders users point at and from payloads other tools wrote, so every
failure becomes an :class:`~qdrant_xai.ImageLoadError` naming the source and the fix.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from qdrant_xai._exceptions import ImageLoadError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageLimits",
    "LoadedImage",
    "iter_image_files",
    "load_image",
    "to_rgb",
]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what is decoded.

    Attributes:
        max_pixels: images with more pixels are refused before decoding (bomb guard).
        max_bytes: files larger than this are refused before reading.
        max_aspect_ratio: long side / short side above this is refused; CLIP would see a
            sliver of the image after its centre crop, and resizing it costs memory.
        min_side: images with a side shorter than this are refused.
    """

    max_pixels: int = 64_000_000
    max_bytes: int = 100 * 1024 * 1024
    max_aspect_ratio: float = 20.0
    min_side: int = 2


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image and where it came from.

    Attributes:
        image: the RGB image, EXIF orientation applied.
        source: the path or URL it was read from.
        width, height: size of ``image`` in pixels.
    """

    image: Image.Image
    source: str
    width: int
    height: int


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode (CMYK, P, LA, RGBA, I;16, F, 1, …) to 8-bit RGB.

    Transparency is composited on white; 16-bit and float images are rescaled to their
    own range rather than clipped (a 16-bit PNG would otherwise be mostly white).
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = np.zeros_like(array) if hi <= lo else (array - lo) / (hi - lo) * 255.0
        return Image.fromarray(np.nan_to_num(scaled).astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(
    source: str | os.PathLike[str] | bytes | Image.Image,
    *,
    limits: ImageLimits | None = None,
    name: str | None = None,
) -> LoadedImage:
    """Decodes an image fully and checks it against ``limits``.

    Args:
        source: a local path, raw encoded bytes, or an already opened Pillow image.
        limits: size bounds; the defaults refuse decompression bombs and slivers.
        name: how to call the source in messages and in ``LoadedImage.source``.

    Raises:
        ImageLoadError: the file is missing, unreadable, truncated, not an image, a
            decompression bomb, or has a degenerate shape.
    """
    limits = limits or ImageLimits()
    if isinstance(source, Image.Image):
        label = name or "<image>"
        return _checked(to_rgb(source), label, limits)
    if isinstance(source, bytes):
        label = name or "<bytes>"
        if len(source) > limits.max_bytes:
            raise ImageLoadError(label, f"{len(source)} bytes exceeds the {limits.max_bytes} limit")
        return _decode(io.BytesIO(source), label, limits)
    path = Path(source)
    label = name or str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageLoadError(label, f"cannot read the file ({exc.strerror or exc})") from exc
    if size > limits.max_bytes:
        raise ImageLoadError(
            label,
            f"file is {size} bytes, over the {limits.max_bytes}-byte limit; "
            "downscale it or raise ImageLimits.max_bytes",
        )
    try:
        with path.open("rb") as handle:
            return _decode(io.BytesIO(handle.read()), label, limits)
    except OSError as exc:
        raise ImageLoadError(label, f"cannot read the file ({exc})") from exc


def _decode(stream: io.BytesIO, label: str, limits: ImageLimits) -> LoadedImage:
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, on oversized images; refuse at the warning already.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as opened:
                width, height = opened.size
                if width * height > limits.max_pixels:
                    raise ImageLoadError(
                        label,
                        f"{width}x{height} pixels exceeds the limit of "
                        f"{limits.max_pixels} (possible decompression bomb); raise "
                        "ImageLimits.max_pixels if the image is trusted",
                    )
                opened.load()
                image = ImageOps.exif_transpose(opened) or opened
                rgb = to_rgb(image)
                rgb.load()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(label, f"refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(label, "not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(label, f"corrupt or truncated image ({exc})") from exc
    return _checked(rgb, label, limits)


def _checked(image: Image.Image, label: str, limits: ImageLimits) -> LoadedImage:
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if short < limits.min_side:
        raise ImageLoadError(
            label, f"{width}x{height} is too small (a side under {limits.min_side} px)"
        )
    if long / short > limits.max_aspect_ratio:
        raise ImageLoadError(
            label,
            f"aspect ratio {long / short:.0f}:1 exceeds {limits.max_aspect_ratio:.0f}:1; "
            "CLIP's centre crop would keep only a sliver. Crop or tile the image first, or "
            "raise ImageLimits.max_aspect_ratio",
        )
    if width * height > limits.max_pixels:
        raise ImageLoadError(label, f"{width}x{height} pixels exceeds the limit")
    return LoadedImage(image=image, source=label, width=width, height=height)


def iter_image_files(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Every file with an image suffix under ``directory``, recursively, in sorted order.

    Sorted order makes runs reproducible and lets an interrupted run resume in place.
    Symlinked folders are not followed.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ImageLoadError(str(root), "not a directory")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath, filename)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield path
