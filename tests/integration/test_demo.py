"""The offline demo and the quality of the bundled shapes model's heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qdrant_xai import ClipEncoder
from qdrant_xai.cli import main
from qdrant_xai.demo.run import DEFAULT_QUERIES, run_demo
from qdrant_xai.demo.world import generate_scenes
from qdrant_xai.eval import pointing_game

HELD_OUT_SEED = 424242  # neither the training seed nor the demo's


def test_demo_report_shows_each_top_hit_heatmap_on_the_named_shape(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", progress=False)
    assert result.summary.failed == []
    assert result.summary.indexed_images == 48 and result.summary.indexed_texts == 48
    page = result.report.read_text()
    for query in DEFAULT_QUERIES:
        assert query in page
    assert page.count("data:image/png;base64,") >= len(DEFAULT_QUERIES) * 4
    assert result.overlay is not None and result.overlay.exists()
    assert result.on_target == {query: True for query in DEFAULT_QUERIES}


def test_demo_command_prints_the_report_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path), "--no-progress", "--query", "a red circle"]) == 0
    out = capsys.readouterr().out
    assert f"report: {(tmp_path / 'report.html').resolve()}" in out
    assert "pointing: 1/1" in out


def test_decomposition_points_at_the_named_object_far_more_often_than_raw_patches(
    shapes_encoder: ClipEncoder,
) -> None:
    """Pointing game on held-out scenes: the hottest patch must overlap the named object."""
    scenes = list(generate_scenes(40, seed=HELD_OUT_SEED))
    features = shapes_encoder.encode_images([s.image for s in scenes], patch_tokens=True)
    decomposition = raw = total = 0
    for scene, feats in zip(scenes, features, strict=True):
        box = shapes_encoder.crop_box(*scene.image.size)
        queries = [f"a {obj.color} {obj.shape}" for obj in scene.objects]
        texts = shapes_encoder.embed_texts(queries)
        tokens = feats.patch_tokens / np.linalg.norm(feats.patch_tokens, axis=-1, keepdims=True)
        for obj, text in zip(scene.objects, texts, strict=True):
            decomposition += pointing_game(feats.contributions @ text, obj.mask, crop_box=box)
            raw += pointing_game(tokens @ text, obj.mask, crop_box=box)
            total += 1
    assert total > 60
    assert decomposition / total >= 0.75, (decomposition, raw, total)
    assert decomposition / total >= raw / total + 0.3


def test_demo_on_your_own_images_queries_with_their_captions(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from qdrant_xai import QdrantXaiError
    from qdrant_xai.demo.world import write_scene_folder

    captions = write_scene_folder(tmp_path / "mine", 5, seed=2, size=48)
    result = run_demo(
        tmp_path / "out",
        model=tiny_model_dir,
        images=tmp_path / "mine",
        captions=captions,
        progress=False,
    )
    first = captions.read_text().splitlines()[1].split(",", 1)[1].strip('"')
    assert first in result.explanations and len(result.explanations) == 3
    assert not result.synthetic and result.on_target == {}
    assert result.report.exists()
    with pytest.raises(QdrantXaiError, match="--query"):
        run_demo(tmp_path / "out2", model=tiny_model_dir, images=tmp_path / "mine", progress=False)
