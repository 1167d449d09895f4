"""The sidecar: features of a collection another tool wrote, kept beside it, never in it."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, Explainer, Searcher
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.storage.backfill import Backfiller
from qdrant_xai.storage.schema import PayloadKeys
from qdrant_xai.storage.sidecar import Sidecar, SidecarEntry, current_entry, sidecar_name

QUERY = "a red circle"


def _snapshot(client: QdrantClient, name: str) -> list[Any]:
    records, _ = client.scroll(name, limit=1000, with_payload=True, with_vectors=True)
    return sorted((str(r.id), r.vector, r.payload) for r in records)


def _foreign(client: QdrantClient, name: str, encoder: ClipEncoder, folder: Path) -> list[Path]:
    """A langchain-qdrant-like collection of images (unnamed vector, metadata.source)."""
    paths = sorted(folder.glob("*.png"))
    client.create_collection(
        name, vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
    )
    vectors = encoder.embed_images(paths)
    client.upsert(
        name,
        points=[
            models.PointStruct(
                id=i,
                vector=vectors[i].tolist(),
                payload={"page_content": p.name, "metadata": {"source": str(p)}},
            )
            for i, p in enumerate(paths)
        ],
    )
    return paths


@pytest.fixture
def world(tmp_path: Path, tiny_encoder: ClipEncoder) -> tuple[QdrantClient, Path]:
    folder = tmp_path / "scenes"
    write_scene_folder(folder, 6, seed=41, size=64)
    client = QdrantClient(":memory:")
    _foreign(client, "docs", tiny_encoder, folder)
    return client, folder


def test_explaining_writes_through_to_the_sidecar_and_never_to_the_collection(
    world: tuple[QdrantClient, Path], tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    client, folder = world
    before = _snapshot(client, "docs")
    hits = Searcher(client, tiny_encoder, collection_name="docs", layout="langchain").search_images(
        QUERY, limit=3
    )
    first = Explainer(
        tiny_encoder, client, collection_name="docs", layout="langchain", image_roots=[folder]
    ).explain(QUERY, hits)
    assert all(e.ok for e in first)
    assert _snapshot(client, "docs") == before  # the user's collection is untouched
    assert client.collection_exists(sidecar_name("docs"))
    entries = Sidecar(client, "docs").read([h.id for h in hits])
    assert set(entries) == {str(h.id) for h in hits}
    assert all(e["image"][PayloadKeys.KIND] == "image" for e in entries.values())
    # the images are gone: the second explanation reads the sidecar, not the files
    shutil.rmtree(folder)
    second = Explainer(tiny_encoder, client, collection_name="docs", layout="langchain").explain(
        QUERY, hits
    )
    for a, b in zip(first, second, strict=True):
        assert b.ok and (a.id, a.score, a.rank) == (b.id, b.score, b.rank)
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=2e-3)  # fp16 features
        assert b.crop_box == a.crop_box
    # sidecar=False neither reads nor writes it: without images nothing can be explained
    alone = Explainer(
        tiny_encoder, client, collection_name="docs", layout="langchain", sidecar=False
    ).explain(QUERY, hits)
    assert not any(e.ok for e in alone)
    assert "image" in str(alone[0].error)


def test_a_rewritten_point_makes_its_sidecar_entry_stale(
    world: tuple[QdrantClient, Path], tiny_encoder: ClipEncoder
) -> None:
    client, folder = world
    explainer = Explainer(
        tiny_encoder, client, collection_name="docs", layout="langchain", image_roots=[folder]
    )
    hits = client.query_points("docs", query=tiny_encoder.embed_texts([QUERY])[0], limit=2).points
    explainer.explain(QUERY, hits)
    entry = Sidecar(client, "docs").read([hits[0].id])[str(hits[0].id)]["image"]
    (stored,) = client.retrieve("docs", [hits[0].id], with_vectors=True)
    key = tiny_encoder.fingerprint.key
    assert current_entry(entry, fingerprint=key, stored_vector=stored.vector)
    # the user re-writes point 0 with another picture's vector: the entry no longer holds
    other_id = next(i for i in range(6) if i != hits[0].id)
    other = client.retrieve("docs", [other_id], with_vectors=True)[0].vector
    client.upsert("docs", [models.PointStruct(id=hits[0].id, vector=other, payload={})])
    assert not current_entry(entry, fingerprint=key, stored_vector=other)
    assert not current_entry(entry, fingerprint="another-model", stored_vector=stored.vector)


def test_backfill_fills_the_sidecar_and_leaves_the_collection_byte_identical(
    world: tuple[QdrantClient, Path], tiny_encoder: ClipEncoder
) -> None:
    from qdrant_xai.images.policy import ImageSourcePolicy

    client, folder = world
    before = _snapshot(client, "docs")
    backfiller = Backfiller(
        client,
        tiny_encoder,
        collection_name="docs",
        layout="langchain",
        sources=ImageSourcePolicy.from_roots([folder]),
    )
    summary = backfiller.run(progress=False)
    assert (summary.updated, summary.unchanged, summary.failed) == (6, 0, [])
    assert _snapshot(client, "docs") == before
    assert client.count(sidecar_name("docs")).count == 6
    again = backfiller.run(progress=False)  # resumable: current entries are left alone
    assert (again.updated, again.unchanged) == (0, 6)
    # in_place=True is the explicit choice to write into the collection itself
    in_place = Backfiller(
        client,
        tiny_encoder,
        collection_name="docs",
        layout="langchain",
        sources=ImageSourcePolicy.from_roots([folder]),
        in_place=True,
    ).run(progress=False)
    assert in_place.updated == 6
    assert _snapshot(client, "docs") != before


def test_an_unwritable_sidecar_is_warned_about_once_and_explaining_goes_on(
    world: tuple[QdrantClient, Path], tiny_encoder: ClipEncoder
) -> None:
    client, folder = world
    hits = client.query_points("docs", query=tiny_encoder.embed_texts([QUERY])[0], limit=2).points

    class ReadOnly(Sidecar):
        def write(self, entries: Any) -> int:
            raise ValueError("forbidden: read-only API key")

    explainer = Explainer(
        tiny_encoder, client, collection_name="docs", layout="langchain", image_roots=[folder]
    )
    explainer._sidecars["docs"] = ReadOnly(client, "docs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert all(e.ok for e in explainer.explain(QUERY, hits))
        assert all(e.ok for e in explainer.explain(QUERY, hits))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "read-only API key" in messages[0]


def test_sidecar_entries_keep_the_other_kind(tiny_encoder: ClipEncoder) -> None:
    client = QdrantClient(":memory:")
    sidecar = Sidecar(client, "src")
    assert not sidecar.exists() and sidecar.read([1]) == {}
    vector = np.ones(4, dtype=np.float32)
    sidecar.write([SidecarEntry(1, "image", {PayloadKeys.KIND: "image"}, vector)])
    sidecar.write([SidecarEntry(1, "text", {PayloadKeys.KIND: "text"}, vector)])
    entry = sidecar.read([1, 2])
    assert set(entry) == {"1"} and set(entry["1"]) == {"image", "text"}
    with pytest.raises(ValueError, match="another collection"):
        Sidecar(client, "src", name="src")


def test_an_entry_survives_float_noise_but_not_another_vector() -> None:
    from qdrant_xai.storage.sidecar import same_vector, vector_stamp

    rng = np.random.default_rng(3)
    vector = rng.standard_normal(512).astype(np.float32)
    stamp = vector_stamp(vector)
    # embedded Qdrant can hand the same vector back one ulp apart after a search
    assert same_vector(stamp, np.nextafter(vector, np.float32(np.inf)))
    assert same_vector(stamp, vector * 3.0)  # any norm: cosine collections normalise
    assert not same_vector(stamp, rng.standard_normal(512))
    assert not same_vector(stamp, vector[:256])
    assert not same_vector("not base64!", vector) and not same_vector(None, vector)
