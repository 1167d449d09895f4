"""Formats as people have them: deep grey images keep their brightness, multi-page files say
how many pages they hold, formats that are not read are named with what to do, and a batch
is decoded in passes within its pixel budget."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qdrant_xai import LoadedImage, load_image
from qdrant_xai.images import load as load_module
from qdrant_xai.images.load import iter_image_files, load_in_passes, to_rgb, unsupported_reason

W, H = 30, 20


def encoded(image: Image.Image | list[Image.Image], fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    if isinstance(image, list):
        image[0].save(buffer, fmt, save_all=True, append_images=image[1:], **save)
    else:
        image.save(buffer, fmt, **save)
    return buffer.getvalue()


def grey(loaded: LoadedImage) -> np.ndarray:
    array = np.asarray(loaded.image).astype(int)
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 0] == array[..., 2]).all()
    return array[..., 0]


# -- deep grey images ---------------------------------------------------------------------------


def test_a_dim_16_bit_photo_stays_dim() -> None:
    # values 1000..1599 of 65535: about 4..6 of 255, not stretched to 0..255
    array = (1000 + np.arange(W * H).reshape(H, W)).astype(np.uint16)
    loaded = load_image(encoded(Image.fromarray(array), "PNG"))
    values = grey(loaded)
    assert values.min() == round(1000 / 257) and values.max() == round(1599 / 257)
    full = np.full((H, W), 65535, dtype=np.uint16)
    assert (grey(load_image(encoded(Image.fromarray(full), "PNG"))) == 255).all()


def test_a_16_bit_tiff_and_a_16_bit_png_of_one_picture_look_alike() -> None:
    array = (np.arange(W * H).reshape(H, W) * 100).astype(np.uint16)
    png = grey(load_image(encoded(Image.fromarray(array), "PNG")))
    tiff = grey(load_image(encoded(Image.fromarray(array), "TIFF")))
    assert (png == tiff).all() and (png == np.rint(array / 257)).all()


def test_a_32_bit_tiff_is_scaled_by_its_declared_range() -> None:
    array = np.full((H, W), 2**30, dtype=np.int32)  # half of a signed 32-bit sample's range
    data = encoded(Image.fromarray(array, mode="I"), "TIFF")
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "I" and opened.tag_v2.get(258) == (32,)
    assert (grey(load_image(data)) == 128).all()


def test_an_int_image_without_a_declared_range_is_read_as_16_bits() -> None:
    array = np.array([[0, 257 * 100, 70_000, -5]] * 4, dtype=np.int32)
    rgb = np.asarray(to_rgb(Image.fromarray(array, mode="I")))[..., 0]
    assert rgb[0].tolist() == [0, 100, 255, 0]  # over 16 bits is white, negative black


def test_float_images_in_zero_one_are_intensities_and_others_are_stretched() -> None:
    dim = np.full((H, W), 0.25, dtype=np.float32)
    assert (np.asarray(to_rgb(Image.fromarray(dim, mode="F"))) == 64).all()
    depth = np.linspace(-3.0, 5.0, W * H, dtype=np.float32).reshape(H, W)
    values = np.asarray(to_rgb(Image.fromarray(depth, mode="F")))[..., 0]
    assert values.min() == 0 and values.max() == 255


def test_exif_orientation_still_applies_to_deep_images() -> None:
    array = np.zeros((20, 40), dtype=np.uint16)
    array[:, :20] = 65535  # stored left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encoded(Image.fromarray(array), "TIFF", exif=exif)
    loaded = load_image(data)
    assert (loaded.width, loaded.height) == (20, 40)
    values = grey(loaded)
    assert values[5, 10] == 255 and values[35, 10] == 0  # the stored left edge is the top


# -- pages and frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [("TIFF", {}), ("GIF", {"duration": 50, "loop": 0}), ("WEBP", {"duration": 50})],
)
def test_a_multi_page_file_says_how_many_pages_it_holds(fmt: str, extra: dict) -> None:  # type: ignore[type-arg]
    pages = [Image.new("RGB", (W, H), colour) for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 9))]
    loaded = load_image(encoded(pages, fmt, **extra))
    assert loaded.frames == 3
    red = np.asarray(loaded.image)[H // 2, W // 2]
    assert red[0] > 150 and red[1] < 60  # the first page is the one decoded
    assert load_image(encoded(pages[0], fmt)).frames == 1


def test_a_phone_jpeg_with_a_preview_counts_as_one_picture() -> None:
    first, preview = Image.new("RGB", (W, H), (9, 9, 9)), Image.new("RGB", (W, H))
    data = encoded([first, preview], "MPO")
    assert load_image(data).frames == 1


# -- formats ------------------------------------------------------------------------------------


def test_formats_that_are_not_read_say_what_to_do(tmp_path: Path) -> None:
    for name in ("drawing.svg", "shot.CR2", "photo.jxl"):
        reason = unsupported_reason(name)
        assert reason is not None and reason.startswith("unsupported format")
        assert "convert it to PNG or JPEG" in reason
    assert unsupported_reason("photo.png") is None and unsupported_reason("notes.txt") is None
    for name in ("a.png", "drawing.svg", "raw.nef", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    odd: list[tuple[str, str]] = []
    found = list(
        iter_image_files(tmp_path, on_unsupported=lambda p, why: odd.append((p.name, why)))
    )
    assert [p.name for p in found] == ["a.png"]
    assert [name for name, _ in odd] == ["drawing.svg", "raw.nef"]


def test_heic_without_its_plugin_names_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "_heif_plugin", lambda: False)
    reason = unsupported_reason("IMG_0001.HEIC")
    assert reason is not None and "pillow-heif" in reason and "qdrant-xai[heif]" in reason
    monkeypatch.setattr(load_module, "_pillow_reads_avif", lambda: False)
    reason = unsupported_reason("photo.avif")
    assert reason is not None and "Pillow" in reason and "11.3" in reason


def test_heic_is_read_when_pillow_heif_is_installed() -> None:
    pytest.importorskip("pillow_heif")
    assert unsupported_reason("IMG_0001.heic") is None
    load_module._register_plugins()  # what the first decode does
    data = encoded(Image.new("RGB", (64, 48), (200, 30, 40)), "HEIF", quality=95)
    loaded = load_image(data)
    assert (loaded.width, loaded.height) == (64, 48)
    assert abs(int(np.asarray(loaded.image)[24, 32, 0]) - 200) < 20


def test_avif_and_ico_are_read() -> None:
    image = Image.new("RGB", (64, 48), (30, 160, 40))
    if load_module._pillow_reads_avif():
        loaded = load_image(encoded(image, "AVIF", quality=95))
        assert (loaded.width, loaded.height) == (64, 48)
    icon = load_image(encoded(image, "ICO", sizes=[(48, 48)]))
    assert icon.image.mode == "RGB" and icon.width == 48


# -- passes within the pixel budget -------------------------------------------------------------


def test_load_in_passes_keeps_each_pass_within_the_budget() -> None:
    sides = {"a": 10, "b": 10, "c": 20, "broken": 0, "d": 5, "e": 5}
    loads: list[str] = []

    def load(name: str) -> LoadedImage | None:
        loads.append(name)
        if not sides[name]:
            return None
        side = sides[name]
        return LoadedImage(Image.new("RGB", (side, side)), name, side, side)

    passes = list(load_in_passes(sides, load, max_pixels=250))
    assert [[name for name, _ in p] for p in passes] == [["a", "b"], ["c"], ["d", "e"]]
    assert loads == list(sides)  # each item read once, in order


def test_load_in_passes_is_lazy() -> None:
    """A pass is handed over before the next images are decoded (memory stays bounded)."""
    decoded: list[int] = []

    def load(i: int) -> LoadedImage:
        decoded.append(i)
        return LoadedImage(Image.new("RGB", (10, 10)), str(i), 10, 10)

    passes = load_in_passes(range(6), load, max_pixels=200)
    assert [i for i, _ in next(passes)] == [0, 1] and decoded == [0, 1, 2]
