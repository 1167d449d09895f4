"""load_image and iter_image_files: odd modes, broken files, bombs, slivers, EXIF."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qdrant_xai import ImageLimits, ImageLoadError, LoadedImage, QdrantXaiError, load_image
from qdrant_xai.images.load import IMAGE_SUFFIXES, iter_image_files, to_rgb

W, H = 30, 20


def encoded(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def noise_png(width: int = 64, height: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    return encoded(Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)), "PNG")


def noise_jpeg(width: int = 64, height: int = 64) -> bytes:
    rng = np.random.default_rng(1)
    return encoded(
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)), "JPEG"
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` but whose data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def mode_of(source: bytes | Path) -> str:
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return image.mode


def pixels(loaded: LoadedImage) -> np.ndarray:
    return np.asarray(loaded.image).astype(int)


def assert_rgb(loaded: LoadedImage, width: int = W, height: int = H) -> None:
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (width, height)
    assert (loaded.width, loaded.height) == (width, height)
    assert pixels(loaded).shape == (height, width, 3)


# -- odd modes --------------------------------------------------------------------------


def test_rgb_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (W, H), (10, 20, 30)).save(path)
    loaded = load_image(path)
    assert_rgb(loaded)
    assert loaded.source == str(path)
    assert (pixels(loaded) == (10, 20, 30)).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    image = Image.new("CMYK", (W, H), (0, 0, 0, 0))  # no ink: white
    image.paste((0, 255, 255, 0), (0, 0, W // 2, H))  # magenta + yellow: red
    image.save(path, quality=95)
    assert mode_of(path) == "CMYK"
    loaded = load_image(path)
    assert_rgb(loaded)
    assert (np.abs(pixels(loaded)[:, -5:] - 255) <= 8).all()
    red = pixels(loaded)[H // 2, 3]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_palette_png_becomes_rgb() -> None:
    image = Image.new("P", (W, H), 1)
    image.putpalette([0, 0, 0, 200, 30, 40, *([0] * 762)])
    data = encoded(image, "PNG")
    assert mode_of(data) == "P"
    loaded = load_image(data)
    assert_rgb(loaded)
    assert (pixels(loaded) == (200, 30, 40)).all()


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_is_composited_on_white(fmt: str) -> None:
    image = Image.new("P", (W, H), 1)
    image.putpalette([0, 0, 0, 200, 30, 40, *([0] * 762)])
    image.paste(0, (0, 0, 10, H))  # index 0 is transparent (and black)
    data = encoded(image, fmt, transparency=0)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "P" and opened.info.get("transparency") == 0
    loaded = load_image(data)  # Pillow would warn on a direct P -> RGB conversion
    assert_rgb(loaded)
    assert (pixels(loaded)[:, :10] == 255).all()
    assert (pixels(loaded)[:, 10:] == (200, 30, 40)).all()


def test_la_png_is_composited_on_white() -> None:
    array = np.zeros((H, W, 2), dtype=np.uint8)  # black
    array[:, :10, 1] = 0  # fully transparent
    array[:, 10:, 1] = 255  # opaque
    data = encoded(Image.fromarray(array, mode="LA"), "PNG")
    assert mode_of(data) == "LA"
    loaded = load_image(data)
    assert_rgb(loaded)
    assert (pixels(loaded)[:, :10] == 255).all()
    assert (pixels(loaded)[:, 10:] == 0).all()


def test_rgba_png_is_composited_on_white() -> None:
    array = np.zeros((H, W, 4), dtype=np.uint8)
    array[..., 0] = 255  # red
    array[:, 10:, 3] = 255
    array[:, :10, 3] = 0
    loaded = load_image(encoded(Image.fromarray(array, mode="RGBA"), "PNG"))
    assert_rgb(loaded)
    assert (pixels(loaded)[:, :10] == 255).all()
    assert (pixels(loaded)[:, 10:] == (255, 0, 0)).all()


def test_16_bit_png_keeps_its_brightness() -> None:
    # values 1000..1599 of 65535: scaled by the bit depth (/257), not stretched or clipped
    array = (1000 + np.arange(W * H).reshape(H, W)).astype(np.uint16)
    data = encoded(Image.fromarray(array), "PNG")
    assert mode_of(data).startswith("I")
    loaded = load_image(data)
    assert_rgb(loaded)
    grey = pixels(loaded)
    assert grey[0, 0].tolist() == [4, 4, 4]
    assert grey[-1, -1].tolist() == [6, 6, 6]
    assert (np.diff(grey[..., 0].reshape(-1)) >= 0).all()  # order kept


def test_float_tiff_is_rescaled_and_nan_tolerated() -> None:
    array = np.linspace(-3.0, 5.0, W * H, dtype=np.float32).reshape(H, W)
    data = encoded(Image.fromarray(array, mode="F"), "TIFF")
    assert mode_of(data) == "F"
    loaded = load_image(data)
    assert_rgb(loaded)
    assert pixels(loaded)[0, 0].tolist() == [0, 0, 0]
    assert pixels(loaded)[-1, -1].tolist() == [255, 255, 255]
    array[3, 3] = np.nan
    assert to_rgb(Image.fromarray(array, mode="F")).mode == "RGB"


def test_constant_16_bit_image_keeps_its_value() -> None:
    image = Image.fromarray(np.full((H, W), 4242, dtype=np.uint16))
    loaded = load_image(encoded(image, "PNG"))
    assert_rgb(loaded)
    assert (pixels(loaded) == round(4242 / 257)).all()


def test_1_bit_png_becomes_black_and_white() -> None:
    image = Image.new("1", (W, H), 0)
    image.paste(1, (0, 0, 10, H))
    data = encoded(image, "PNG")
    assert mode_of(data) == "1"
    loaded = load_image(data)
    assert_rgb(loaded)
    assert (pixels(loaded)[:, :10] == 255).all()
    assert (pixels(loaded)[:, 10:] == 0).all()


def test_grey_and_open_pillow_images_are_accepted() -> None:
    loaded = load_image(Image.new("L", (W, H), 77), name="in-memory")
    assert_rgb(loaded)
    assert loaded.source == "in-memory"
    assert (pixels(loaded) == 77).all()
    assert load_image(Image.new("RGB", (W, H))).source == "<image>"
    assert load_image(noise_png()).source == "<bytes>"


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = (255, 0, 0)  # stored left half red, right half blue
    array[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert_rgb(loaded, width=20, height=40)
    top, bottom = pixels(loaded)[5, 10], pixels(loaded)[35, 10]
    assert top[0] > 200 and top[2] < 50  # the stored left edge is now the top
    assert bottom[2] > 200 and bottom[0] < 50


# -- broken files -----------------------------------------------------------------------


def expect_load_error(source: object, match: str, **kwargs: object) -> ImageLoadError:
    with pytest.raises(ImageLoadError, match=match) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, QdrantXaiError)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    error = expect_load_error(missing, "cannot read the file")
    assert str(missing) in str(error)
    assert isinstance(error.__cause__, OSError)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.png"
    folder.mkdir()
    expect_load_error(folder, "cannot read the file")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    error = expect_load_error(path, "not an image Pillow can read")
    assert str(error).startswith(str(path))


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are notes, not pixels\n" * 10)
    expect_load_error(path, "not an image Pillow can read")


def test_random_bytes() -> None:
    data = np.random.default_rng(2).integers(0, 256, 600, dtype=np.uint8).tobytes()
    expect_load_error(data, r"^blob: not an image", name="blob")


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.9])
def test_truncated_png(tmp_path: Path, keep: float) -> None:
    data = noise_png()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * keep)])
    error = expect_load_error(path, "corrupt or truncated image")
    assert error.__cause__ is not None


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.9])
def test_truncated_jpeg(keep: float) -> None:
    data = noise_jpeg()
    expect_load_error(data[: int(len(data) * keep)], "corrupt or truncated image")


def test_jpeg_with_garbage_after_its_marker() -> None:
    garbage = np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8).tobytes()
    expect_load_error(b"\xff\xd8\xff\xe0" + garbage, "corrupt or truncated image|not an image")


def test_png_with_zeroed_image_data() -> None:
    data = bytearray(noise_png())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    expect_load_error(bytes(data), "corrupt or truncated image")


# -- limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("side", [100_000, 10_000])
def test_pillow_decompression_bomb_is_refused(side: int) -> None:
    # 1e10 pixels makes Pillow raise, 1e8 makes it warn; both are refused without decoding
    error = expect_load_error(png_header_only(side, side), "decompression bomb")
    assert isinstance(
        error.__cause__, Image.DecompressionBombError | Image.DecompressionBombWarning
    )


def test_image_over_max_pixels_is_refused_before_decoding() -> None:
    # 72 Mpx: under Pillow's own threshold, over the default limit; the data is a few bytes,
    # so a decode attempt would fail with "truncated" rather than this message
    error = expect_load_error(png_header_only(9000, 8000), "9000x8000 pixels exceeds the limit")
    assert "possible decompression bomb" in str(error)
    assert "ImageLimits.max_pixels" in str(error)


def test_small_max_pixels_limit_is_enforced() -> None:
    error = expect_load_error(
        noise_png(), "64x64 pixels exceeds the limit of 100", limits=ImageLimits(max_pixels=100)
    )
    assert "decompression bomb" in str(error)
    assert load_image(noise_png(), limits=ImageLimits(max_pixels=64 * 64)).width == 64


def test_pillow_image_over_max_pixels_is_refused() -> None:
    expect_load_error(
        Image.new("RGB", (64, 64)), "pixels exceeds the limit", limits=ImageLimits(max_pixels=100)
    )


def test_max_bytes_limit_for_files_and_bytes(tmp_path: Path) -> None:
    data = noise_png()
    path = tmp_path / "big.png"
    path.write_bytes(data)
    limits = ImageLimits(max_bytes=len(data) - 1)
    expect_load_error(path, r"over the \d+-byte limit", limits=limits)
    expect_load_error(data, "exceeds the .* limit", limits=limits)
    assert load_image(path, limits=ImageLimits(max_bytes=len(data))).width == 64


@pytest.mark.parametrize("size", [(2000, 10), (10, 2000)])
def test_extreme_aspect_ratio_is_refused(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "sliver.png"
    Image.new("RGB", size, (1, 2, 3)).save(path)
    error = expect_load_error(path, r"aspect ratio 200:1 exceeds 20:1")
    assert "ImageLimits.max_aspect_ratio" in str(error)
    loaded = load_image(path, limits=ImageLimits(max_aspect_ratio=250))
    assert (loaded.width, loaded.height) == size


def test_aspect_ratio_at_the_limit_is_accepted() -> None:
    assert load_image(Image.new("RGB", (400, 20))).width == 400


def test_too_small_side_is_refused() -> None:
    expect_load_error(encoded(Image.new("RGB", (1, 1)), "PNG"), "1x1 is too small")


# -- folders ----------------------------------------------------------------------------


def test_iter_image_files_is_sorted_recursive_and_filtered(tmp_path: Path) -> None:
    names = [
        "b.png",
        "A.JPG",
        "z.webp",
        "notes.txt",
        "captions.csv",
        "photo.png.bak",
        "noext",
        "sub/c.gif",
        "sub/a.tif",
        "sub/deeper/d.jpeg",
        "sub/deeper/readme.md",
        "another/x.bmp",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert found == [
        "A.JPG",
        "b.png",
        "z.webp",
        "another/x.bmp",
        "sub/a.tif",
        "sub/c.gif",
        "sub/deeper/d.jpeg",
    ]
    assert all(Path(name).suffix.lower() in IMAGE_SUFFIXES for name in found)


def test_iter_image_files_does_not_follow_symlinked_folders(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"")
    root = tmp_path / "root"
    root.mkdir()
    (root / "mine.png").write_bytes(b"")
    (root / "link").symlink_to(outside, target_is_directory=True)
    assert [p.name for p in iter_image_files(root)] == ["mine.png"]


def test_iter_image_files_refuses_a_non_directory(tmp_path: Path) -> None:
    file = tmp_path / "a.png"
    file.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="not a directory"):
        list(iter_image_files(file))
    with pytest.raises(ImageLoadError, match="not a directory"):
        list(iter_image_files(tmp_path / "missing"))
