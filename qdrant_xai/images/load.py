"""Reading images safely: odd modes, corrupt files, decompression bombs, extreme shapes.

Image bytes come from folders users point at and from payloads other tools wrote, so every
failure becomes an :class:`~qdrant_xai.ImageLoadError` naming the source and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from qdrant_xai.errors import ImageLoadError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageLimits",
    "LoadedImage",
    "iter_image_files",
    "load_image",
    "load_in_passes",
    "to_rgb",
    "unsupported_reason",
]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
    | {".ico", ".avif", ".heic", ".heif"}
)
"""Suffixes of the image files a folder is indexed from (case-insensitive). AVIF needs a
Pillow built with it (the wheels since 11.3), HEIC/HEIF the ``pillow-heif`` plugin; without
them those files are listed as skipped with what to install (:func:`unsupported_reason`)."""

_CONVERT = "convert it to PNG or JPEG to index it"
_RAW = f"a camera RAW file, which Pillow cannot decode; {_CONVERT} (e.g. with darktable or rawpy)"
_NEVER_READ = {
    ".svg": f"an SVG vector drawing, which has no pixels until rendered; {_CONVERT} "
    "(e.g. rsvg-convert -o out.png in.svg)",
    ".svgz": f"a compressed SVG vector drawing, which has no pixels until rendered; {_CONVERT}",
    ".jxl": f"a JPEG XL image, which Pillow does not read; {_CONVERT}",
    **dict.fromkeys((".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2"), _RAW),
}

T = TypeVar("T")


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what is decoded.

    Attributes:
        max_pixels: images with more pixels are refused before decoding (bomb guard).
        max_bytes: files larger than this are refused before reading.
        max_aspect_ratio: long side / short side above this is refused; CLIP would see a
            sliver of the image after its centre crop, and resizing it costs memory.
        min_side: images with a side shorter than this are refused.
        max_batch_pixels: pixels held decoded at once by one batch (indexing); a batch
            whose images add up to more is encoded in several passes, so memory is bounded
            per batch and not only per image.
    """

    max_pixels: int = 64_000_000
    max_bytes: int = 100 * 1024 * 1024
    max_aspect_ratio: float = 20.0
    min_side: int = 2
    max_batch_pixels: int = 64_000_000


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image and where it came from.

    Attributes:
        image: the RGB image, EXIF orientation applied.
        source: the path or URL it was read from.
        width, height: size of ``image`` in pixels.
        frames: pages or frames in the file (a multi-page TIFF, an animated GIF, WebP or
            PNG); only the first is decoded, and the indexer notes it.
    """

    image: Image.Image
    source: str
    width: int
    height: int
    frames: int = 1


def to_rgb(image: Image.Image, *, max_value: float | None = None) -> Image.Image:
    """Converts any Pillow mode (CMYK, P, LA, RGBA, I;16, I, F, 1, …) to 8-bit RGB.

    Transparency is composited on white. Deep grey images keep their brightness: a value
    is scaled by the largest its bit depth allows, so a dim 16-bit photo stays dim rather
    than being stretched to full contrast.

    Args:
        image: any Pillow image.
        max_value: the value that maps to white for integer grey modes (``I``, ``I;16``).
            Default: 65,535 (16 bits; what ``I;16`` holds, and what Pillow widens 9- to
            16-bit PGMs to); :func:`load_image` passes the range a TIFF declares
            (BitsPerSample, SampleFormat), e.g. 2**31 - 1 for signed 32-bit samples.
            Negative values become black, values over it white.

    Float (``F``) images whose finite values all lie in [0, 1] are read as intensities
    (1.0 is white); any other float range (depth maps, scientific data) has no declared
    white, so it is stretched from its minimum to its maximum. NaN and infinities become
    black.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _grey_to_rgb(image, max_value)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_rgb(image: Image.Image, max_value: float | None) -> Image.Image:
    with np.errstate(all="ignore"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            finite = array[np.isfinite(array)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            if lo >= 0.0 and hi <= 1.0:
                lo, hi = 0.0, 1.0  # intensities: 1.0 is white
        else:
            lo, hi = 0.0, float(max_value or 65535)
        scaled = np.zeros_like(array) if hi <= lo else (array - lo) / (hi - lo) * 255.0
        clean = np.clip(np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0), 0, 255)
    return Image.fromarray(np.rint(clean).astype(np.uint8), mode="L").convert("RGB")


def _declared_max(image: Image.Image) -> float | None:
    """The largest value a TIFF's integer samples can hold (BitsPerSample, SampleFormat),
    or None when the file does not say (then 16 bits is assumed)."""
    tags = getattr(image, "tag_v2", None)
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N") or tags is None:
        return None
    try:
        bits, sample_format = tags.get(258), tags.get(339)
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        signed = int(sample_format[0] if isinstance(sample_format, tuple) else sample_format or 1)
    except (TypeError, ValueError, IndexError):
        return None
    if not 1 <= bits <= 32:
        return None
    return float(2 ** (bits - 1) - 1 if signed == 2 else 2**bits - 1)


def unsupported_reason(path: str | os.PathLike[str]) -> str | None:
    """Why a file with this suffix is not indexed and what to do, or None when it is read
    (or is no image file at all). AVIF and HEIC/HEIF depend on what is installed."""
    suffix = Path(path).suffix.lower()
    if suffix in _NEVER_READ:
        return f"unsupported format: {_NEVER_READ[suffix]}"
    if suffix == ".avif" and not _pillow_reads_avif():
        return (
            "unsupported format: this Pillow has no AVIF support; upgrade Pillow (11.3 or "
            f"later reads AVIF: pip install -U pillow), or {_CONVERT}"
        )
    if suffix in (".heic", ".heif") and not _heif_plugin():
        return (
            "unsupported format: HEIC/HEIF needs the pillow-heif plugin; install it "
            f"(pip install 'qdrant-xai[heif]' or pip install pillow-heif), or {_CONVERT}"
        )
    return None


@functools.cache
def _pillow_reads_avif() -> bool:
    from PIL import features

    try:
        return bool(features.check_module("avif"))
    except (ValueError, ImportError):  # a Pillow too old to know the module
        return False


@functools.cache
def _heif_plugin() -> bool:
    """Whether pillow-heif is installed (its opener is registered on the first decode)."""
    return importlib.util.find_spec("pillow_heif") is not None


@functools.cache
def _register_plugins() -> None:
    if _heif_plugin():
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
        except Exception:  # a broken plugin only means no HEIC: each file says it cannot be read
            pass


def load_in_passes(
    items: Iterable[T], load: Callable[[T], LoadedImage | None], *, max_pixels: int
) -> Iterator[list[tuple[T, LoadedImage]]]:
    """Decodes ``items`` one by one and yields them in passes whose decoded pixels add up
    to at most ``max_pixels`` (:attr:`ImageLimits.max_batch_pixels`), so the memory a batch
    holds decoded is bounded by the budget, not by the batch size. An image over the budget
    on its own is a pass of one. ``load`` returns None for an item it could not decode (and
    reports it itself). Used by the indexer and the backfill alike."""
    passes: list[tuple[T, LoadedImage]] = []
    pixels = 0
    for item in items:
        image = load(item)
        if image is None:
            continue
        size = image.width * image.height
        if passes and pixels + size > max_pixels:
            yield passes
            passes, pixels = [], 0
        passes.append((item, image))
        pixels += size
    if passes:
        yield passes


def file_digest(path: str | os.PathLike[str], limits: ImageLimits | None = None) -> str | None:
    """A hash of a file's bytes (what decides whether an indexed image changed: its
    content, not its path or size), or None when it cannot be read (not a regular file,
    over ``limits.max_bytes``, ...: then loading it reports why). Read as
    :func:`load_image` reads, so a FIFO or a device never blocks or streams."""
    try:
        data = _read_file(Path(path), str(path), limits or ImageLimits())
    except ImageLoadError:
        return None
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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
    return _decode(io.BytesIO(_read_file(path, label, limits)), label, limits)


def _read_at_most(handle: BinaryIO, size: int, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of a file of ``size`` bytes (as stat'ed): ``read(n)``
    allocates n bytes up front, so read the stat'ed size first, the rest only if it grew."""
    data = handle.read(min(size, limit) + 1)
    if len(data) > size:  # it grew since the stat: read on, up to the limit
        data += handle.read(max(0, limit + 1 - len(data)))
    return data


def _read_file(path: Path, label: str, limits: ImageLimits) -> bytes:
    """The bytes of a regular file; anything else is refused before a byte is read.

    The file is opened without blocking and checked on the open descriptor, so a FIFO, a
    device or a directory named like an image is refused instead of hanging the run or
    reading forever, and a file swapped after a check cannot slip through.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageLoadError(label, f"cannot read the file ({exc.strerror or exc})") from exc
    try:
        info = os.fstat(fd)
        _check_file(info, label, limits)
        with open(fd, "rb", closefd=False) as handle:
            data = _read_at_most(handle, info.st_size, limits.max_bytes)
    except OSError as exc:
        raise ImageLoadError(label, f"cannot read the file ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    if len(data) > limits.max_bytes:  # it grew after the check
        raise ImageLoadError(label, f"file is over the {limits.max_bytes}-byte limit")
    return data


_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_file(info: os.stat_result, label: str, limits: ImageLimits) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_TYPES if test(info.st_mode)), "a special file")
        raise ImageLoadError(
            label, f"cannot read the file: it is {kind}, not a regular file; only files are read"
        )
    if info.st_size == 0:
        raise ImageLoadError(label, "the file is empty (0 bytes), not an image Pillow can read")
    if info.st_size > limits.max_bytes:
        raise ImageLoadError(
            label,
            f"file is {info.st_size} bytes, over the {limits.max_bytes}-byte limit; "
            "downscale it or raise ImageLimits.max_bytes",
        )


def _decode(stream: io.BytesIO, label: str, limits: ImageLimits) -> LoadedImage:
    _register_plugins()
    try:
        with warnings.catch_warnings():
            # Pillow's remarks on damaged metadata (corrupt EXIF, oversized tags) are not
            # errors: the pixels decode or the decoder raises. It warns, then raises, on
            # oversized images; refuse at the warning already.
            warnings.simplefilter("ignore")
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
                if opened.format == "PNG":
                    _verify_png(stream)
                opened.load()
                rgb = to_rgb(_upright(opened), max_value=_declared_max(opened))
                rgb.load()
                frames = _frames(opened)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(label, f"refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(label, "not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageLoadError(label, f"corrupt or truncated image ({exc})") from exc
    return _checked(rgb, label, limits, frames)


def _frames(opened: Image.Image) -> int:
    """How many pages or frames the file holds (1 when it cannot tell: the first one is
    decoded already). An MPO's further images are previews and depth maps of the photo, not
    pages, so a phone's JPEG counts as one."""
    if opened.format == "MPO":
        return 1
    try:
        return max(1, int(getattr(opened, "n_frames", 1)))
    except Exception:  # damaged later frames (plugins raise anything): the first one is good
        return 1


def _verify_png(stream: io.BytesIO) -> None:
    """Checks every chunk's CRC: Pillow's decoder skips the image data's checksums, so a
    damaged PNG would otherwise be indexed with whatever its damaged bytes inflate to."""
    with Image.open(io.BytesIO(stream.getvalue())) as probe:
        probe.verify()  # SyntaxError "broken PNG file (bad header checksum ...)"


# EXIF orientation -> the transpose that displays the image upright (as ImageOps does).
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image) -> Image.Image:
    """A copy of ``image`` with its EXIF orientation applied.

    Unreadable EXIF is ignored (the pixels are still good): Pillow's own
    ``ImageOps.exif_transpose`` re-serialises the EXIF and raises ``struct.error`` and
    friends on damaged tags.
    """
    try:
        orientation = image.getexif().get(0x0112)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError, struct.error):
        orientation = None
    method = _ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image.copy()


def _checked(image: Image.Image, label: str, limits: ImageLimits, frames: int = 1) -> LoadedImage:
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
    return LoadedImage(image=image, source=label, width=width, height=height, frames=frames)


def iter_image_files(
    directory: str | os.PathLike[str],
    *,
    on_error: Callable[[OSError], None] | None = None,
    on_unsupported: Callable[[Path, str], None] | None = None,
) -> Iterator[Path]:
    """Every file with an image suffix under ``directory``, recursively, in sorted order.

    Sorted order makes runs reproducible and lets an interrupted run resume in place.
    Symlinked folders are not followed. A folder that cannot be listed (permissions) is
    passed to ``on_error`` as the ``OSError`` naming it, and skipped. An image file of a
    format that is not read (SVG, camera RAW, HEIC without its plugin, ...) is passed to
    ``on_unsupported`` with the reason and what to do (:func:`unsupported_reason`).
    """
    root = Path(directory)
    if not root.is_dir():
        raise ImageLoadError(str(root), "not a directory")
    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath, filename)
            reason = unsupported_reason(path)
            if reason is not None:
                if on_unsupported is not None:
                    on_unsupported(path, reason)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                yield path
