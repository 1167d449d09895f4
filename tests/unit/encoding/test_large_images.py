"""A photo many times the model's input is box-reduced before the processor's resize: the
model input it gives is the same to within resampling noise, and the processor never sees
the full-size image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from qdrant_xai import ClipEncoder


def _photo(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_a_large_photo_gives_the_same_model_input_and_embedding(
    shapes_encoder: ClipEncoder,
) -> None:
    photo = _photo(2400, 1800)  # 28x the shapes model's 64 px input
    direct = shapes_encoder.processor.image_processor(images=[photo], return_tensors="pt")
    reduced = shapes_encoder.pixel_values([photo])
    assert reduced.shape == direct["pixel_values"].shape
    assert float((reduced - direct["pixel_values"]).abs().mean()) < 0.01
    reduced_embedding = shapes_encoder.embed_images([photo])[0]
    pixels = direct["pixel_values"].to(shapes_encoder.dtype)
    with torch.no_grad():
        out = shapes_encoder.model.get_image_features(pixel_values=pixels).pooler_output[0]
    unreduced = (out / out.norm()).numpy()
    assert float(reduced_embedding @ unreduced) > 0.999


def test_the_processor_never_sees_the_full_size_photo(
    shapes_encoder: ClipEncoder,
) -> None:
    seen: list[tuple[int, int]] = []
    processor = shapes_encoder.processor.image_processor
    original = type(processor).__call__

    def spy(self: object, images: list[Image.Image], **kwargs: object) -> object:
        seen.extend(image.size for image in images)
        return original(self, images=images, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(processor), "__call__", spy)
        shapes_encoder.pixel_values([_photo(2400, 1800), _photo(100, 80)])
    side = 2 * max(shapes_encoder.image_size)
    assert seen[0][1] >= side and seen[0][1] < 2 * side  # reduced by an integer factor
    assert seen[1] == (100, 80)  # small images untouched
