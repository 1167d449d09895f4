"""Ray engine and bulk mode without a cluster: the encoder and backfill actors run in this
process, bulk mode's settings switch (HNSW ``m`` off during an ingest, the collection's own
value back after, also after an error or Ctrl-C), and the ray extra named when Ray is
missing (also by ``backfill --engine ray``)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai import connection
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import QdrantXaiError
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.storage.backfill import PendingPoint
from qdrant_xai.storage.distributed import bulk, bulk_ingest, import_ray, is_embedded
from qdrant_xai.storage.distributed.backfill import BackfillActor, BackfillSettings
from qdrant_xai.storage.distributed.workers import BatchEncoder, WorkerSettings
from qdrant_xai.storage.schema import ensure_collection
from qdrant_xai.storage.sidecar import Sidecar
from qdrant_xai.testing import build_tiny_clip


def collection(client: QdrantClient, name: str = "c") -> str:
    client.create_collection(
        name, vectors_config={"image": models.VectorParams(size=4, distance=models.Distance.COSINE)}
    )
    return name


def test_on_an_embedded_qdrant_bulk_mode_changes_nothing_and_says_so() -> None:
    client = QdrantClient(":memory:")
    name = collection(client)
    assert is_embedded(client)
    with bulk_ingest(client, name) as notes:
        assert notes == [bulk.EMBEDDED_NOTE]
    assert client.get_collection(name).config.hnsw_config.m == 16


@pytest.mark.parametrize("ending", [None, RuntimeError("boom"), KeyboardInterrupt()])
def test_m_is_set_to_0_then_back_whatever_ends_the_block(
    monkeypatch: pytest.MonkeyPatch, ending: BaseException | None
) -> None:
    # qdrant-client's local mode accepts update_collection (and ignores it): the calls are
    # what a server receives
    client = QdrantClient(":memory:")
    name = collection(client)
    monkeypatch.setattr(bulk, "is_embedded", lambda _: False)
    calls: list[Any] = []
    update = client.update_collection

    def spy(collection_name: str, **kwargs: Any) -> Any:
        calls.append((collection_name, kwargs["hnsw_config"].m))
        return update(collection_name, **kwargs)

    monkeypatch.setattr(client, "update_collection", spy)
    raises = pytest.raises(type(ending)) if ending else contextlib.nullcontext()
    with raises, bulk_ingest(client, name) as notes:
        assert calls == [(name, 0)]
        if ending is not None:
            raise ending
    assert calls == [(name, 0), (name, 16)]
    assert "m 16 -> 0" in notes[0] and "set back to 16" in notes[1]


@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="QDRANT_URL is not set: no server")
def test_on_a_server_hnsw_is_deferred_inside_and_restored_after() -> None:
    client = QdrantClient(url=os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY"))
    name = collection(client, f"bulk_{uuid.uuid4().hex[:8]}")
    try:
        client.update_collection(name, hnsw_config=models.HnswConfigDiff(m=24))
        with pytest.raises(RuntimeError), bulk_ingest(client, name):
            assert client.get_collection(name).config.hnsw_config.m == 0
            raise RuntimeError("interrupted ingest")
        assert client.get_collection(name).config.hnsw_config.m == 24
    finally:
        client.delete_collection(name)
        client.close()


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(QdrantXaiError, match=r"pip install 'qdrant-xai\[ray\]'"):
        import_ray()


def test_an_encoder_actor_with_a_server_writes_its_batches_and_skips_current_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actor's work run in this process (no Ray): with ``url`` it opens its own client
    (here a shared ``:memory:`` one) and does the indexer's whole per-batch logic."""
    write_scene_folder(tmp_path / "images", 6, seed=2, size=32)
    model = build_tiny_clip(tmp_path / "model")
    client = QdrantClient(":memory:")
    monkeypatch.setattr(connection, "open_client", lambda *_, **__: client)
    encoder = ClipEncoder.from_pretrained(model)
    ensure_collection(client, "c", dim=encoder.dim)
    settings = WorkerSettings(model=str(model), collection_name="c", url="http://server:6333")
    actor = BatchEncoder(settings)
    files = sorted((tmp_path / "images").glob("*.png"))
    (tmp_path / "images" / "bad.png").write_bytes(b"not a png")
    batch = {
        "source": np.array([str(f) for f in [*files, tmp_path / "images" / "bad.png"]]),
        "captions": np.array([json.dumps(["a red circle"])] * (len(files) + 1)),
    }
    first = actor(batch)
    assert first["points"][0] == b""  # written by the actor, nothing for the driver
    assert (int(first["indexed_images"][0]), int(first["indexed_texts"][0])) == (6, 6)
    assert [s for s, _ in json.loads(first["failed"][0])] == [str(tmp_path / "images/bad.png")]
    assert client.count("c").count == 12
    again = actor(batch)
    assert (int(again["indexed_images"][0]), int(again["unchanged"][0])) == (0, 6)
    assert int(again["images"][0]) == 7


