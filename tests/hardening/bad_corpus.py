"""A generated corpus of broken, hostile and unusual image files, mixed with good images.

:func:`build_corpus` writes every kind into a folder and returns one :class:`Entry` per file
it wrote: what the indexer must do with it (index it, or refuse it with a reason containing
some words) and, for indexed files, the size the decoded image must have. A directory named
``dir.png`` is not a file: it is walked into, never reported, and the image inside it is
its entry (kind ``directory-named-like-image``).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "FIRST_FRAME",
    "Entry",
    "build_corpus",
    "display_name",
    "mutation_seeds",
]

SIZE = (40, 24)  # width, height of the ordinary images
ROTATED = (24, 40)  # after the EXIF rotation
FIRST_FRAME = (220, 30, 40)  # colour of the animated GIF's first frame


@dataclass(frozen=True)
class Entry:
    """One file of the corpus.

    Attributes:
        kind: what is odd about it (``"truncated-png"``, ``"16-bit-png"``, ...).
        rel: path relative to the corpus root, as bytes (non-UTF-8 names are bytes).
        refused: the indexer must skip it and report it.
        words: for refused files, alternatives of which one must appear in the reason
            (lower case); for indexed files, empty.
        size: for indexed files, ``(width, height)`` of the decoded image.
    """

    kind: str
    rel: bytes
    refused: bool
    words: tuple[str, ...] = ()
    size: tuple[int, int] | None = None


def display_name(rel: bytes) -> str:
    """How a relative path is shown in reports (undecodable bytes as ``\\xe9`` escapes)."""
    return rel.decode("utf-8", "backslashreplace")


# -- encoders ---------------------------------------------------------------------------


def _encoded(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def _noise(size: tuple[int, int] = SIZE, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _chunk(kind: bytes, data: bytes, *, crc: int | None = None) -> bytes:
    checksum = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` but whose data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def _gif_header_only(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame claim ``width x height``."""
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + descriptor + b"\x02\x02\x4c\x01\x00;"


def _bad_crc_png() -> bytes:
    """A valid PNG whose IDAT checksum is wrong."""
    data = _encoded(_noise(seed=3), "PNG")
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    crc_at = start + 8 + length
    return data[:crc_at] + bytes(b ^ 0xFF for b in data[crc_at : crc_at + 4]) + data[crc_at + 4 :]


def _ztxt_bomb_png() -> bytes:
    """A valid PNG with a compressed text chunk that inflates to 64 MB."""
    data = _encoded(_noise(seed=4), "PNG")
    text = b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 1024 * 1024), 9)
    end = data.index(b"IEND") - 4
    return data[:end] + _chunk(b"zTXt", text) + data[end:]


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return _encoded(_noise(seed=5), "JPEG", exif=exif, quality=90)


def _huge_exif_jpeg() -> bytes:
    """A JPEG whose EXIF block fills its 64 KB segment (a long image description)."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription
    exif[0x0112] = 1
    return _encoded(_noise(seed=6), "JPEG", exif=exif, quality=90)


def _garbage_exif_png() -> bytes:
    """A PNG whose eXIf chunk is 2 MB of bytes that are not EXIF."""
    data = _encoded(_noise(seed=7), "PNG")
    rng = np.random.default_rng(7)
    junk = b"MM\x00\x2a" + rng.integers(0, 256, 2 * 1024 * 1024, dtype=np.uint8).tobytes()
    end = data.index(b"IEND") - 4
    return data[:end] + _chunk(b"eXIf", junk) + data[end:]


def _hostile_exif_png() -> bytes:
    """A PNG whose EXIF says "rotate" and also holds a text tag relabelled as a numeric one
    (TileByteCounts, type still ASCII): Pillow's ``ImageOps.exif_transpose`` raises
    ``struct.error`` re-serialising it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "hello" * 10  # ImageDescription, ASCII
    blob = exif.tobytes()
    entry = b"\x01\x0e\x00\x02"  # big-endian tag 0x010E, type 2 (ASCII)
    assert blob.count(entry) == 1
    hostile = blob.replace(entry, b"\x01\x45\x00\x02")  # tag 0x0145, still ASCII
    return _encoded(_noise(seed=16), "PNG", exif=hostile)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", SIZE, colour) for colour in (FIRST_FRAME, (0, 200, 0), (0, 0, 200))]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _palette_alpha_png() -> bytes:
    image = Image.new("P", SIZE, 1)
    image.putpalette([0, 0, 0, 200, 30, 40, *([0] * 762)])
    image.paste(0, (0, 0, 10, SIZE[1]))
    return _encoded(image, "PNG", transparency=0)


def _sixteen_bit_png() -> bytes:
    width, height = SIZE
    array = (1000 + 37 * np.arange(width * height).reshape(height, width)).astype(np.uint16)
    return _encoded(Image.fromarray(array), "PNG")


