"""Collections qdrant-xai did not write: explain their hits, check their vectors, backfill."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import (
    ClipEncoder,
    Explainer,
    FeaturesMissingError,
    ModelMismatchError,
    PayloadKeys,
    Searcher,
)
from qdrant_xai.cli import main
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.storage.backfill import Backfiller
from qdrant_xai.storage.layouts import LAYOUTS, CollectionLayout, layout_named
from qdrant_xai.storage.schema import CollectionError
from qdrant_xai.storage.sidecar import Sidecar
from qdrant_xai.storage.vector_check import check_vectors
from qdrant_xai.testing import build_tiny_clip, write_tutorial_collection


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("foreign-scenes")
    csv = write_scene_folder(folder, 8, seed=31, size=64)
    captions = {}
    for line in csv.read_text(encoding="utf-8").splitlines()[1:]:
        name, caption = line.split(",", 1)
        captions[str(folder / name)] = caption.strip('"')
    return folder, captions


def _langchain_collection(
    client: QdrantClient, name: str, encoder: ClipEncoder, captions: dict[str, str]
) -> None:
    """What langchain-qdrant's QdrantVectorStore writes: one unnamed vector, page_content
    and metadata; images embedded with the CLIP image tower, captions with the text tower."""
    client.create_collection(
        name, vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
    )
    paths = list(captions)
    image_vectors = encoder.embed_images([Path(p) for p in paths])
    text_vectors = encoder.embed_texts(list(captions.values()))
    points = [
        models.PointStruct(
            id=i,
            vector=image_vectors[i].tolist(),
            payload={"page_content": Path(p).name, "metadata": {"source": p, "kind": "photo"}},
        )
        for i, p in enumerate(paths)
    ] + [
        models.PointStruct(
            id=100 + i,
            vector=text_vectors[i].tolist(),
            payload={"page_content": caption, "metadata": {"kind": "caption"}},
        )
        for i, caption in enumerate(captions.values())
    ]
    client.upsert(name, points=points)


def _expected_heatmap(encoder: ClipEncoder, source: str, query: str) -> np.ndarray:
    contributions = encoder.encode_images([Path(source)])[0].contributions
    return contributions @ encoder.embed_texts([query])[0]


def test_langchain_collection_is_searched_and_explained_by_recomputing(
    client: QdrantClient,
    collection_name: str,
    tiny_encoder: ClipEncoder,
    scenes: tuple[Path, dict[str, str]],
) -> None:
    folder, captions = scenes
    _langchain_collection(client, collection_name, tiny_encoder, captions)
    searcher = Searcher(client, tiny_encoder, collection_name=collection_name, layout="langchain")
    query = "a red circle"
    hits = [h for h in searcher.search_images(query, limit=12) if h.payload and
            "source" in h.payload["metadata"]][:3]  # fmt: skip
    before = copy.deepcopy(hits)
    explainer = Explainer(
        tiny_encoder,
        client,
        collection_name=collection_name,
        layout="langchain",
        image_roots=[folder],
    )
    explanations = explainer.explain(query, hits)
    assert hits == before
    for e in explanations:
        assert e.hit_kind == "image" and e.image_source is not None
        np.testing.assert_allclose(
            e.heatmap, _expected_heatmap(tiny_encoder, e.image_source, query), atol=1e-4
        )
    # caption points are text hits: their words are explained; the one vector of the
    # collection also finds image points (their page_content is a file name): they are
    # explained as the images they are, never as texts
    text_hits = searcher.search_texts(folder / "scene_0002.png", limit=16)
    explained = explainer.explain(folder / "scene_0002.png", text_hits, hit_kind="text")
    assert all(e.ok for e in explained)
    for e in explained:
        if e.hit.payload["metadata"]["kind"] == "caption":
            assert e.hit_kind == "text" and e.words
            assert e.text == e.hit.payload["page_content"]
        else:
            assert e.hit_kind == "image" and e.heatmap is not None
    assert {e.hit_kind for e in explained} == {"image", "text"}
    # without allowed roots nothing is read, and the error says how to fix it
    with pytest.raises(FeaturesMissingError, match="image_roots"):
        Explainer(
            tiny_encoder, client, collection_name=collection_name, layout="langchain", sidecar=False
        ).explain(query, hits, errors="raise")


def test_vector_check_catches_another_model(
    tiny_encoder: ClipEncoder, scenes: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, captions = scenes
    client = QdrantClient(":memory:")
    write_tutorial_collection(client, "tut", tiny_encoder, captions)
    policy = ImageSourcePolicy.from_roots([folder])
    result = check_vectors(
        client, "tut", tiny_encoder, layout="qdrant-tutorial", sources=policy, sample=4
    )
    assert result.ok and result.checked == 4 and min(result.agreement) > 0.999
    other = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "other", seed=5))
    with pytest.raises(ModelMismatchError, match="do not come from"):
        check_vectors(client, "tut", other, layout="qdrant-tutorial", sources=policy, sample=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lenient = check_vectors(
            client, "tut", other, layout="qdrant-tutorial", sources=policy, on_mismatch="warn"
        )
    assert not lenient.ok and any("do not come from" in str(w.message) for w in caught)
    wide = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "wide", projection_dim=24))
    with pytest.raises(ModelMismatchError, match="dimension"):
        check_vectors(client, "tut", wide, layout="qdrant-tutorial", sources=policy)


def test_backfill_writes_features_once_and_leaves_vectors_alone(
    client: QdrantClient,
    collection_name: str,
    tiny_encoder: ClipEncoder,
    scenes: tuple[Path, dict[str, str]],
) -> None:
    folder, captions = scenes
    write_tutorial_collection(client, collection_name, tiny_encoder, captions)
    before = client.scroll(collection_name, limit=100, with_payload=True, with_vectors=True)[0]
    # before the backfill: explained by recomputing from the images
    searcher = Searcher(
        client, tiny_encoder, collection_name=collection_name, layout="qdrant-tutorial"
    )
    on_demand = Explainer(
        tiny_encoder,
        client,
        collection_name=collection_name,
        layout="qdrant-tutorial",
        image_roots=[folder],
    ).explain("a blue square", searcher.search_images("a blue square", limit=2))
    for e in on_demand:
        assert e.image_source is not None and e.image is not None  # it was read
        np.testing.assert_allclose(
            e.heatmap, _expected_heatmap(tiny_encoder, e.image_source, "a blue square"), atol=1e-4
        )
    backfiller = Backfiller(
        client,
        tiny_encoder,
        collection_name=collection_name,
        layout="qdrant-tutorial",
        sources=ImageSourcePolicy.from_roots([folder]),
        batch_size=3,
    )
    # explaining wrote the features of its 2 hits through to the sidecar: the backfill
    # computes the other 6
    first = backfiller.run(progress=False, max_points=4)  # an interrupted run...
    assert first.updated + first.unchanged == 4 and not first.failed
    second = backfiller.run(progress=False)  # ...resumes
    assert second.updated + second.unchanged == 8 and not second.failed
    assert first.updated + second.updated == 6
    third = backfiller.run(progress=False)
    assert (third.updated, third.unchanged) == (0, 8)
    after = client.scroll(collection_name, limit=100, with_payload=True, with_vectors=True)[0]
    assert after == before  # the collection itself is byte-identical
    entries = Sidecar(client, collection_name).read([p.id for p in before])
    assert len(entries) == 8
    for entry in entries.values():
        assert entry["image"][PayloadKeys.FINGERPRINT] == tiny_encoder.fingerprint.key
    # explained from the stored features now: no image root needed
    hits = Searcher(
        client, tiny_encoder, collection_name=collection_name, layout="qdrant-tutorial"
    ).search_images("a blue square", limit=3)
    explanations = Explainer(
        tiny_encoder, client, collection_name=collection_name, layout="qdrant-tutorial"
    ).explain("a blue square", hits)
    for e in explanations:
        assert e.image_source is not None and e.image is None  # sidecar features, no read
        np.testing.assert_allclose(
            e.heatmap, _expected_heatmap(tiny_encoder, e.image_source, "a blue square"), atol=2e-3
        )
    # image -> text on the same points: the caption is the text
    text_hits = Searcher(
        client, tiny_encoder, collection_name=collection_name, layout="qdrant-tutorial"
    ).search_texts(folder / "scene_0001.png", limit=2)
    for e in Explainer(
        tiny_encoder, client, collection_name=collection_name, layout="qdrant-tutorial"
    ).explain(folder / "scene_0001.png", text_hits, hit_kind="text"):
        assert e.text == e.hit.payload["caption"] and e.words  # type: ignore[index]


def test_backfill_refuses_points_of_another_model(
    tiny_encoder: ClipEncoder, scenes: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, captions = scenes
    client = QdrantClient(":memory:")
    _langchain_collection(client, "lc", tiny_encoder, captions)
    other = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "other", seed=7))
    summary = Backfiller(
        client,
        other,
        collection_name="lc",
        layout="langchain",
        sources=ImageSourcePolicy.from_roots([folder]),
    ).run(progress=False)
    assert summary.updated == 0 and len(summary.failed) == 16
    assert all("another model" in reason for _, reason in summary.failed)
    points = client.scroll("lc", limit=100, with_payload=True)[0]
    assert all(PayloadKeys.FEATURES not in (p.payload or {}) for p in points)


def test_backfill_command(
    tiny_model_dir: Path, scenes: tuple[Path, dict[str, str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    folder, captions = scenes
    path = tmp_path / "q"
    client = QdrantClient(path=str(path))
    _langchain_collection(client, "lc", ClipEncoder.from_pretrained(tiny_model_dir), captions)
    client.close()
    common = ["--path", str(path), "--collection", "lc", "--model", str(tiny_model_dir)]
    args = ["backfill", "--layout", "langchain", "--image-root", str(folder), "--no-progress"]
    assert main([*args, *common]) == 0
    assert "backfilled 16 points; 0 unchanged; 0 skipped" in capsys.readouterr().out
    assert main([*args, *common]) == 0
    assert "backfilled 0 points; 16 unchanged" in capsys.readouterr().out
    search = ["search", "a red circle", "--layout", "langchain", "--explain", "--json"]
    assert main([*search, "--limit", "2", *common]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2
    for record in records:  # one vector holds both kinds: each hit is explained as what it is
        if record["hit_kind"] == "image":
            assert record["heatmap"] is not None and record["words_side"] == "query"
        else:
            assert record["text"] == record["payload"]["page_content"] and record["words"]


def test_layout_presets_read_their_payloads() -> None:
    llama = layout_named("llamaindex")
    node = {"_node_content": json.dumps({"text": "a cat", "image_path": "/x/cat.png"})}
    assert llama.image_source(node) == "/x/cat.png"
    assert llama.text({"_node_content": json.dumps({"text": "a cat"})}) == "a cat"
    assert layout_named("fastembed").text({"document": "hello"}) == "hello"
    langchain = layout_named("langchain")
    png = "iVBORw0KGgo" + "A" * 80  # base64 of a PNG signature
    assert langchain.image_source({"page_content": png, "metadata": {}}) == png
    assert langchain.text({"page_content": png}) is None
    assert langchain.text({"page_content": "a dog on a beach"}) == "a dog on a beach"
    assert set(LAYOUTS) == {"qdrant-xai", "langchain", "llamaindex", "fastembed", "qdrant-tutorial"}
    with pytest.raises(ValueError, match="choose one of"):
        layout_named("haystack")


def test_layout_resolves_vector_names_against_the_collection() -> None:
    client = QdrantClient(":memory:")
    params = models.VectorParams(size=4, distance=models.Distance.COSINE)
    client.create_collection("fe", vectors_config={"fast-bge-small-en": params})
    resolved = layout_named("fastembed").resolve(client, "fe")
    assert resolved.image_vector == resolved.text_vector == "fast-bge-small-en"
    client.create_collection("li", vectors_config=params)
    assert layout_named("llamaindex").resolve(client, "li").using("text") is None
    with pytest.raises(CollectionError, match="none matching"):
        CollectionLayout("mine", image_vector="pixels").resolve(client, "fe")


def test_repair_rewrites_damaged_features_and_nothing_else(
    tiny_encoder: ClipEncoder,
    tiny_model_dir: Path,
    scenes: tuple[Path, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A point with this model's fingerprint but damaged features (or crop box, or words)
    is refused by the explainer; `backfill --repair` rewrites exactly those points."""
    from qdrant_xai import FeatureCodecError, Indexer

    folder, _ = scenes
    storage = str(tmp_path / "qdrant")
    client = QdrantClient(path=storage)
    Indexer(client, tiny_encoder, collection_name="own").index_folder(
        folder, captions=folder / "captions.csv", progress=False
    )
    records, _ = client.scroll("own", limit=100, with_payload=True)
    before = {r.id: r.payload for r in records}
    images = [r.id for r in records if before[r.id]["xai_kind"] == "image"]  # type: ignore[index]
    texts = [r.id for r in records if before[r.id]["xai_kind"] == "text"]  # type: ignore[index]
    cut = dict(before[images[0]][PayloadKeys.FEATURES])  # type: ignore[index]
    cut["data"] = cut["data"][:-8]
    client.set_payload("own", {PayloadKeys.FEATURES: cut}, points=[images[0]])
    client.set_payload("own", {PayloadKeys.CROP_BOX: [0, 0, 10**6, 10]}, points=[images[1]])
    client.set_payload("own", {PayloadKeys.WORDS: [["elsewhere", 0, 9]]}, points=[texts[0]])

    hits = Searcher(client, tiny_encoder, collection_name="own").search_images("a red", limit=8)
    damaged_hit = [h for h in hits if h.id == images[1]]
    with pytest.raises(FeatureCodecError, match="backfill --repair"):
        Explainer(tiny_encoder, client, collection_name="own").explain(
            "x", damaged_hit, errors="raise"
        )
    policy = ImageSourcePolicy.from_roots([folder])
    plain = Backfiller(client, tiny_encoder, collection_name="own", sources=policy)
    assert plain.run(progress=False).updated == 0  # without repair: current, left alone
    client.close()

    argv = ["backfill", "--collection", "own", "--path", storage, "--model", str(tiny_model_dir)]
    assert main([*argv, "--image-root", str(folder), "--repair", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "backfilled 3 points (3 with damaged features); " in out, out

    client = QdrantClient(path=storage)
    after = {r.id: r.payload for r in client.scroll("own", limit=100, with_payload=True)[0]}
    assert after == before  # the three rewritten as the indexer wrote them, the rest untouched
    hits = Searcher(client, tiny_encoder, collection_name="own").search_images("a red", limit=8)
    explained = Explainer(tiny_encoder, client, collection_name="own").explain("x", hits)
    assert len(explained) == len(hits)
    client.close()
