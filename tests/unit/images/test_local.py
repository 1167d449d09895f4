"""Local image sources under ImageSourcePolicy: paths and file:// URLs beneath the roots.

Every refusal is exercised for real: files, symlinks, FIFOs and devices in temporary folders
(``..`` and symlink escapes, special files, symlinks swapped in after the check).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from qdrant_xai import ImageLimits, ImageLoadError, LoadedImage, SourceNotAllowedError
from qdrant_xai.images.local import read_local
from qdrant_xai.images.policy import ImageSourcePolicy
from tests.unit.images._sources import PNG, in_thread, posix_only


def test_files_under_the_root_are_read(tree: dict[str, Path], local: ImageSourcePolicy) -> None:
    root = tree["root"]
    loaded = local.open(str(root / "img.png"))
    assert isinstance(loaded, LoadedImage)
    assert (loaded.width, loaded.height) == (24, 16)
    assert loaded.source == str(root / "img.png")
    assert local.open(str(root / "sub" / "deep.png")).width == 24
    assert local.open(root / "sub" / "deep.png").width == 24  # a Path works too
    assert local.resolve(str(root / "sub" / ".." / "img.png")) == root / "img.png"


def test_relative_paths_resolve_beneath_the_roots_not_the_working_directory(
    tree: dict[str, Path], local: ImageSourcePolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree["outside"])  # holds secret.png: never read through a relative path
    assert local.open("sub/deep.png").width == 24
    assert local.open("./img.png").source == "./img.png"
    assert local.resolve("sub/deep.png") == tree["root"] / "sub" / "deep.png"
    with pytest.raises(ImageLoadError, match="cannot read the file"):
        local.open("secret.png")  # looked up beneath the root only
    with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots"):
        local.open("../outside/secret.png")
    # several roots: the first that holds the file
    other = tree["root"].parent / "other"
    (other / "sub").mkdir(parents=True)
    (other / "only-here.png").write_bytes(PNG)
    (other / "sub" / "deep.png").write_bytes(PNG)  # shadowed by the first root's
    both = ImageSourcePolicy.from_roots([tree["root"], other])
    assert both.resolve("only-here.png") == (other / "only-here.png").resolve()
    assert both.resolve("sub/deep.png") == tree["root"] / "sub" / "deep.png"


def test_dotdot_traversal_is_refused(tree: dict[str, Path], local: ImageSourcePolicy) -> None:
    sneaky = f"{tree['root']}/sub/../../outside/secret.png"
    with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots") as err:
        local.open(sneaky)
    assert "image_roots" in str(err.value)  # says what to set
    with pytest.raises(SourceNotAllowedError):
        local.open(f"{tree['root']}/../../../../../../etc/passwd")


def test_absolute_paths_outside_the_roots_are_refused(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    for source in [str(tree["outside"] / "secret.png"), "/etc/passwd", "/"]:
        with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots"):
            local.open(source)


def test_no_roots_means_no_local_reads(tree: dict[str, Path]) -> None:
    with pytest.raises(SourceNotAllowedError, match=r"image_roots=\[\.\.\.\]"):
        ImageSourcePolicy().open(str(tree["root"] / "img.png"))


@posix_only
def test_symlink_out_of_the_root_is_refused(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    root, outside = tree["root"], tree["outside"]
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    for source in [root / "escape.png", root / "escape_dir" / "secret.png"]:
        with pytest.raises(SourceNotAllowedError, match=str(outside / "secret.png")):
            local.open(str(source))


@posix_only
def test_symlink_within_the_root_is_followed(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    root = tree["root"]
    (root / "alias.png").symlink_to(root / "sub" / "deep.png")
    (root / "alias_dir").symlink_to(root / "sub", target_is_directory=True)
    expected = np.asarray(local.open(str(root / "sub" / "deep.png")).image)
    for source in [root / "alias.png", root / "alias_dir" / "deep.png"]:
        assert np.array_equal(np.asarray(local.open(str(source)).image), expected)


@posix_only
def test_a_symlink_swapped_in_after_the_check_is_not_followed(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    # The check resolved the path; between check and open an attacker swaps a component
    # for a symlink. The open walks the path below the root with O_NOFOLLOW and refuses.
    root, outside = tree["root"], tree["outside"]
    (root / "swapped").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SourceNotAllowedError, match="symlink"):
        read_local(
            root / "swapped" / "secret.png",
            "swapped/secret.png",
            roots=local.roots,
            limit=local.byte_limit,
        )
    (root / "swapped.png").symlink_to(outside / "secret.png")
    with pytest.raises(SourceNotAllowedError, match="symlink"):
        read_local(root / "swapped.png", "swapped.png", roots=local.roots, limit=local.byte_limit)


def test_a_directory_named_like_an_image_is_refused(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    (tree["root"] / "folder.png").mkdir()
    with pytest.raises(SourceNotAllowedError, match="is a directory"):
        local.open(str(tree["root"] / "folder.png"))
    with pytest.raises(SourceNotAllowedError, match="is a directory"):
        local.open(str(tree["root"]))


@posix_only
def test_a_fifo_is_refused_without_blocking(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    fifo = tree["root"] / "pipe.png"
    os.mkfifo(fifo)
    outcome = in_thread(lambda: local.open(str(fifo)), seconds=5)
    assert isinstance(outcome, SourceNotAllowedError)
    assert "FIFO" in str(outcome)
    # also when the FIFO appears after the check (the open itself must not block)
    outcome = in_thread(
        lambda: read_local(fifo, "pipe.png", roots=local.roots, limit=local.byte_limit),
        seconds=5,
    )
    assert isinstance(outcome, SourceNotAllowedError)


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_a_device_is_refused() -> None:
    policy = ImageSourcePolicy.from_roots(["/dev"])
    outcome = in_thread(lambda: policy.open("/dev/null"), seconds=5)
    assert isinstance(outcome, SourceNotAllowedError)
    assert "device" in str(outcome)


def test_missing_corrupt_and_large_files_are_load_errors(
    tree: dict[str, Path], local: ImageSourcePolicy
) -> None:
    root = tree["root"]
    with pytest.raises(ImageLoadError, match="cannot read the file"):
        local.open(str(root / "missing.png"))
    (root / "text.png").write_text("not an image")
    with pytest.raises(ImageLoadError, match="not an image"):
        local.open(str(root / "text.png"))
    small = ImageSourcePolicy([root], max_bytes=100)
    with pytest.raises(ImageLoadError, match=r"over the 100-byte limit; .*max_bytes"):
        small.open(str(root / "img.png"))
    limited = ImageSourcePolicy([root], ImageLimits(max_bytes=50))
    assert limited.byte_limit == 50
    with pytest.raises(ImageLoadError, match="50-byte limit"):
        limited.open(str(root / "img.png"))


def test_nul_bytes_and_empty_sources_are_refused(local: ImageSourcePolicy) -> None:
    with pytest.raises(SourceNotAllowedError, match="NUL"):
        local.open("img\x00.png")
    with pytest.raises(SourceNotAllowedError, match="empty"):
        local.open("")


def test_file_urls_follow_the_same_rules(tree: dict[str, Path], local: ImageSourcePolicy) -> None:
    root = tree["root"]
    assert local.open(f"file://{root}/img.png").width == 24
    assert local.open(f"file://localhost{root}/img.png").width == 24
    assert local.open(f"FILE://{root}/a%20b.png").width == 24  # percent-decoded
    assert local.resolve(f"file://{root}/sub/deep.png") == root / "sub" / "deep.png"
    for source, message in [
        ("file:///etc/passwd", "outside the allowed image roots"),
        (f"file://{root}/%2e%2e/outside/secret.png", "outside the allowed image roots"),
        (f"file://{root}/../outside/secret.png", "outside the allowed image roots"),
        ("file://evil.example.org/share/img.png", "another machine"),
        (f"file://{root.parent.name}{root}/img.png", "another machine"),
        ("file:img.png", "absolute"),
        (f"file://{root}/img.png?x=1", "with \\? or #"),
        (f"file://user:pw@localhost{root}/img.png", "credentials"),
        (f"file://{root}/img%00.png", "NUL"),
    ]:
        with pytest.raises(SourceNotAllowedError, match=message):
            local.open(source)
