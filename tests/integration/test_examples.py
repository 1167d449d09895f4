"""Every example script runs, offline, on the bundled models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

TRAINING = REPO / "examples" / "train_shapes_clip.py"
CLUTTER_TRAINING = REPO / "examples" / "train_clutter_clip.py"
EXAMPLES = sorted(
    p for p in (REPO / "examples").glob("*.py") if p not in (TRAINING, CLUTTER_TRAINING)
)


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


def test_clutter_training_script_trains_saves_and_evaluates_a_model(tmp_path: Path) -> None:
    """How the held-out benchmark models were made, run for a few steps, with a depth and
    patch grid other than the bundled model's."""
    out = tmp_path / "clutter-clip"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    args = ["--out", str(out), "--steps", "2", "--batch-size", "4", "--eval-scenes", "6"]
    args += ["--vision-layers", "2", "--image-size", "56", "--patch-size", "8"]
    result = subprocess.run(
        [sys.executable, str(CLUTTER_TRAINING), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pointing shares colour" in result.stdout
    report = (out / "TRAINING.md").read_text(encoding="utf-8")
    assert "| `vision_layers` | 2 |" in report and "| `image_size` | 56 |" in report
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["vision_config"]["num_hidden_layers"] == 2


def test_training_script_trains_a_siglip_with_the_sigmoid_loss(tmp_path: Path) -> None:
    """``--family siglip``, a few steps: the saved SigLIP loads through the user path,
    embeds images and texts into one space, and the held-out report is written."""
    from qdrant_xai import ClipEncoder
    from qdrant_xai.demo.world import generate_scenes

    out = tmp_path / "shapes-siglip"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    args = ["--family", "siglip", "--out", str(out), "--steps", "3", "--batch-size", "4"]
    args += ["--eval-scenes", "4", "--context-length", "16", "--threads", "1"]
    result = subprocess.run(
        [sys.executable, str(TRAINING), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pointing game, decomposition" in result.stdout
    report = (out / "TRAINING.md").read_text(encoding="utf-8")
    assert report.startswith("# shapes-siglip") and "| `family` | siglip |" in report
    encoder = ClipEncoder.from_pretrained(out)
    assert encoder.family.name == "siglip" and encoder.dim == 96
    scene = next(generate_scenes(1, seed=5, size=64))
    images = encoder.embed_images([scene.image])
    texts = encoder.embed_texts([scene.caption, "a red circle"])
    assert images.shape == (1, 96) and texts.shape == (2, 96)
    # texts are padded to the fixed length the model was trained with
    assert encoder.processor.tokenizer.model_max_length == 16
