"""Fixtures of the image source tests: a root folder with images, and a policy for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdrant_xai.images.policy import ImageSourcePolicy
from tests.unit.images._sources import PNG, png_bytes


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "img.png").write_bytes(PNG)
    (root / "sub" / "deep.png").write_bytes(png_bytes(seed=1))
    (root / "a b.png").write_bytes(PNG)
    (outside / "secret.png").write_bytes(png_bytes(seed=2))
    return {"root": root, "outside": outside}


@pytest.fixture
def local(tree: dict[str, Path]) -> ImageSourcePolicy:
    return ImageSourcePolicy.from_roots([tree["root"]])
