"""Every example script runs, offline, on the bundled models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

TRAINING = REPO / "examples" / "train_shapes_clip.py"
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.py") if p != TRAINING)


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(script.parent.parent)}
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "report:" in result.stdout
    assert (tmp_path / "report.html").exists()


def test_training_script_trains_saves_and_evaluates_a_model(tmp_path: Path) -> None:
    """How the bundled model was made, run for a few steps: the saved checkpoint loads
    through the user path and the held-out report is written."""
    out = tmp_path / "shapes-clip"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            str(TRAINING),
            "--out",
            str(out),
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--eval-scenes",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "saved to" in result.stdout
    assert (out / "model.safetensors").exists() and (out / "TRAINING.md").exists()
