"""``inspect_collection`` and ``qdrant-xai inspect`` on collections written by the real
langchain-qdrant and LlamaIndex code (``tests/integration/foreign``'s writers), and on
qdrant-xai's own; custom layouts from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.cli import main
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.storage.backfill import Backfiller
from qdrant_xai.storage.detect import inspect_collection, resolve_layout
from qdrant_xai.testing import build_tiny_clip
from tests.integration.foreign import langchain_writers, llamaindex_writers
from tests.integration.foreign.writers import Scenes, collection_names, snapshot


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Scenes:
    return Scenes.write(tmp_path_factory.mktemp("inspect-scenes"))


@pytest.fixture(scope="module")
def other_encoder(tmp_path_factory: pytest.TempPathFactory) -> ClipEncoder:
    return ClipEncoder.from_pretrained(build_tiny_clip(tmp_path_factory.mktemp("o"), seed=5))


def test_a_langchain_text_and_image_collection(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, scenes: Scenes
) -> None:
    langchain_writers.write_mixed(client, collection_name, tiny_encoder, scenes)
    before, names = snapshot(client, collection_name), collection_names(client)
    policy = ImageSourcePolicy.from_roots([scenes.root])
    report = inspect_collection(client, collection_name, encoder=tiny_encoder, sources=policy)
    assert (report.writer, report.detected, report.points, report.sampled) == (
        "langchain", True, 11, 11
    )  # fmt: skip
    assert [(v.name, v.size, v.distance) for v in report.vectors] == [("", 16, "Cosine")]
    # 6 CSVLoader rows (metadata.source = the CSV), 3 images by path, 2 as raw base64
    assert (report.images, report.texts, report.both, report.neither) == (5, 6, 0, 0)
    assert dict(report.image_keys) == {"metadata.source [path]": 3, "page_content [base64]": 2}
    assert dict(report.text_keys) == {"page_content": 6}
    ((key, count, example),) = report.not_images
    assert (key, count) == ("metadata.source", 6) and "captions.csv" in example
    for agreement, checked in ((report.image_agreement, 5), (report.text_agreement, 6)):
        assert agreement.checked == checked and agreement.ok and agreement.minimum > 0.999  # type: ignore[operator]
    assert (report.image_hits.explainable, report.image_hits.on_demand) == (5, 5)
    assert (report.text_hits.explainable, report.text_hits.sampled) == (6, 6)
    assert report.sidecar is None and report.image_hits.stored == 0
    text = str(report)
    assert "written by: LangChain" in text and "(unnamed): 16 dims, Cosine" in text
    assert json.loads(json.dumps(report.to_dict()))["sample"]["not_images"][0]["count"] == 6
    # without image roots, only the inline images can be read, and the report says how
    blind = inspect_collection(client, collection_name, encoder=tiny_encoder)
    assert (blind.image_hits.explainable, blind.image_hits.sampled) == (2, 5)
    assert "--image-root" in (blind.image_hits.reason or "")
    assert blind.image_agreement.checked == 2 and blind.image_agreement.skipped == 3
    # looking changed nothing
    assert snapshot(client, collection_name) == before
    assert collection_names(client) == names


def test_another_model_is_reported_per_modality(
    tiny_encoder: ClipEncoder, other_encoder: ClipEncoder, scenes: Scenes, tmp_path: Path
) -> None:
    client = QdrantClient(":memory:")
    langchain_writers.write_mixed(client, "lc", tiny_encoder, scenes)
    policy = ImageSourcePolicy.from_roots([scenes.root])
    report = inspect_collection(client, "lc", encoder=other_encoder, sources=policy)
    assert report.image_agreement.ok is False and report.text_agreement.ok is False
    assert report.image_hits.explainable == 0 and report.text_hits.explainable == 0
    assert "disagree" in (report.text_hits.reason or "")
    assert "DISAGREE" in str(report)
    wide = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "wide", projection_dim=24))
    report = inspect_collection(client, "lc", encoder=wide, sources=policy)
    assert report.image_agreement.checked == 0
    assert "16 dims" in (report.image_agreement.reason or "")


def test_llamaindex_texts_are_re_encoded_as_llamaindex_embedded_them(
    tiny_encoder: ClipEncoder, scenes: Scenes
) -> None:
    client = QdrantClient(":memory:")
    written = llamaindex_writers.write_nodes(client, "nodes", tiny_encoder, scenes)
    layout = resolve_layout(client, "nodes")
    assert layout.name == "llamaindex"
    embedded = {p.id: p.embedded_text for p in written.points}
    for record in client.scroll("nodes", limit=100, with_payload=True)[0]:
        text = layout.text(record.payload or {})
        assert text == embedded[str(record.id)] and " | " in text  # its custom separator
        assert layout.image_source(record.payload or {}) is None  # file_path: the picture
    report = inspect_collection(client, "nodes", encoder=tiny_encoder)
    assert (report.texts, report.images, report.both) == (6, 0, 0)
    assert report.text_agreement.checked == 6 and report.text_agreement.ok


def test_a_sidecar_and_stored_features_are_counted(
    tiny_encoder: ClipEncoder, scenes: Scenes, tmp_path: Path
) -> None:
    client = QdrantClient(":memory:")
    langchain_writers.write_mixed(client, "lc", tiny_encoder, scenes)
    policy = ImageSourcePolicy.from_roots([scenes.root])
    Backfiller(client, tiny_encoder, collection_name="lc", sources=policy).run(progress=False)
    report = inspect_collection(client, "lc", encoder=tiny_encoder)  # no image roots now
    assert report.sidecar == "lc__xai"
    assert (report.image_hits.sidecar, report.image_hits.explainable) == (5, 5)
    assert report.text_hits.sidecar == 6
    assert "from the sidecar 'lc__xai'" in str(report)
    assert inspect_collection(client, "lc", sidecar=False).sidecar is None

    own = tmp_path / "own"
    Indexer(client, tiny_encoder, collection_name="own").index_folder(
        scenes.root / "images", captions=scenes.csv, progress=False
    )
    mine = inspect_collection(client, "own", encoder=tiny_encoder)
    assert mine.writer == "qdrant-xai" and not own.exists()
    assert mine.image_hits.stored == mine.image_hits.sampled == mine.image_hits.explainable == 6
    assert mine.text_hits.stored == 6 and mine.text_agreement.ok


def test_the_inspect_command(
    tiny_model_dir: Path, scenes: Scenes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = str(tmp_path / "q")
    client = QdrantClient(path=storage)
    langchain_writers.write_mixed(
        client, "docs", ClipEncoder.from_pretrained(tiny_model_dir), scenes
    )
    client.close()
    common = ["--path", storage, "--model", str(tiny_model_dir)]
    assert main(["inspect", "docs", "--image-root", str(scenes.root), *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("collection 'docs': 11 points\nwritten by: LangChain")
    assert "images: 5 (metadata.source [path]: 3, page_content [base64]: 2)" in out
    assert "image hits: 5 of 5 sampled" in out and "text hits: 6 of 6 sampled" in out
    assert main(["inspect", "docs", "--json", "--sample", "4", "--no-model", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["writer"], report["sample"]["points"], report["model"]) == (
        "langchain", 4, None
    )  # fmt: skip
    assert main(["inspect", "nope", *common]) == 1
    assert "does not exist" in capsys.readouterr().err
    # a layout named on the command line is used as given
    argv = ["inspect", "docs", "--no-model", "--vector", "", "--text-key", "page_content"]
    assert main([*argv, *common]) == 0
    out = capsys.readouterr().out
    assert "(layout given)" in out and "layout 'custom'" in out and "images: 0" in out


def test_custom_layouts_from_the_command_line(
    tiny_model_dir: Path, scenes: Scenes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A collection no preset fits: the text under ``body.text``, one vector named ``clip``."""
    from qdrant_client import models

    storage = str(tmp_path / "q")
    encoder = ClipEncoder.from_pretrained(tiny_model_dir)
    client = QdrantClient(path=storage)
    captions = [s.caption for s in scenes.items]
    client.create_collection(
        "mine", vectors_config={"clip": models.VectorParams(size=16, distance="Cosine")}
    )
    client.upsert(
        "mine",
        points=[
            models.PointStruct(id=i, vector={"clip": v.tolist()}, payload={"body": {"text": c}})
            for i, (c, v) in enumerate(zip(captions, encoder.embed_texts(captions), strict=True))
        ],
    )
    client.close()
    common = ["--path", storage, "--model", str(tiny_model_dir), "--collection", "mine"]
    assert main(["search", "a red circle", "--hit-kind", "text", "--explain", *common]) == 1
    assert "--text-key KEY" in capsys.readouterr().err  # not recognised: says what to pass
    custom = ["--vector", "clip", "--text-key", "body.text"]
    search = ["search", "a red circle", "--hit-kind", "text", "--explain", "--json"]
    assert main([*search, *custom, *common]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records and all(r["text"] in captions and r["words"] for r in records)
