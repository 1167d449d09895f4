"""Dataset readers: Flickr8k, Karpathy-split JSON and CSV read the same images and captions,
and malformed inputs say what is wrong and where.

The data is the shapes world written in the three formats (:mod:`tests.unit.eval.flickr_world`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qdrant_xai.errors import DatasetError
from qdrant_xai.eval.datasets import RetrievalDataset, detect_format, read_dataset
from tests.unit.eval.flickr_world import N_IMAGES, SPLITS, write_flickr_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_flickr_world(tmp_path_factory.mktemp("flickr-shapes"))


def _pairs(dataset: RetrievalDataset) -> list[tuple[Path, tuple[str, ...]]]:
    return [(item.path, item.captions) for item in dataset.items]


def test_the_three_formats_read_the_same_images_and_captions(world: Path) -> None:
    assert detect_format(world) == "flickr8k"
    assert detect_format(world / "Flickr8k_text" / "Flickr8k.token.txt") == "flickr8k"
    assert detect_format(world / "dataset_flickr8k.json") == "karpathy"
    assert detect_format(world / "captions.csv") == "csv"

    flickr = read_dataset(world, split="all")
    karpathy = read_dataset(world / "dataset_flickr8k.json", split="all")
    table = read_dataset(world / "captions.csv")
    assert flickr.n_images == karpathy.n_images == table.n_images == N_IMAGES
    assert _pairs(flickr) == _pairs(karpathy) == _pairs(table)
    assert flickr.n_captions > N_IMAGES  # two-object scenes have a reordered second caption
    assert all(item.path.is_absolute() and item.path.is_file() for item in flickr.items)
    assert flickr.image_root == (world / "Flicker8k_Dataset").resolve()
    assert (flickr.format, karpathy.format, table.format) == ("flickr8k", "karpathy", "csv")
    assert flickr.name == karpathy.name == "flickr8k"

    # the default split is test when there is one; val and dev name the same split
    test = read_dataset(world)
    assert test.split == "test" and test.n_images == len(SPLITS["test"])
    assert _pairs(test) == _pairs(read_dataset(world / "dataset_flickr8k.json"))
    assert set(test.splits) == {"train", "dev", "test"}
    assert _pairs(read_dataset(world, split="val")) == _pairs(
        read_dataset(world / "dataset_flickr8k.json", split="dev")
    )
    assert table.split is None and read_dataset(world, format="csv").format == "csv"

    limited = read_dataset(world, max_images=3)
    assert _pairs(limited) == _pairs(test)[:3]


def _copy_flickr(world: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "flickr"
    shutil.copytree(world / "Flickr8k_text", copy / "Flickr8k_text")
    (copy / "Flicker8k_Dataset").symlink_to(world / "Flicker8k_Dataset")
    return copy


def test_malformed_flickr8k_inputs_say_what_and_where(world: Path, tmp_path: Path) -> None:
    copy = _copy_flickr(world, tmp_path)
    token = copy / "Flickr8k_text" / "Flickr8k.token.txt"
    good = token.read_text().splitlines()

    token.write_text("\n".join([*good[:2], "a caption without an image name", *good[2:]]))
    with pytest.raises(DatasetError, match="IMAGE#N<TAB>caption") as bad_line:
        read_dataset(copy)
    assert bad_line.value.line == 3 and f"{token}:3:" in str(bad_line.value)

    token.write_text("\n".join([*good, "x.png#first\ta caption"]))
    with pytest.raises(DatasetError) as bad_index:
        read_dataset(copy)
    assert bad_index.value.line == len(good) + 1

    token.write_text("\n".join([*good, "gone_1234.png#0\ta red circle"]))
    with pytest.raises(DatasetError, match=r"1 of \d+ images are missing .*gone_1234\.png"):
        read_dataset(copy, split="all")
    skipped = read_dataset(copy, split="all", skip_missing=True)
    assert skipped.n_images == N_IMAGES and skipped.skipped[0][0] == "gone_1234.png"
    assert read_dataset(copy).n_images == len(SPLITS["test"])  # not in the test split

    token.write_text("\n".join(good))
    with pytest.raises(DatasetError, match=r"unknown split 'holdout'.*test") as unknown:
        read_dataset(copy, split="holdout")
    assert "'all'" in str(unknown.value)

    split_file = copy / "Flickr8k_text" / "Flickr_8k.testImages.txt"
    split_file.write_text(split_file.read_text() + "\nnot_captioned.jpg\n")
    with pytest.raises(DatasetError, match=r"no captions.*not_captioned\.jpg"):
        read_dataset(copy)

    with pytest.raises(DatasetError, match="the image folder given does not exist"):
        read_dataset(token, split="train", images=tmp_path / "nowhere")
    (copy / "Flicker8k_Dataset").unlink()
    with pytest.raises(DatasetError, match=r"cannot find the images.*--images DIR"):
        read_dataset(token, split="train")
    moved = read_dataset(token, split="train", images=world / "Flicker8k_Dataset")
    assert moved.n_images == len(SPLITS["train"])


def test_malformed_karpathy_and_csv_inputs(world: Path, tmp_path: Path) -> None:
    broken = tmp_path / "dataset_broken.json"
    broken.write_text('{"images": [\n{"filename": "a.png",\n')
    with pytest.raises(DatasetError, match="not valid JSON") as not_json:
        read_dataset(broken)
    assert not_json.value.line is not None

    data = json.loads((world / "dataset_flickr8k.json").read_text())
    del data["images"][1]["sentences"]
    broken.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"images\[1\].*'sentences'"):
        read_dataset(broken, images=world / "Flicker8k_Dataset")
    broken.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DatasetError, match="'images' list"):
        read_dataset(broken)

    with pytest.raises(DatasetError, match="has no splits"):
        read_dataset(world / "captions.csv", split="test")
    headless = tmp_path / "captions.csv"
    headless.write_text("file,text\na.png,a red circle\n")
    with pytest.raises(DatasetError, match="'image' and 'caption'"):
        read_dataset(headless, format="csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no retrieval dataset found"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no such file"):
        read_dataset(tmp_path / "absent")


def test_reading_a_dataset_needs_no_torch() -> None:
    """``qdrant-xai eval --help`` names FORMATS and DEFAULT_CAP from here: no torch, no
    transformers."""
    code = (
        "import sys; from qdrant_xai.eval.datasets import DEFAULT_CAP, FORMATS; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.split() == ["False", "False"]
