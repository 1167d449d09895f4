"""The command line, run in-process and as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qdrant_xai.cli import main
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.testing import build_tiny_clip


@pytest.fixture(scope="module")
def unseen_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint the project never saw: odd 5x5 grid, other widths, other seed."""
    return build_tiny_clip(
        tmp_path_factory.mktemp("unseen"),
        image_size=40,
        patch_size=8,
        hidden_size=24,
        num_heads=3,
        projection_dim=12,
        seed=11,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-images")
    write_scene_folder(path, 6, seed=5, size=64)
    (path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path


def test_index_then_search_explain_json_with_any_checkpoint_directory(
    unseen_model: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--path", str(tmp_path / "q"), "--collection", "cli", "--model", str(unseen_model)]
    assert (
        main(
            [
                "index",
                str(folder),
                "--captions",
                str(folder / "captions.csv"),
                "--no-progress",
                *common,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "indexed 6 images and 6 texts" in out
    assert "broken.jpg" in out and "corrupt" in out

    assert main(["search", "a red circle", "--limit", "3", "--explain", "--json", *common]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
    for record in records:
        assert set(record) >= {"id", "score", "payload", "heatmap", "words"}
        assert "xai_features" not in record["payload"]
        assert len(record["heatmap"]) == 5 and all(len(row) == 5 for row in record["heatmap"])
        assert [w[0] for w in record["words"]] == ["a", "red", "circle"]
        assert all(isinstance(w[1], float) and len(w[2]) == 2 for w in record["words"])

    report = tmp_path / "report.html"
    image = folder / "scene_0002.png"
    assert main(["search", "--image", str(image), "--explain", "--html", str(report), *common]) == 0
    captured = capsys.readouterr()
    assert "top words (hit)" in captured.out and report.exists()
    assert "data:image/png;base64," in report.read_text()

    point_id = records[0]["id"]
    assert main(["explain", str(point_id), "--text", "a red circle", "--json", *common]) == 0
    (single,) = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert single["id"] == point_id
    assert single["score"] == pytest.approx(records[0]["score"], abs=1e-6)
    assert single["heatmap"] == records[0]["heatmap"]


def test_model_recorded_in_the_collection_is_used_by_search(
    unseen_model: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--path", str(tmp_path / "q"), "--collection", "c"]
    assert main(["index", str(folder), "--no-progress", "--model", str(unseen_model), *where]) == 0
    capsys.readouterr()
    assert main(["search", "a blue square", "--json", *where]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5


def test_errors_are_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unseen_model: Path
) -> None:
    assert (
        main(
            [
                "search",
                "x",
                "--path",
                str(tmp_path / "q"),
                "--collection",
                "nope",
                "--model",
                str(unseen_model),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: collection 'nope' does not exist")
    assert (
        main(
            [
                "index",
                str(tmp_path),
                "--path",
                str(tmp_path / "q"),
                "--model",
                str(tmp_path / "no-model"),
            ]
        )
        == 1
    )
    assert "no such model directory" in capsys.readouterr().err
    empty = tmp_path / "empty-model"
    empty.mkdir()
    assert main(["index", str(tmp_path), "--path", str(tmp_path / "q"), "--model", str(empty)]) == 1
    assert "no CLIP checkpoint in" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_an_unreachable_server_is_one_clear_error(
    capsys: pytest.CaptureFixture[str], unseen_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QDRANT_API_KEY", "secret-key-123")
    url = "http://127.0.0.1:9"  # discard port: nothing listens
    args = ["search", "x", "--url", url, "--model", str(unseen_model), "--retries", "2"]
    assert main(args) == 1
    err = capsys.readouterr().err
    *retries, final = err.strip().splitlines()
    assert final.startswith("error: ") and url in final
    assert len(retries) == 1 and retries[0].startswith("retrying: ") and url in retries[0]
    assert "secret-key-123" not in err


def test_console_script_help_lists_every_command() -> None:
    exe = shutil.which("qdrant-xai") or shutil.which(
        "qdrant-xai", path=str(Path(sys.executable).parent)
    )
    if exe is None:
        pytest.skip("the package is not installed (pip install -e .), no console script")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("index", "search", "explain", "demo"):
        assert command in result.stdout
