"""load_query_image: a query image given as a data URI, raw base64 or a local path.

Each input kind is decoded to the same pixels; each way of failing comes out as its own
typed error (``InlineImageError.problem``, ``SourceNotAllowedError``, a plain
``ImageLoadError``), which is what lets every adapter word its own message.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qdrant_xai import ImageLimits, ImageLoadError, QdrantXaiError, SourceNotAllowedError
from qdrant_xai.errors import InlineImageError
from qdrant_xai.images.query import QUERY_IMAGE, load_query_image
from tests.unit.images._sources import B64, PNG

EXPECTED = np.asarray(Image.open(io.BytesIO(PNG)).convert("RGB"))


def same_pixels(image: Image.Image) -> bool:
    return np.array_equal(np.asarray(image), EXPECTED)


@pytest.mark.parametrize("roots", [None, [], ["/nonexistent-root"]])
def test_data_uris_and_raw_base64_decode_whatever_the_roots(roots: list[str] | None) -> None:
    urlsafe = base64.urlsafe_b64encode(PNG).decode("ascii").rstrip("=")
    wrapped = "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76))
    values = [f"data:image/png;base64,{B64}", f"  DATA:Image/PNG;charset=x;BASE64,{wrapped}\n"]
    values += [B64, f" {wrapped} ", f"data:image/png;base64,{urlsafe}"]
    if roots == []:  # where paths are read, "-" and "_" make it a file name
        values.append(urlsafe)
    for value in values:
        loaded = load_query_image(value, roots=roots)
        assert loaded.source == QUERY_IMAGE
        assert (loaded.width, loaded.height) == (24, 16)
        assert same_pixels(loaded.image)


def test_paths_are_read_anywhere_without_roots(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tree["outside"] / "secret.png"
    loaded = load_query_image(str(secret))
    assert loaded.source == str(secret)
    assert loaded.width == 24 and not same_pixels(loaded.image)  # the file, not PNG
    monkeypatch.setenv("HOME", str(tree["root"]))
    assert same_pixels(load_query_image("~/img.png").image)  # ~ is the caller's home
    with pytest.raises(ImageLoadError, match="cannot read the file"):
        load_query_image(str(tree["root"] / "missing.png"))


def test_paths_are_read_only_beneath_the_roots(tree: dict[str, Path]) -> None:
    root, outside = tree["root"], tree["outside"]
    loaded = load_query_image(str(root / "img.png"), roots=[root])
    assert loaded.source == str(root / "img.png") and same_pixels(loaded.image)
    for value in [str(outside / "secret.png"), f"{root}/../outside/secret.png"]:
        with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots"):
            load_query_image(value, roots=[root])
    with pytest.raises(SourceNotAllowedError, match="not fetched"):
        load_query_image("https://images.example.org/cat.png", roots=[root])


def test_no_path_is_read_with_empty_roots(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file was read")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    monkeypatch.setattr("qdrant_xai.images.local.read_local", no_reading)
    for value in [str(tree["root"] / "img.png"), "img.png", "%%%"]:
        with pytest.raises(InlineImageError) as err:
            load_query_image(value, roots=[])
        assert err.value.problem == "not_base64"
        assert err.value.source == QUERY_IMAGE
        assert "image paths are not read here" in str(err.value)
        assert "data URI" in str(err.value)


def test_base64_lookalikes_fall_back_to_paths_where_paths_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # 65 base64 letters do not decode (a length of 4n+1): they name a file, here a missing one
    with pytest.raises(ImageLoadError, match="cannot read the file") as err:
        load_query_image("A" * 65)
    assert not isinstance(err.value, InlineImageError)
    (tmp_path / ("A" * 65)).write_bytes(PNG)
    assert same_pixels(load_query_image("A" * 65, roots=[tmp_path]).image)
    # 64 letters decode (to zeros, not an image), but an existing file of that name wins
    with pytest.raises(ImageLoadError, match="not an image"):
        load_query_image("A" * 64)
    (tmp_path / ("A" * 64)).write_bytes(PNG)
    assert load_query_image("A" * 64).source == "A" * 64


@pytest.mark.parametrize(
    ("value", "problem", "message"),
    [
        ("data:image/png", "data_uri", "malformed data URI"),
        ("data:image/png,%89PNG%0D%0A", "data_uri", "only base64 data URIs"),
        ("data:text/plain;base64,aGVsbG8=", "media_type", "'text/plain' is not an image"),
        ("data:;base64,aGVsbG8=", "media_type", "is not an image"),
        ("data:image/png;base64,!!!not*base64!!!", "not_base64", "invalid base64"),
        ("data:image/png;base64,", "empty", "empty image data"),
    ],
)
def test_each_broken_data_uri_names_its_problem(value: str, problem: str, message: str) -> None:
    for roots in (None, []):
        with pytest.raises(InlineImageError, match=message) as err:
            load_query_image(value, roots=roots)
        assert err.value.problem == problem
        assert err.value.source == QUERY_IMAGE
        assert isinstance(err.value, ImageLoadError) and isinstance(err.value, QdrantXaiError)


def test_too_large_is_judged_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decoded although too large")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    huge = "A" * 4000
    for value in [huge, f"data:image/png;base64,{huge}"]:
        with pytest.raises(InlineImageError, match="over the 1000-byte limit") as err:
            load_query_image(value, roots=[], limits=ImageLimits(max_bytes=1000))
        assert err.value.problem == "too_large"
        assert huge not in str(err.value)  # the payload is not echoed


def test_decoded_bytes_that_are_no_image_are_a_plain_load_error() -> None:
    html = base64.b64encode(b"<script>alert(1)</script>" * 4).decode()
    for value in [html, f"data:image/png;base64,{html}"]:
        with pytest.raises(ImageLoadError, match="not an image Pillow can read") as err:
            load_query_image(value, roots=[])
        assert not isinstance(err.value, InlineImageError)
        assert err.value.source == QUERY_IMAGE


def test_limits_reach_the_decoder(tree: dict[str, Path]) -> None:
    small = ImageLimits(max_pixels=100)
    for value, roots in [(B64, []), (str(tree["root"] / "img.png"), [tree["root"]])]:
        with pytest.raises(ImageLoadError, match="exceeds the limit of 100"):
            load_query_image(value, roots=roots, limits=small)
