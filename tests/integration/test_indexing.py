"""Indexer on real embedded Qdrant with the tiny CLIP: odd and broken inputs, re-runs, schema."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient, models

from qdrant_xai import (
    ClipEncoder,
    ImageRecord,
    Indexer,
    PayloadFeatureCodec,
    PayloadKeys,
    SchemaMismatchError,
)
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.storage.schema import image_point_id, text_point_id

N_SCENES = 8
ODD_GOOD = ("cmyk.jpg", "palette.gif", "deep.png", "la.png")
BAD = {
    "corrupt.jpg": "corrupt or truncated image",
    "truncated.png": "corrupt or truncated image",
    "zero.png": "not an image Pillow can read",
    "sliver.png": "aspect ratio 150:1 exceeds 20:1",
}
# 40 one-token words: longer than the tiny model's 32-token context (30 words + BOS + EOS)
LONG_CAPTION = " ".join(["a red circle and a blue square and"] * 5)
CMYK_CAPTION = "a purple cross"


def _write_folder(root: Path) -> Path:
    """Scenes with captions, odd-mode images, broken files and awkward caption rows."""
    csv_path = write_scene_folder(root, N_SCENES, seed=3, size=64)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(root / "cmyk.jpg")
    rgb.convert("P").save(root / "palette.gif", transparency=0)
    Image.fromarray(rng.integers(0, 65536, (40, 40), dtype=np.uint16)).save(root / "deep.png")
    rgb.convert("LA").save(root / "la.png")
    png = root / "scene_0000.png"
    (root / "truncated.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(400))
    (root / "zero.png").write_bytes(b"")
    Image.new("RGB", (3000, 20), (9, 9, 9)).save(root / "sliver.png")
    (root / "notes.txt").write_text("not an image")
    with csv_path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["scene_0000.png", ""])
        writer.writerow(["scene_0001.png", LONG_CAPTION])
        writer.writerow(["cmyk.jpg", CMYK_CAPTION])
        writer.writerow(["missing.png", "a green cross"])
    return csv_path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    _write_folder(root)
    return root


def scene_captions(root: Path) -> dict[str, list[str]]:
    captions: dict[str, list[str]] = {}
    with (root / "captions.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            captions.setdefault(row["image"], []).append(row["caption"])
    return captions


def source(root: Path, name: str) -> str:
    return str((root / name).resolve())


def count(client: QdrantClient, collection_name: str) -> int:
    return client.count(collection_name, exact=True).count


def good_names() -> list[str]:
    return [f"scene_{i:04d}.png" for i in range(N_SCENES)] + list(ODD_GOOD)


# -- one full run -----------------------------------------------------------------------


def test_index_folder_with_odd_and_broken_inputs(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, folder: Path
) -> None:
    indexer = Indexer(client, tiny_encoder, collection_name=collection_name, batch_size=5)
    summary = indexer.index_folder(folder, captions=folder / "captions.csv", progress=False)

    n_images = N_SCENES + len(ODD_GOOD)
    n_texts = N_SCENES + 2  # scene captions, the long one and the CMYK image's
    assert summary.indexed_images == n_images
    assert summary.indexed_texts == n_texts
    assert summary.unchanged == 0
    assert count(client, collection_name) == n_images + n_texts

    assert len(summary.failed) == len(BAD) + 2
    failed = dict(summary.failed)
    for name, reason in BAD.items():
        assert reason in failed.pop(source(folder, name)), name
    assert failed.pop(source(folder, "scene_0000.png")) == "empty caption skipped"
    assert "no such image" in failed.pop("missing.png")
    assert failed == {}, failed

    assert len(summary.notes) == 1
    text, remark = summary.notes[0]
    assert LONG_CAPTION.startswith(text)
    assert "longer than the model's 32 tokens; indexed its first 30 words" in remark
    assert "skipped" in str(summary) and "note" in str(summary)

    # every good image is stored under its deterministic id
    stored = client.retrieve(
        collection_name, ids=[image_point_id(source(folder, n)) for n in good_names()]
    )
    assert len(stored) == n_images
    assert {p.payload[PayloadKeys.SOURCE] for p in stored} == {
        source(folder, n) for n in good_names()
    }

    # the second run changes nothing and says so
    again = indexer.index_folder(folder, captions=folder / "captions.csv", progress=False)
    assert (again.indexed_images, again.indexed_texts) == (0, 0)
    assert again.unchanged == n_images
    assert {s for s, _ in again.failed} == {*(source(folder, n) for n in BAD), "missing.png"}
    assert count(client, collection_name) == n_images + n_texts


def test_payloads_link_captions_and_images_both_ways(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, folder: Path
) -> None:
    Indexer(client, tiny_encoder, collection_name=collection_name).index_folder(
        folder, captions=folder / "captions.csv", progress=False
    )
    key = tiny_encoder.fingerprint.key
    codec = PayloadFeatureCodec()
    captions = scene_captions(folder)
    for name in good_names():
        image_id = image_point_id(source(folder, name))
        (point,) = client.retrieve(collection_name, ids=[image_id], with_vectors=True)
        payload = point.payload
        assert point.id == image_id
        assert payload[PayloadKeys.KIND] == "image"
        assert payload[PayloadKeys.SOURCE] == source(folder, name)
        with Image.open(folder / name) as image:
            assert (payload[PayloadKeys.WIDTH], payload[PayloadKeys.HEIGHT]) == image.size
        assert payload[PayloadKeys.CROP_BOX] == list(
            tiny_encoder.crop_box(payload[PayloadKeys.WIDTH], payload[PayloadKeys.HEIGHT])
        )
        assert payload[PayloadKeys.FINGERPRINT] == key
        features = codec.decode(payload[PayloadKeys.FEATURES], fingerprint=key, shape=(4, 4, 16))
        fresh = tiny_encoder.encode_images([folder / name])[0]
        np.testing.assert_allclose(features, fresh.contributions, rtol=2e-3, atol=1e-4)
        np.testing.assert_allclose(point.vector["image"], fresh.embedding, atol=1e-5)

        expected = [c for c in captions.get(name, []) if c.strip()]
        caption_ids = payload[PayloadKeys.CAPTION_IDS]
        assert caption_ids == [text_point_id(c, source(folder, name)) for c in expected]
        for caption_point in client.retrieve(collection_name, ids=caption_ids, with_vectors=True):
            text_payload = caption_point.payload
            assert text_payload[PayloadKeys.KIND] == "text"
            assert text_payload[PayloadKeys.IMAGE_ID] == image_id
            assert text_payload[PayloadKeys.TEXT] in expected
            assert text_payload[PayloadKeys.FINGERPRINT] == key
            words = text_payload[PayloadKeys.WORDS]
            text = text_payload[PayloadKeys.TEXT]
            assert all(text[start:end] == word for word, start, end in words)
            word_features = codec.decode(
                text_payload[PayloadKeys.FEATURES], fingerprint=key, shape=(len(words), 16)
            )
            assert np.isfinite(word_features).all()
            assert set(caption_point.vector) == {"text"}
    long_id = text_point_id(LONG_CAPTION, source(folder, "scene_0001.png"))
    (long_point,) = client.retrieve(collection_name, ids=[long_id])
    assert len(long_point.payload[PayloadKeys.WORDS]) == 30


def test_int8_codec_is_stored_and_decodes(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    write_scene_folder(tmp_path, 3, seed=5, size=64)
    indexer = Indexer(client, tiny_encoder, collection_name=collection_name, codec="int8")
    summary = indexer.index_folder(tmp_path, captions=tmp_path / "captions.csv", progress=False)
    assert (summary.indexed_images, summary.indexed_texts, summary.failed) == (3, 3, [])
    key = tiny_encoder.fingerprint.key
    for name in ("scene_0000.png", "scene_0001.png", "scene_0002.png"):
        (point,) = client.retrieve(collection_name, ids=[image_point_id(source(tmp_path, name))])
        stored = point.payload[PayloadKeys.FEATURES]
        assert stored["codec"] == "int8" and "scale" in stored
        decoded = PayloadFeatureCodec().decode(stored, fingerprint=key, shape=(4, 4, 16))
        fresh = tiny_encoder.encode_images([tmp_path / name])[0].contributions
        step = np.abs(fresh).max(axis=-1, keepdims=True) / 127
        assert (np.abs(decoded - fresh) <= step / 2 + 1e-4).all()


def test_interrupted_run_resumes_without_duplicates(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    csv_path = write_scene_folder(tmp_path, N_SCENES, seed=9, size=64)
    captions = scene_captions(tmp_path)
    names = sorted(captions)
    half = N_SCENES // 2
    indexer = Indexer(client, tiny_encoder, collection_name=collection_name, batch_size=3)
    first = indexer.index(
        (ImageRecord(source(tmp_path, n), tuple(captions[n])) for n in names[:half]),
        progress=False,
    )
    assert (first.indexed_images, first.indexed_texts) == (half, half)
    assert count(client, collection_name) == 2 * half

    rest = indexer.index_folder(tmp_path, captions=csv_path, progress=False)
    assert rest.unchanged == half
    assert rest.indexed_images == N_SCENES - half
    assert rest.indexed_texts == N_SCENES - half
    assert rest.failed == []
    assert count(client, collection_name) == 2 * N_SCENES
    images = client.count(
        collection_name,
        count_filter=models.Filter(
            must=[
                models.FieldCondition(key=PayloadKeys.KIND, match=models.MatchValue(value="image"))
            ]
        ),
        exact=True,
    ).count
    assert images == N_SCENES


# -- an existing collection that does not fit -------------------------------------------

VEC = models.VectorParams


@pytest.mark.parametrize(
    ("vectors", "differences"),
    [
        (
            {
                "image": VEC(size=8, distance=models.Distance.COSINE),
                "text": VEC(size=16, distance=models.Distance.COSINE),
            },
            ["vector 'image' has dimension 8, the model gives 16"],
        ),
        (
            {"image": VEC(size=16, distance=models.Distance.COSINE)},
            ["vector 'text' is missing"],
        ),
        (
            {
                "image": VEC(size=16, distance=models.Distance.EUCLID),
                "text": VEC(size=16, distance=models.Distance.EUCLID),
            },
            [
                "vector 'image' uses Euclid distance, not Cosine",
                "vector 'text' uses Euclid distance, not Cosine",
            ],
        ),
        (
            {"image": VEC(size=32, distance=models.Distance.EUCLID)},
            [
                "vector 'image' has dimension 32, the model gives 16",
                "vector 'image' uses Euclid distance, not Cosine",
                "vector 'text' is missing",
            ],
        ),
        (
            VEC(size=16, distance=models.Distance.COSINE),
            ["it has one unnamed vector; qdrant-xai needs named vectors 'image' and 'text'"],
        ),
    ],
    ids=["dimension", "missing-vector", "euclid", "all-at-once", "unnamed"],
)
def test_mismatched_collection_is_refused_and_left_alone(
    client: QdrantClient,
    collection_name: str,
    tiny_encoder: ClipEncoder,
    tmp_path: Path,
    vectors: models.VectorParams | dict[str, models.VectorParams],
    differences: list[str],
) -> None:
    client.create_collection(collection_name, vectors_config=vectors)
    # a unit vector, stored as given by every distance
    if isinstance(vectors, dict):
        name, params = next(iter(vectors.items()))
        vector: object = {name: [1.0] + [0.0] * (params.size - 1)}
    else:
        vector = [1.0] + [0.0] * (vectors.size - 1)
    client.upsert(
        collection_name,
        points=[models.PointStruct(id=1, vector=vector, payload={"keep": "me"})],
        wait=True,
    )
    write_scene_folder(tmp_path, 2, seed=1, size=64)
    indexer = Indexer(client, tiny_encoder, collection_name=collection_name)
    with pytest.raises(SchemaMismatchError) as info:
        indexer.index_folder(tmp_path, captions=tmp_path / "captions.csv", progress=False)
    prefix = f"collection {collection_name!r} cannot hold this model's points: "
    suffix = ". Use another --collection, or delete this one to recreate it"
    # every difference is named, and nothing else
    assert str(info.value) == prefix + "; ".join(differences) + suffix
    with pytest.raises(SchemaMismatchError):
        indexer.index_texts(["a red circle"])

    assert count(client, collection_name) == 1
    (point,) = client.retrieve(collection_name, ids=[1], with_vectors=True)
    assert point.payload == {"keep": "me"}
    assert point.vector == vector
    assert client.get_collection(collection_name).config.params.vectors == vectors


def test_small_request_cap_splits_upserts_without_losing_points(
    client: QdrantClient, collection_name: str, tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    captions = write_scene_folder(tmp_path / "scenes", 9, seed=4, size=48)
    calls: list[int] = []
    upsert = client.upsert

    def counting_upsert(*args: object, **kwargs: object) -> object:
        calls.append(len(kwargs["points"]))  # type: ignore[arg-type]
        return upsert(*args, **kwargs)  # type: ignore[arg-type]

    client.upsert = counting_upsert  # type: ignore[method-assign]
    # room for two points per request: one image point with features is ~3.3 KB here
    indexer = Indexer(
        client, tiny_encoder, collection_name=collection_name, batch_size=4, max_request_bytes=7000
    )
    summary = indexer.index_folder(tmp_path / "scenes", captions=captions, progress=False)
    assert summary.indexed_images == 9 and summary.indexed_texts == 9
    assert max(calls) <= 2 and sum(calls) == 18
    assert count(client, collection_name) == 18


def test_texts_that_are_not_valid_unicode_are_reported_and_the_rest_indexed(
    client: QdrantClient, tiny_encoder: ClipEncoder, collection_name: str, tmp_path: Path
) -> None:
    write_scene_folder(tmp_path, 2, seed=5, size=64)
    broken = b"a red caf\xe9".decode("utf-8", "surrogateescape")  # lone surrogate inside
    indexer = Indexer(client, tiny_encoder, collection_name=collection_name, batch_size=2)
    records = [
        ImageRecord(source(tmp_path, "scene_0000.png"), ("a red circle", broken)),
        ImageRecord(source(tmp_path, "scene_0001.png"), ("a blue square",)),
    ]
    summary = indexer.index(records, progress=False)
    texts = indexer.index_texts(["a green cross", broken])
    assert (summary.indexed_images, summary.indexed_texts) == (2, 2)
    assert texts.indexed_texts == 1
    for result in (summary, texts):
        assert len(result.failed) == 1
        label, reason = result.failed[0]
        assert "not valid Unicode" in reason and label == "a red caf\\xe9"
    assert count(client, collection_name) == 5
