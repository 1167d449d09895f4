"""A hit as display-size pictures: the image once, the heatmap and grounding as layers."""

from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder
from qdrant_xai.errors import ImageLoadError
from qdrant_xai.explain import Explanation
from qdrant_xai.explain.grounding import Grounding
from qdrant_xai.images.overlay import LAYER_FLOOR, heatmap_layer
from qdrant_xai.render import NEAR_ZERO, GroundingLayer, HitPicture, hit_picture, image_data_uri


def decoded(uri: str) -> tuple[str, Image.Image]:
    """The media type of a data URI and its image."""
    head, _, data = uri.partition(",")
    assert head.endswith(";base64")
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return head.removeprefix("data:").removesuffix(";base64"), image


def by_size(explanations: list[Explanation], size: tuple[int, int]) -> Explanation:
    return next(e for e in explanations if e.original_image().size == size)


def test_the_crop_of_wide_and_tall_images_is_the_centre_square_in_fractions(
    strips: tuple[QdrantClient, list[Explanation]], shapes_encoder: ClipEncoder
) -> None:
    _, explanations = strips
    wide = hit_picture(by_size(explanations, (1600, 90)))
    # CLIP resizes the short side to the input and crops the centre: the 90x90 square
    # around x = 800, i.e. pixels 755..845 of 1600
    assert shapes_encoder.crop_box(1600, 90) == (755, 0, 845, 90)
    assert wide.crop == pytest.approx((755 / 1600, 0.0, 845 / 1600, 1.0))
    assert (wide.width, wide.height) == (256, 14)  # longest side 256, aspect kept
    tall = hit_picture(by_size(explanations, (90, 1600)))
    assert tall.crop == pytest.approx((0.0, 755 / 1600, 1.0, 845 / 1600))
    assert (tall.width, tall.height) == (14, 256)
    # the layer covers the crop box only: a square for a square crop
    kind, layer = decoded(wide.heatmap or "")
    assert kind == "image/png" and layer.size[0] == layer.size[1]


def test_the_image_is_a_small_jpeg_never_upscaled(
    strips: tuple[QdrantClient, list[Explanation]],
) -> None:
    _, explanations = strips
    photo = by_size(explanations, (640, 480))
    picture = hit_picture(photo, size=200)
    kind, image = decoded(picture.image)
    assert kind == "image/jpeg" and image.size == (picture.width, picture.height) == (200, 150)
    # no heat drawn in: the picture is the photo itself, shrunk
    original = photo.original_image().resize((200, 150), Image.Resampling.LANCZOS)
    difference = np.abs(np.asarray(image, np.int16) - np.asarray(original, np.int16))
    assert float(difference.mean()) < 12  # JPEG noise on a noisy photo, not a heatmap
    big = hit_picture(photo, size=1000)
    assert (big.width, big.height) == (640, 480)  # never enlarged
    square = photo.original_image().crop((0, 0, 480, 480))
    whole = hit_picture(dataclasses.replace(photo, crop_box=None), square, size=100)
    assert whole.crop is None and (whole.width, whole.height) == (100, 100)


def test_the_heatmap_layer_holds_no_photo_pixels(
    strips: tuple[QdrantClient, list[Explanation]],
) -> None:
    _, explanations = strips
    photo = by_size(explanations, (640, 480))
    over_photo = hit_picture(photo)
    over_black = hit_picture(photo, Image.new("RGB", (640, 480)))
    assert over_photo.heatmap == over_black.heatmap  # the same layer whatever the photo
    assert over_photo.image != over_black.image
    _, layer = decoded(over_photo.heatmap or "")
    rgba = np.asarray(layer.convert("RGBA"))
    assert rgba.shape[:2] == (128, 128)  # the 480x480 crop box, at most 128 px
    alpha = rgba[..., 3]
    assert alpha.min() > 0 and alpha.max() <= round(0.55 * 255)  # see-through everywhere
    # colours are the colormap's: the hottest pixel is inferno's top
    hottest = rgba.reshape(-1, 4)[int(np.argmax(alpha))]
    top = np.round(np.asarray(colormaps["inferno"](1.0)[:3]) * 255)
    assert np.abs(hottest[:3] - top).max() <= 8


def test_heatmap_layer_levels_colours_and_opacity() -> None:
    heatmap = np.array([[0.0, 1.0], [-3.0, 0.5]], dtype=np.float32)
    layer = np.asarray(heatmap_layer(heatmap, (2, 2), levels=256).convert("RGBA"))
    inferno = colormaps["inferno"]
    for (row, col), level in {(0, 0): 0.0, (0, 1): 1.0, (1, 0): 0.0}.items():
        rgb = np.round(np.asarray(inferno(level)[:3]) * 255)
        assert np.abs(layer[row, col, :3] - rgb).max() <= 1
        opacity = 255 * 0.55 * (LAYER_FLOOR + (1 - LAYER_FLOOR) * level)
        assert abs(int(layer[row, col, 3]) - opacity) <= 1
    # a common scale twice the peak draws the peak at half strength
    halved = np.asarray(heatmap_layer(heatmap, (2, 2), scale=2.0).convert("RGBA"))
    assert abs(int(halved[0, 1, 3]) - 255 * 0.55 * (LAYER_FLOOR + (1 - LAYER_FLOOR) / 2)) <= 2
    with pytest.raises(ValueError, match="positive size"):
        heatmap_layer(heatmap, (0, 4))
    with pytest.raises(ValueError, match="levels"):
        heatmap_layer(heatmap, (4, 4), levels=1)


