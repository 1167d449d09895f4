"""Staleness probes of issue 14, rerun through the command line: an image file overwritten
with another picture of the same size, an edited caption, a model whose attention weights
changed (a merged LoRA keeps the projections, which were all the old fingerprint hashed),
and points carrying the projection-only key of earlier releases. Each must be re-encoded by
``index`` / ``backfill`` or refused per hit by ``search --explain``, never reported
unchanged nor explained as current. Also the fingerprint's cost."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from qdrant_client import QdrantClient
from transformers import CLIPConfig, CLIPModel

from qdrant_xai.cli import main
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.encoding.fingerprint import hash_weights
from qdrant_xai.storage.schema import image_point_id
from qdrant_xai.testing import build_tiny_clip
from tests.integration.test_staleness_model import merged_lora

pytestmark = [pytest.mark.hardening, pytest.mark.slow]  # CLI runs of a few seconds each

N_IMAGES = 6


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _unchanged(out: str) -> int:
    found = re.search(r"(\d+) unchanged", out)
    assert found, out
    return int(found.group(1))


def _explained(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.strip().splitlines()]


@pytest.fixture
def cli_world(tmp_path: Path) -> dict[str, Any]:
    folder = tmp_path / "imgs"
    csv = write_scene_folder(folder, N_IMAGES, seed=8, size=64)
    model = build_tiny_clip(tmp_path / "model")
    where = ["--path", str(tmp_path / "q"), "--collection", "c"]
    return {"folder": folder, "csv": csv, "model": model, "where": where, "tmp": tmp_path}


def _index(capsys: pytest.CaptureFixture[str], w: dict[str, Any], model: Path) -> str:
    code, out, err = _run(
        capsys,
        "index",
        str(w["folder"]),
        "--captions",
        str(w["csv"]),
        "--model",
        str(model),
        "--no-progress",
        *w["where"],
    )
    assert code == 0 and "Traceback" not in err, err
    return out


def _search_explain(
    capsys: pytest.CaptureFixture[str], w: dict[str, Any], model: Path, *extra: str
) -> list[dict[str, Any]]:
    code, out, err = _run(
        capsys,
        "search",
        "a red circle",
        "--limit",
        str(N_IMAGES),
        "--explain",
        "--json",
        "--model",
        str(model),
        *extra,
        *w["where"],
    )
    assert code in (0, 1, 3) and "Traceback" not in err, err  # 1: all hits failed
    return _explained(out)


def test_the_staleness_cases_of_issue_14_are_caught(
    cli_world: dict[str, Any], capsys: pytest.CaptureFixture[str], figures: Any
) -> None:
    w, model = cli_world, cli_world["model"]
    caught: list[str] = []
    first = _index(capsys, w, model)
    assert f"indexed {N_IMAGES} images" in first

    # 1. a file overwritten in place with another picture of the same size
    other = w["tmp"] / "other"
    write_scene_folder(other, N_IMAGES, seed=90, size=64)
    photo = w["folder"] / "scene_0003.png"
    shutil.copyfile(other / photo.name, photo)
    stale = image_point_id(str(photo.resolve()))
    records = _search_explain(
        capsys, w, model, "--heatmap-method", "occlusion", "--image-root", str(w["folder"])
    )
    errors = {str(r["id"]): r["error"] for r in records}
    assert errors[stale]["type"] == "StaleFeaturesError", errors[stale]
    assert all(e is None for pid, e in errors.items() if pid != stale)
    again = _index(capsys, w, model)
    assert _unchanged(again) == N_IMAGES - 1  # the overwritten picture is re-encoded
    caught.append("overwritten file, same size")

    # 2. an edited caption: re-indexed, the old caption point removed
    lines = w["csv"].read_text(encoding="utf-8").splitlines()
    name, old_caption = lines[1].split(",", 1)
    lines[1] = f"{name},a purple caption somebody edited"
    w["csv"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    edited = _index(capsys, w, model)
    assert _unchanged(edited) == N_IMAGES - 1
    client = QdrantClient(path=w["where"][1])
    try:
        texts, _ = client.scroll("c", limit=100, with_payload=["text"])
    finally:
        client.close()
    stored = {str((r.payload or {}).get("text")) for r in texts}
    assert "a purple caption somebody edited" in stored and old_caption.strip('"') not in stored
    caught.append("edited caption")

    # 3. a merged-LoRA-like model: same projections, other attention weights
    lora = merged_lora(model, w["tmp"] / "lora")
    records = _search_explain(capsys, w, lora)
    assert records and all(r["error"]["type"] == "ModelMismatchError" for r in records)
    code, out, err = _run(
        capsys,
        "backfill",
        "--model",
        str(lora),
        "--image-root",
        str(w["folder"]),
        "--no-progress",
        *w["where"],
    )
    assert code in (0, 1, 3) and "Traceback" not in err and _unchanged(out) == 0, out + err
    reindexed = _index(capsys, w, lora)
    assert _unchanged(reindexed) == 0
    caught.append("merged-LoRA-like model")

    figures.record("stale", "issue 14 cases tried (CLI)", 3)
    figures.record("stale", "issue 14 cases caught (CLI)", len(caught))
    assert len(caught) == 3


def test_points_with_an_older_releases_key_are_reencoded(
    cli_world: dict[str, Any], capsys: pytest.CaptureFixture[str], figures: Any
) -> None:
    w, model = cli_world, cli_world["model"]
    _index(capsys, w, model)
    from qdrant_xai import ClipEncoder

    legacy = ClipEncoder.from_pretrained(model).fingerprint.legacy_key
    client = QdrantClient(path=w["where"][1])
    try:
        points, _ = client.scroll("c", limit=100, with_payload=False)
        client.set_payload("c", {"xai_fingerprint": legacy}, points=[p.id for p in points])
    finally:
        client.close()
    # explained after the vectors are checked (same model), not refused
    records = _search_explain(capsys, w, model, "--image-root", str(w["folder"]))
    assert records and all(r["error"] is None for r in records)
    assert _unchanged(_index(capsys, w, model)) == 0
    figures.record("stale", "legacy-key points re-encoded by index", len(points))


def test_fingerprint_cost(figures: Any, tmp_path: Path) -> None:
    """All weights are hashed: its cost on a ViT-B/32-sized and a tiny model (2 shared
    cores, noisy: a figure, with a loose bound)."""
    torch.manual_seed(0)
    big = CLIPModel(CLIPConfig()).eval()  # ViT-B/32's shapes, random weights
    tiny = CLIPModel.from_pretrained(build_tiny_clip(tmp_path / "tiny"))
    costs = {}
    for name, model in (("ViT-B/32-sized", big), ("tiny", tiny)):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            hash_weights(model)
            times.append(time.perf_counter() - started)
        costs[name] = min(times) * 1000
        figures.record("stale", f"fingerprint ms ({name}, best of 3)", round(costs[name], 1))
    assert costs["tiny"] < 200
    assert costs["ViT-B/32-sized"] < 5000