def _cmyk_jpeg() -> bytes:
    image = Image.new("CMYK", SIZE, (0, 0, 0, 0))
    image.paste((0, 255, 255, 0), (0, 0, SIZE[0] // 2, SIZE[1]))
    return _encoded(image, "JPEG", quality=90)


def _grey_alpha_png() -> bytes:
    width, height = SIZE
    array = np.zeros((height, width, 2), dtype=np.uint8)
    array[..., 0] = np.arange(width, dtype=np.uint8)[None, :] * 6
    array[:, width // 2 :, 1] = 255
    return _encoded(Image.fromarray(array, mode="LA"), "PNG")


def _float_tiff() -> bytes:
    width, height = SIZE
    array = np.linspace(-3.0, 5.0, width * height, dtype=np.float32).reshape(height, width)
    return _encoded(Image.fromarray(array, mode="F"), "TIFF")


def _one_bit_png() -> bytes:
    image = Image.new("1", SIZE, 0)
    image.paste(1, (0, 0, 10, SIZE[1]))
    return _encoded(image, "PNG")


def _one_bit_bomb_png() -> bytes:
    """A real 9000x9000 image (81 Mpx, over the 64 Mpx limit) in a file of a few KB."""
    return _encoded(Image.new("1", (9000, 9000), 0), "PNG", optimize=True)


def _truncated(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


def _png_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "hello" * 10
    exif[0x8769] = {0x9286: b"x" * 40}  # a sub-IFD (EXIF) with a user comment
    return _encoded(_noise(seed=17), "PNG", exif=exif)


def mutation_seeds() -> dict[str, bytes]:
    """Valid files of every format the loader meets, to be mutated by fuzzing."""
    return {
        "png": _encoded(_noise(seed=1), "PNG"),
        "png+exif": _png_with_exif(),
        "jpeg+exif": _exif_rotated_jpeg(),
        "gif": _animated_gif(),
        "tiff": _encoded(_noise(seed=11), "TIFF"),
        "float-tiff": _float_tiff(),
        "webp": _encoded(_noise(seed=12), "WEBP", quality=80),
        "bmp": _encoded(_noise(seed=13), "BMP"),
        "16-bit-png": _sixteen_bit_png(),
        "cmyk-jpeg": _cmyk_jpeg(),
        "palette-png": _palette_alpha_png(),
    }


# -- the corpus -------------------------------------------------------------------------

Writer = Callable[[Path], None]


def _bytes(data: bytes) -> Writer:
    return lambda path: path.write_bytes(data)


def build_corpus(root: Path, *, unreadable: bool, special_files: bool = True) -> list[Entry]:
    """Writes the corpus under ``root`` (created) and returns what each file must become.

    Args:
        root: folder to fill.
        unreadable: include a ``chmod 000`` image (only meaningful for a process that is not
            root: root reads it anyway).
        special_files: include the FIFO and the symlink to ``/dev/zero``.
    """
    root.mkdir(parents=True, exist_ok=True)
    good_png = _encoded(_noise(seed=1), "PNG")
    good_jpeg = _encoded(_noise(seed=2), "JPEG", quality=90)
    entries: list[Entry] = []

    def ok(kind: str, rel: str | bytes, write: Writer, size: tuple[int, int] = SIZE) -> None:
        raw = rel if isinstance(rel, bytes) else rel.encode()
        write(Path(os.fsdecode(root / os.fsdecode(raw))))
        entries.append(Entry(kind, raw, refused=False, size=size))

    def bad(kind: str, rel: str | bytes, write: Writer, *words: str) -> None:
        raw = rel if isinstance(rel, bytes) else rel.encode()
        write(Path(os.fsdecode(os.path.join(os.fsencode(root), raw))))
        entries.append(Entry(kind, raw, refused=True, words=words))

    # good and unusual-but-valid images: indexed
    ok("good-png", "good.png", _bytes(good_png))
    ok("good-jpeg", "good.jpeg", _bytes(good_jpeg))
    ok("png-named-jpg", "really-a-png.jpg", _bytes(_encoded(_noise(seed=8), "PNG")))
    ok("uppercase-suffix", "SHOUT.PNG", _bytes(_encoded(_noise(seed=9), "PNG")))
    ok("utf8-name", "café 名前 ünï.png", _bytes(_encoded(_noise(seed=10), "PNG")))
    ok("16-bit-png", "deep16.png", _bytes(_sixteen_bit_png()))
    ok("cmyk-jpeg", "cmyk.jpg", _bytes(_cmyk_jpeg()))
    ok("palette-png-transparency", "palette-alpha.png", _bytes(_palette_alpha_png()))
    ok("animated-gif", "animated.gif", _bytes(_animated_gif()))
    ok("exif-rotated-jpeg", "rotated.jpg", _bytes(_exif_rotated_jpeg()), size=ROTATED)
    ok("huge-exif-jpeg", "huge-exif.jpg", _bytes(_huge_exif_jpeg()))
    ok("garbage-exif-png", "garbage-exif.png", _bytes(_garbage_exif_png()))
    ok("hostile-exif-png", "hostile-exif.png", _bytes(_hostile_exif_png()), size=ROTATED)
    ok("grey-alpha-png", "grey-alpha.png", _bytes(_grey_alpha_png()))
    ok("one-bit-png", "one-bit.png", _bytes(_one_bit_png()))
    ok("tiff", "plain.tiff", _bytes(_encoded(_noise(seed=11), "TIFF")))
    ok("float-tiff", "float.tif", _bytes(_float_tiff()))
    ok("webp", "photo.webp", _bytes(_encoded(_noise(seed=12), "WEBP", quality=80)))
    ok("bmp", "old.bmp", _bytes(_encoded(_noise(seed=13), "BMP")))
    ok("hidden-file", ".hidden.png", _bytes(_encoded(_noise(seed=14), "PNG")))
    (root / "dir.png").mkdir()
    ok("directory-named-like-image", "dir.png/inside.png", _bytes(_encoded(_noise(seed=15), "PNG")))

    # bad files: refused, each with a reason naming the problem
    bad("truncated-png", "truncated.png", _bytes(_truncated(good_png, 0.6)), "truncated")
    bad("truncated-jpeg", "truncated.jpg", _bytes(_truncated(good_jpeg, 0.5)), "truncated")
    bad("zero-bytes", "empty.png", _bytes(b""), "empty", "0 bytes")
    bad(
        "text-named-png",
        "notes.png",
        _bytes(b"these are notes, not pixels\n" * 20),
        "not an image",
    )
    bad("bad-crc-png", "bad-crc.png", _bytes(_bad_crc_png()), "corrupt", "crc")
    bad(
        "bomb-png-header",
        "bomb-header.png",
        _bytes(_png_header_only(100_000, 100_000)),
        "decompression bomb",
    )
    bad(
        "bomb-gif-header",
        "bomb-header.gif",
        _bytes(_gif_header_only(65_535, 65_535)),
        "decompression bomb",
    )
    bad("bomb-1-bit-png", "bomb-1bit.png", _bytes(_one_bit_bomb_png()), "decompression bomb")
    bad("ztxt-bomb-png", "ztxt-bomb.png", _bytes(_ztxt_bomb_png()), "too large", "corrupt")
    bad(
        "strip-1x10000",
        "strip-1x10000.png",
        _bytes(_encoded(Image.new("RGB", (1, 10_000), (9, 9, 9)), "PNG")),
        "too small",
    )
    bad(
        "strip-10000x1",
        "strip-10000x1.png",
        _bytes(_encoded(Image.new("RGB", (10_000, 1), (9, 9, 9)), "PNG")),
        "too small",
    )
    bad(
        "sliver-3x300",
        "sliver.png",
        _bytes(_encoded(Image.new("RGB", (3, 300), (9, 9, 9)), "PNG")),
        "aspect ratio",
    )
    bad("oversized-file", "huge.png", _sparse(101 * 1024 * 1024), "byte limit", "-byte limit")
    bad("non-utf8-name", b"caf\xe9.png", _raw(good_png), "utf-8")
    bad("non-utf8-folder", b"d\xe9j\xe0/inner.png", _in_new_dir(good_png), "utf-8")
    bad("symlink-loop", "loop.png", _symlink("loop.png"), "symbolic link")
    bad("broken-symlink", "dangling.png", _symlink("no-such-target.png"), "no such file")
    if special_files:
        bad("fifo", "pipe.png", lambda path: os.mkfifo(path), "not a regular file")
        bad("device-symlink", "zeros.png", _symlink("/dev/zero"), "not a regular file")
    if unreadable:
        bad("unreadable", "locked.png", _locked(good_png), "permission denied")
    return entries


def _sparse(size: int) -> Writer:
    def write(path: Path) -> None:
        with path.open("wb") as handle:
            handle.write(b"\x89PNG\r\n\x1a\n")
            handle.truncate(size)

    return write


def _symlink(target: str) -> Writer:
    return lambda path: os.symlink(target, path)


def _in_new_dir(data: bytes) -> Writer:
    def write(path: Path) -> None:
        os.mkdir(os.fsencode(path.parent))
        _write_bytes_path(os.fsencode(path), data)

    return write


def _raw(data: bytes) -> Writer:
    """Writes through ``os.open`` on the bytes path (non-UTF-8 names)."""
    return lambda path: _write_bytes_path(os.fsencode(path), data)


def _write_bytes_path(path: bytes, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _locked(data: bytes) -> Writer:
    def write(path: Path) -> None:
        path.write_bytes(data)
        path.chmod(0)

    return write