def test_grounding_maps_share_one_scale_and_near_zero_ones_get_no_layer(
    strips: tuple[QdrantClient, list[Explanation]],
) -> None:
    _, explanations = strips
    photo = by_size(explanations, (640, 480))
    assert photo.grounding is not None
    assert [w.text for w in photo.grounding.words] == ["red", "circle"]
    maps = np.abs(photo.grounding.maps)  # positive maps: each one's peak is its magnitude
    maps[0] = maps[1] * (NEAR_ZERO / 2)  # "red" at a fraction of "circle"
    scaled = dataclasses.replace(photo, grounding=Grounding(photo.grounding.words, maps))
    picture = hit_picture(scaled)
    red, circle = picture.grounding
    assert circle.strength == pytest.approx(1.0) and not circle.near_zero
    assert circle.layer is not None
    assert red.strength == pytest.approx(NEAR_ZERO / 2, abs=1e-4)
    assert red.near_zero and red.layer is None
    # the real maps: each word's positive peak over the largest magnitude of both
    real = hit_picture(photo).grounding
    common = float(np.abs(photo.grounding.maps).max())
    for layer, values in zip(real, photo.grounding.maps, strict=True):
        assert layer.strength == pytest.approx(max(0.0, float(values.max())) / common, abs=1e-4)
        assert layer.near_zero == (layer.strength < NEAR_ZERO)
        assert (layer.layer is None) == layer.near_zero
    # a word map alone would be drawn at its own full contrast; on the common scale the
    # weak map's layer is fainter than the strong one's
    maps[0] = maps[1] * 0.5
    halved = hit_picture(
        dataclasses.replace(photo, grounding=Grounding(photo.grounding.words, maps))
    )
    half, full = (np.asarray(decoded(g.layer or "")[1].convert("RGBA")) for g in halved.grounding)
    assert half[..., 3].max() < full[..., 3].max()


def test_to_dict_is_plain_json(strips: tuple[QdrantClient, list[Explanation]]) -> None:
    _, explanations = strips
    picture = hit_picture(by_size(explanations, (1600, 90)))
    data = json.loads(json.dumps(picture.to_dict()))
    assert set(data) == {"image", "width", "height", "crop", "heatmap", "grounding"}
    assert data["crop"] == list(picture.crop or ())
    assert data["grounding"] == [
        {"word": g.word, "layer": g.layer, "strength": g.strength, "near_zero": g.near_zero}
        for g in picture.grounding
    ]
    assert isinstance(picture.grounding[0], GroundingLayer)
    rebuilt = HitPicture(
        data["image"],
        data["width"],
        data["height"],
        tuple(data["crop"]),
        data["heatmap"],
        tuple(GroundingLayer(**g) for g in data["grounding"]),
    )
    assert rebuilt == picture


def test_a_changed_file_smaller_than_the_crop_box_is_refused(
    strips: tuple[QdrantClient, list[Explanation]],
) -> None:
    _, explanations = strips
    photo = by_size(explanations, (640, 480))
    with pytest.raises(ImageLoadError, match="smaller than the crop box"):
        hit_picture(photo, Image.new("RGB", (100, 100)))
    text_pair = dataclasses.replace(photo, heatmap=None, grounding=None, crop_box=None)
    plain = hit_picture(text_pair, Image.new("RGB", (100, 100)))  # the image alone
    assert plain.heatmap is None and plain.grounding == () and plain.crop is None


def test_image_data_uri_keeps_transparency_and_shrinks() -> None:
    rgba = Image.new("RGBA", (300, 100), (255, 0, 0, 0))
    kind, image = decoded(image_data_uri(rgba, max_side=60))
    assert kind in ("image/webp", "image/png") and image.size == (60, 20)
    assert image.convert("RGBA").getchannel("A").getextrema()[0] == 0
    opaque = Image.new("RGBA", (30, 10), (255, 0, 0, 255))
    assert decoded(image_data_uri(opaque))[0] == "image/jpeg"
    assert decoded(image_data_uri(Image.new("RGB", (30, 10))))[0] == "image/jpeg"
    with pytest.raises(ValueError, match="size"):
        hit_picture(
            Explanation(hit=None, rank=0, query_kind="text", hit_kind="image"),  # type: ignore[arg-type]
            Image.new("RGB", (10, 10)),
            size=0,
        )
