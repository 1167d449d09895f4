"""``qdrant-xai inspect --candidate``: which of the models named wrote a collection's vectors.

A tiny CLIP and a tiny SigLIP of the same embedding size (16) each write one collection as
langchain-qdrant lays it out (one unnamed vector; images by path in ``metadata.source``,
captions in ``page_content``), so the vector size cannot tell them apart: re-encoding can.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder
from qdrant_xai.cli import main
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.storage.detect import inspect_collection
from qdrant_xai.storage.indexer import read_captions_csv
from qdrant_xai.testing import build_tiny_clip, build_tiny_siglip

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("candidates")
    return {
        "clip": build_tiny_clip(root / "clip", seed=3),
        "siglip": build_tiny_siglip(root / "siglip", hidden_size=16, seed=3),
    }


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("candidate-scenes")
    write_scene_folder(folder, 4, seed=9, size=64)
    return folder


def _write(client: QdrantClient, name: str, encoder: ClipEncoder, scenes: Path) -> None:
    captions = {n: c[0] for n, c in read_captions_csv(scenes / "captions.csv").items()}
    images = [scenes / n for n in sorted(captions)]
    client.create_collection(
        name, vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
    )
    image_vectors = encoder.embed_images(images)
    text_vectors = encoder.embed_texts([captions[p.name] for p in images])
    points = [
        models.PointStruct(
            id=i,
            vector=image_vectors[i].tolist(),
            payload={"page_content": p.name, "metadata": {"source": str(p)}},
        )
        for i, p in enumerate(images)
    ] + [
        models.PointStruct(
            id=100 + i,
            vector=text_vectors[i].tolist(),
            payload={"page_content": captions[p.name], "metadata": {}},
        )
        for i, p in enumerate(images)
    ]
    client.upsert(name, points=points)


def _snapshot(client: QdrantClient, name: str) -> list[tuple[object, object, object]]:
    points = client.scroll(name, limit=100, with_payload=True, with_vectors=True)[0]
    return sorted((str(p.id), p.payload, p.vector) for p in points)  # type: ignore[arg-type]


def test_the_writer_is_recognised_among_the_candidates(
    folders: dict[str, Path], scenes: Path
) -> None:
    client = QdrantClient(":memory:")
    encoders = {family: ClipEncoder.from_pretrained(path) for family, path in folders.items()}
    assert {e.dim for e in encoders.values()} == {16}  # the size cannot tell them apart
    policy = ImageSourcePolicy.from_roots([scenes])
    for writer, encoder in encoders.items():
        _write(client, writer, encoder, scenes)
        before = _snapshot(client, writer)
        report = inspect_collection(
            client, writer, sources=policy, candidates=[str(p) for p in folders.values()]
        )
        assert (
            _snapshot(client, writer) == before
            and client.collection_exists(f"{writer}__xai") is False
        )
        by_family = {c.family: c for c in report.candidates}
        assert set(by_family) == {"clip", "siglip"}
        right, wrong = by_family[writer], by_family[{"clip": "siglip", "siglip": "clip"}[writer]]
        assert right.checked == wrong.checked == 8  # 4 images, 4 captions
        assert right.matches and right.cosine is not None and right.cosine > 0.999
        assert right.image.checked == right.text.checked == 4
        assert not wrong.matches and wrong.cosine is not None and wrong.cosine < 0.9
        assert report.best_candidate is right
        assert f"best: {folders[writer]} ({writer})" in str(report)
        data = json.loads(json.dumps(report.to_dict()))
        assert data["best_candidate"] == str(folders[writer])
        assert [c["family"] for c in data["candidates"]] == ["clip", "siglip"]

        # only the wrong model named: none matches, and the report says so
        alone = inspect_collection(client, writer, sources=policy, candidates=[encoders[
            {"clip": "siglip", "siglip": "clip"}[writer]
        ]])  # fmt: skip
        assert alone.best_candidate is None
        assert "none matches: no candidate reproduces the stored vectors" in str(alone)
    client.close()


def test_the_inspect_command_with_candidates(
    folders: dict[str, Path], scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "q"
    client = QdrantClient(path=str(path))
    _write(client, "s", ClipEncoder.from_pretrained(folders["siglip"]), scenes)
    client.close()
    missing = tmp_path / "no-such-model"
    argv = [
        "inspect", "s", "--path", str(path), "--image-root", str(scenes), "--json",
        "--candidate", str(folders["clip"]), "--candidate", str(folders["siglip"]),
        "--candidate", str(missing),
    ]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] is None  # --candidate without --model: no other model loaded
    assert data["best_candidate"] == str(folders["siglip"])
    clip, siglip, absent = data["candidates"]
    assert siglip["matches"] and siglip["cosine"] > 0.999 and siglip["checked"] == 8
    assert not clip["matches"] and clip["family"] == "clip"
    assert absent["family"] is None and "no such model directory" in absent["error"]

    argv_text = [a for a in argv if a != "--json"]  # the text report
    assert main(argv_text) == 0
    out = capsys.readouterr().out
    assert "candidate models" in out and f"best: {folders['siglip']} (siglip)" in out
    assert f"{missing}: not compared" in out
