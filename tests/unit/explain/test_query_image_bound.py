"""Query images are scaled down right after decoding: what the model sees barely changes,
what every later step costs (preprocessing, overlays) is bounded."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from qdrant_xai import ClipEncoder
from qdrant_xai.images.load import LoadedImage
from qdrant_xai.images.query import (
    QUERY_MAX_SIDE,
    QUERY_MIN_SHORT_SIDE,
    bounded_query_image,
    load_query_image,
)


def _loaded(width: int, height: int) -> LoadedImage:
    return LoadedImage(Image.new("RGB", (width, height), (200, 30, 30)), "q", width, height)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((300, 200), (300, 200)),  # small: unchanged
        ((4000, 3000), (1024, 768)),  # long side bounded
        ((3000, 4000), (768, 1024)),
        ((8000, 1000), (3584, 448)),  # elongated: the short side keeps 448 px
        ((6000, 300), (6000, 300)),  # short side already under 448: unchanged
    ],
)
def test_bounded_sizes(size: tuple[int, int], expected: tuple[int, int]) -> None:
    bounded = bounded_query_image(_loaded(*size))
    assert (bounded.width, bounded.height) == expected == bounded.image.size
    assert max(expected) <= QUERY_MAX_SIDE or min(expected) <= QUERY_MIN_SHORT_SIDE


def test_a_small_image_is_returned_as_is() -> None:
    loaded = _loaded(640, 480)
    assert bounded_query_image(loaded) is loaded


def test_base64_queries_are_bounded_and_embed_as_the_original(
    tiny_encoder: ClipEncoder,
) -> None:
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (1500, 2400, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    query = load_query_image(base64.b64encode(buffer.getvalue()).decode(), roots=[])
    assert (query.width, query.height) == (1024, 640)
    original, bounded = tiny_encoder.embed_images([picture, query.image])
    assert float(original @ bounded) > 0.999
