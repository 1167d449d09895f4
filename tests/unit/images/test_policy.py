"""ImageSourcePolicy itself: reading by kind, base64 and data URIs, settings.

Local files have their tests in ``test_local.py``, URLs in ``test_remote.py`` (the checks)
and ``test_remote_fetch.py`` (against servers on loopback).
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from qdrant_xai import ImageLimits, ImageLoadError, SourceNotAllowedError
from qdrant_xai.images.policy import ImageSourcePolicy
from tests.unit.images._sources import B64, PNG

# -- reading by kind ---------------------------------------------------------------------


def test_a_path_that_looks_like_a_url_can_be_read_as_a_path(
    tree: dict[str, Path], local: ImageSourcePolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree["root"])
    (tree["root"] / "odd:name.png").write_bytes(PNG)
    with pytest.raises(SourceNotAllowedError, match="scheme is not read"):
        local.open("odd:name.png")
    assert local.open("odd:name.png", kind="path").width == 24
    assert local.open("./odd:name.png").width == 24
    with pytest.raises(SourceNotAllowedError, match="not a URL"):
        local.open("img.png", kind="url")
    with pytest.raises(ValueError, match="kind must be"):
        local.open("img.png", kind="guess")  # type: ignore[arg-type]


def test_resolve_refuses_non_local_sources(local: ImageSourcePolicy) -> None:
    for source in ["https://example.org/a.png", "data:image/png;base64,AAAA"]:
        with pytest.raises(SourceNotAllowedError, match="not a local path"):
            local.resolve(source)


# -- base64 ------------------------------------------------------------------------------


def test_data_uris_and_raw_base64_are_decoded() -> None:
    policy = ImageSourcePolicy()  # no roots needed
    loaded = policy.open(f"data:image/png;base64,{B64}")
    assert (loaded.width, loaded.height) == (24, 16)
    assert B64 not in loaded.source  # the label does not carry the payload
    wrapped = "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76))
    assert policy.open(f"DATA:Image/PNG;charset=x;BASE64,{wrapped}").width == 24
    assert policy.open(B64, kind="base64").width == 24
    urlsafe = base64.urlsafe_b64encode(PNG).decode("ascii").rstrip("=")
    assert policy.open(urlsafe, kind="base64").width == 24
    assert policy.open(f"data:image/png;base64,{B64}", kind="base64").width == 24
    assert policy.open(f"data:image/png;base64,{B64}", kind="url").width == 24


def test_raw_base64_images_are_recognised_by_their_signature(local: ImageSourcePolicy) -> None:
    """How LlamaIndex's ImageNode(image=...) stores an image: raw base64, no data: prefix."""
    loaded = local.open(B64)
    assert (loaded.width, loaded.height) == (24, 16)
    assert loaded.source == f"<base64, {len(B64)} chars>"
    wrapped = "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76))
    assert local.open(wrapped).width == 24
    assert local.open(base64.urlsafe_b64encode(PNG).decode().rstrip("=")).width == 24
    # a truncated image is a load error quoting the length only, never the payload
    with pytest.raises(ImageLoadError, match="corrupt or truncated") as err:
        local.open(B64[:100])
    assert B64[:40] not in str(err.value)
    # base64 of something else is not guessed: it is a (missing) path beneath the roots
    text = base64.b64encode(b"just some words, not an image at all, long enough").decode()
    with pytest.raises(ImageLoadError, match="cannot read the file"):
        local.open(text)
    with pytest.raises(SourceNotAllowedError, match="allow_base64=True") as err:
        ImageSourcePolicy(allow_base64=False).open(B64)
    assert len(str(err.value)) < 200
    with pytest.raises(SourceNotAllowedError, match="not a local path"):
        local.resolve(B64)