def test_the_cli_says_bulk_mode_does_nothing_on_an_embedded_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qdrant_xai.cli import main

    write_scene_folder(tmp_path / "images", 2, seed=4, size=32)
    model = build_tiny_clip(tmp_path / "model")
    argv = ["index", str(tmp_path / "images"), "--bulk", "--no-progress", "--model", str(model)]
    assert main([*argv, "--path", str(tmp_path / "store"), "--collection", "c"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("indexed 2 images and 0 texts")
    assert f"note collection c: {bulk.EMBEDDED_NOTE}" in out


def _pending(tmp_path: Path, encoder: ClipEncoder) -> list[PendingPoint]:
    """Two image points (one with a vector that disagrees) and a missing image."""
    files = sorted((tmp_path / "images").glob("*.png"))[:2]
    vectors = [[float(x) for x in v] for v in encoder.embed_images(files)]
    return [
        PendingPoint(1, "image", str(files[0]), vectors[0]),
        PendingPoint(2, "image", str(files[1]), [-x for x in vectors[1]]),
        PendingPoint(3, "image", str(tmp_path / "images" / "gone.png"), vectors[0]),
    ]


@pytest.mark.parametrize("server", [False, True])
def test_a_backfill_actor_returns_its_writes_or_with_a_server_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: bool
) -> None:
    """The actor's work run in this process (no Ray): the writes of the points it could do,
    the others failed with their reasons; with ``url`` it writes them to the sidecar the
    driver created (here a shared ``:memory:`` client)."""
    write_scene_folder(tmp_path / "images", 2, seed=3, size=32)
    model = build_tiny_clip(tmp_path / "model")
    client = QdrantClient(":memory:")
    monkeypatch.setattr(connection, "open_client", lambda *_, **__: client)
    encoder = ClipEncoder.from_pretrained(model)
    Sidecar(client, "c").create()
    settings = BackfillSettings(
        model=str(model),
        collection_name="c",
        in_place=False,
        sources=ImageSourcePolicy.from_roots([tmp_path]),
        url="http://server:6333" if server else None,
    )
    points = _pending(tmp_path, encoder)
    row = BackfillActor(settings)({"point": np.array([pickle.dumps(p) for p in points])})
    assert int(row["points"][0]) == 3
    assert sorted(i for i, _ in json.loads(row["failed"][0])) == ["2", "3"]
    if server:
        assert (int(row["updated"][0]), row["writes"][0]) == (1, b"")
        assert [int(str(p.id)) for p in client.scroll("c__xai")[0]] == [1]
    else:
        (write,) = pickle.loads(row["writes"][0])
        assert (int(row["updated"][0]), write.point_id, write.kind) == (0, 1, "image")
        assert client.count("c__xai").count == 0


def test_backfill_without_ray_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from qdrant_xai.cli import main

    with contextlib.closing(QdrantClient(path=str(tmp_path / "store"))) as client:
        collection(client)
    monkeypatch.setitem(sys.modules, "ray", None)
    argv = ["backfill", "--engine", "ray", "--path", str(tmp_path / "store"), "--collection", "c"]
    assert main(argv) == 1
    assert "pip install 'qdrant-xai[ray]'" in capsys.readouterr().err
