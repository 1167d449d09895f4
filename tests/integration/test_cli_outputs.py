"""Every (query kind, hit kind) pair through every output of the CLI: text lines, JSON lines
and the HTML report, for ``search --explain`` and ``explain POINT`` (a text-text pair has no
heatmap: the report once crashed on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdrant_xai.cli import main
from qdrant_xai.demo.world import write_scene_folder

PAIRS = [("text", "image"), ("text", "text"), ("image", "image"), ("image", "text")]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> list[str]:
    root = tmp_path_factory.mktemp("cli-outputs")
    images = root / "images"
    csv = write_scene_folder(images, 4, seed=12, size=64)
    common = ["--path", str(root / "qdrant"), "--collection", "c", "--model", str(tiny_model_dir)]
    assert main(["index", str(images), "--captions", str(csv), "--no-progress", *common]) == 0
    return [*common, "--image-root", str(images)]


def _query(kind: str, common: list[str]) -> list[str]:
    if kind == "text":
        return ["a red circle"]
    images = Path(common[common.index("--image-root") + 1])
    return ["--image", str(images / "scene_0001.png")]


@pytest.mark.parametrize(("query_kind", "hit_kind"), PAIRS)
def test_search_explain_writes_every_output_for_every_pair(
    query_kind: str,
    hit_kind: str,
    indexed: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["search", *_query(query_kind, indexed), "--hit-kind", hit_kind, "--limit", "3"]
    args += ["--explain", *indexed]
    assert main(args) == 0
    text = capsys.readouterr().out
    shown = "heatmap peak" if query_kind == hit_kind == "image" else "top words"
    assert text.count(shown) == 3
    assert main([*args, "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 3
    for record in records:
        assert record["status"] == "ok" and record["error"] is None
        assert (record["query_kind"], record["hit_kind"]) == (query_kind, hit_kind)
        assert bool(record["words"]) == ("text" in (query_kind, hit_kind))
        assert (record["heatmap"] is None) == (query_kind == hit_kind == "text")
    report = tmp_path / "report.html"
    assert main([*args, "--html", str(report)]) == 0
    capsys.readouterr()
    page = report.read_text(encoding="utf-8")
    assert page.count("class='hit'") == 3 and "no overlay" not in page
    # one point explained on its own, through the same outputs
    point = str(records[0]["id"])
    query = ["--text", "a red circle"] if query_kind == "text" else _query("image", indexed)
    single = tmp_path / "one.html"
    assert main(["explain", point, *query, *indexed, "--json", "--html", str(single)]) == 0
    (one,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert one["id"] == records[0]["id"] and one["status"] == "ok"
    assert single.read_text(encoding="utf-8").count("class='hit'") == 1