def test_raw_base64_is_capped_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = ImageSourcePolicy(max_bytes=1000)
    huge = B64 + "A" * 5_000_000  # a PNG's head, then megabytes
    decoded: list[int] = []
    real = base64.b64decode

    def counting(data: str | bytes, *args: object, **kwargs: object) -> bytes:
        decoded.append(len(data))
        return real(data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(base64, "b64decode", counting)
    with pytest.raises(ImageLoadError, match="over the 1000-byte limit") as err:
        policy.open(huge)
    assert max(decoded) <= 64  # only the head was decoded, to recognise the image
    assert len(str(err.value)) < 300 and "AAAA" not in str(err.value)


def test_too_large_base64_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = ImageSourcePolicy(max_bytes=1000)

    def no_decoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("decoded although too large")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    huge = "A" * 20_000_000
    for source, kind in [(f"data:image/png;base64,{huge}", "auto"), (huge, "base64")]:
        started = time.monotonic()
        with pytest.raises(ImageLoadError, match="over the 1000-byte limit") as err:
            policy.open(source, kind=kind)  # type: ignore[arg-type]
        assert time.monotonic() - started < 1.0
        assert len(str(err.value)) < 300  # the payload is not echoed
        assert "max_bytes" in str(err.value)


def test_invalid_base64_and_non_images_are_load_errors() -> None:
    policy = ImageSourcePolicy()
    with pytest.raises(ImageLoadError, match="invalid base64"):
        policy.open("data:image/png;base64,!!!not*base64!!!")
    with pytest.raises(ImageLoadError, match="invalid base64"):
        policy.open("abcde", kind="base64")
    not_png = base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode()
    with pytest.raises(ImageLoadError, match="not an image"):
        policy.open(f"data:image/png;base64,{not_png}")
    with pytest.raises(ImageLoadError, match="empty"):
        policy.open("data:image/png;base64,")


def test_data_uris_that_are_not_base64_images_are_refused() -> None:
    policy = ImageSourcePolicy()
    html = base64.b64encode(b"<script>alert(1)</script>").decode()
    for source, message in [
        (f"data:text/html;base64,{html}", "only data:image"),
        (f"data:;base64,{html}", "only data:image"),
        ("data:,hello", "only data:image"),
        ("data:image/png", "only data:image"),
        ("data:image/png,%89PNG%0D%0A", "only base64 data URIs"),
    ]:
        with pytest.raises(SourceNotAllowedError, match=message) as err:
            policy.open(source)
        assert "script" not in str(err.value)


def test_base64_can_be_switched_off() -> None:
    policy = ImageSourcePolicy(allow_base64=False)
    with pytest.raises(SourceNotAllowedError, match="allow_base64=True"):
        policy.open(f"data:image/png;base64,{B64}")
    with pytest.raises(SourceNotAllowedError, match="allow_base64=True"):
        policy.open(B64, kind="base64")


# -- settings ----------------------------------------------------------------------------


def test_settings_from_strings(tmp_path: Path) -> None:
    other = tmp_path / "other"
    policy = ImageSourcePolicy.from_settings(
        {
            "roots": f"{tmp_path}{os.pathsep}{other}",
            "allow_urls": "yes",
            "allowed_hosts": "images.example.org, *.cdn.example.org",
            "url_schemes": "https,http",
            "allow_private": "false",
            "allowed_networks": "10.1.0.0/16",
            "max_bytes": "5000000",
            "timeout": "7.5",
            "max_redirects": None,
        },
        read_timeout=2,
    )
    assert policy.roots == (tmp_path.resolve(), other.resolve())
    assert policy.allowed_hosts == ("images.example.org", "*.cdn.example.org")
    assert policy.url_schemes == ("https", "http")
    assert policy.allow_urls and not policy.allow_private
    assert (policy.byte_limit, policy.timeout, policy.read_timeout) == (5_000_000, 7.5, 2.0)
    assert policy.max_redirects == 3
    assert policy == ImageSourcePolicy(
        [tmp_path, other],
        allow_urls=True,
        allowed_hosts=["images.example.org", "*.cdn.example.org"],
        url_schemes=["https", "http"],
        allowed_networks=["10.1.0.0/16"],
        max_bytes=5_000_000,
        timeout=7.5,
        read_timeout=2,
    )
    with pytest.raises(ValueError, match="unknown image source settings"):
        ImageSourcePolicy.from_settings({"allow_url": True})
    with pytest.raises(ValueError, match="allow_urls must be true or false"):
        ImageSourcePolicy.from_settings(allow_urls="maybe")
    with pytest.raises(ValueError, match="timeout must be a positive"):
        ImageSourcePolicy.from_settings(timeout="0")
    with pytest.raises(ValueError, match="allowed_networks entry"):
        ImageSourcePolicy(allowed_networks=["not-a-network"])


def test_describe_is_one_line(tmp_path: Path) -> None:
    assert ImageSourcePolicy().describe() == (
        "image sources: no files; base64 images; no URLs; at most 104857600 bytes each"
    )
    line = ImageSourcePolicy(
        [tmp_path],
        allow_urls=True,
        allowed_hosts=["*.example.org"],
        max_bytes=1000,
        timeout=3,
    ).describe()
    assert "\n" not in line
    assert str(tmp_path.resolve()) in line
    assert "https URLs from *.example.org (public addresses only, 3 s" in line
    assert "at most 1000 bytes" in line


def test_from_roots_keeps_its_behaviour(tree: dict[str, Path]) -> None:
    limits = ImageLimits(max_pixels=100)
    policy = ImageSourcePolicy.from_roots([str(tree["root"])], limits=limits)
    assert policy.roots == (tree["root"].resolve(),)
    assert policy.limits is limits
    assert not policy.allow_urls
    with pytest.raises(ImageLoadError, match="exceeds the limit of 100"):
        policy.open(str(tree["root"] / "img.png"))  # the policy's limits reach the decoder


def test_a_huge_source_that_is_no_image_is_quoted_briefly(local: ImageSourcePolicy) -> None:
    """What the issue saw: a payload value of 44 k characters echoed whole in an error."""
    not_an_image = base64.b64encode(b"%PDF-1.7 " * 5000).decode()
    for source in (not_an_image, "/" + not_an_image, "x" * 50_000):
        with pytest.raises(SourceNotAllowedError, match="too long for a path") as err:
            local.open(source)
        assert len(str(err.value)) < 300
        assert not local.is_image_source(source)
