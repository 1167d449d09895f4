"""The wheel ships the library and nothing else: every package module and the bundled demo
model, no benchmark, method-quality table, training script or test."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_holds_the_library_only(tmp_path: Path) -> None:
    build = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation"]
    leftover = not (REPO / "build").exists()
    try:
        subprocess.run(
            [*build, "-q", "-w", str(tmp_path)], check=True, capture_output=True, timeout=600
        )
    finally:
        if leftover:  # setuptools builds in the checkout: leave it as it was
            shutil.rmtree(REPO / "build", ignore_errors=True)
    (wheel,) = tmp_path.glob("qdrant_xai-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        p.relative_to(REPO).as_posix()
        for folder in ("qdrant_xai",)
        for p in (REPO / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules - names == set(), "package modules missing from the wheel"
    assert {"qdrant_xai/demo/model/model.safetensors", "qdrant_xai/py.typed"} <= names
    assert any(n.startswith("langchain_qdrant_xai/") for n in names)
    assert any(n.startswith("llama_index_qdrant_xai/") for n in names)
    assert any(n.startswith("qdrant_xai_mcp/") for n in names)
    shipped = [n for n in names if n.endswith(".py")]
    unwanted = [
        n
        for n in shipped
        if n.startswith(("tests/", "examples/"))
        or any(word in n for word in ("benchmark", "quality", "training", "train_"))
    ]
    assert unwanted == []
