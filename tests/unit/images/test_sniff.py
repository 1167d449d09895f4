"""Whether a payload string is an image: from the string, or a local file's first bytes."""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.images.sniff import classify_source, image_signature, looks_like_base64_image
from tests.unit.images._sources import B64, PNG


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("WEBP", "webp"), ("BMP", "bmp"),
     ("TIFF", "tiff"), ("PPM", "ppm")],
)  # fmt: skip
def test_every_format_pillow_writes_is_recognised(fmt: str, name: str) -> None:
    data = _encoded(fmt)
    assert image_signature(data[:32]) == name
    assert looks_like_base64_image(base64.b64encode(data).decode())


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(b"%PDF-1.7 and a long enough document body to look at").decode(),
        base64.b64encode(b"BM but no bitmap header follows here, only words......").decode(),
        "a dog on a beach " * 10,
        "A" * 200,  # decodes to zeros
        B64[:40],  # too short to tell
        "data:text/plain;base64," + B64,
        "data:image/png," + "x" * 100,  # not base64
    ],
    ids=["pdf", "bm-text", "prose", "zeros", "short", "text-uri", "plain-uri"],
)
def test_other_strings_are_not_inline_images(text: str) -> None:
    assert not looks_like_base64_image(text)


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        ("/data/photos/cat.JPG", "image"),
        ("photos/dog.webp", "image"),
        ("https://cdn.example.org/a/b.png?sig=123#x", "image"),
        ("file:///srv/img/c.jpeg", "image"),
        ("data:image/png;base64," + B64, "image"),
        (B64, "image"),
        ("captions.csv", "not_image"),  # LangChain's CSVLoader
        ("/docs/notes.txt", "not_image"),  # LlamaIndex's SimpleDirectoryReader
        ("https://example.org/page.html", "not_image"),
        ("https://picsum.photos/200", "not_image"),  # an extensionless URL is not fetched
        ("data:text/html;base64,PGI+", "not_image"),
        ("", "not_image"),
        ("/data/scans/IMG_0001", "unknown"),  # only its bytes can tell
        ("scans/2024.09", "unknown"),
    ],
)
def test_classify_source(value: str, verdict: str) -> None:
    assert classify_source(value) == verdict


def test_extensionless_files_are_judged_by_their_first_bytes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "IMG_0001").write_bytes(PNG)
    (root / "README").write_text("not an image, just text\n")
    (root / "captions.csv").write_bytes(PNG)  # a lying extension: the extension decides
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "IMG_0002").write_bytes(PNG)
    policy = ImageSourcePolicy.from_roots([root])
    assert policy.is_image_source(str(root / "IMG_0001"))
    assert policy.is_image_source("IMG_0001")  # relative: beneath the roots
    assert not policy.is_image_source(str(root / "README"))
    assert not policy.is_image_source("captions.csv")
    assert not policy.is_image_source(str(outside / "IMG_0002"))  # outside the roots: unread
    assert not policy.is_image_source("missing")
    assert not policy.is_image_source(str(root))  # a folder
    assert not ImageSourcePolicy().is_image_source(str(root / "IMG_0001"))  # no roots
    assert policy.is_image_source(B64) and policy.is_image_source("x/y.png")


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs")
def test_a_fifo_is_not_opened_for_its_bytes(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    assert not ImageSourcePolicy.from_roots([tmp_path]).looks_like_image_file("pipe")
