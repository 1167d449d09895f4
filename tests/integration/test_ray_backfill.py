"""``backfill --engine ray`` on a local Ray (2 CPUs) with the tiny CLIP, into embedded
folders: the same payloads (a qdrant-xai collection indexed without features) and sidecar
entries (a collection langchain-qdrant's ``QdrantVectorStore`` wrote) as the single-process
``Backfiller``, the user's collection untouched, a missing image and a disagreeing vector
listed with their reasons, a rerun that writes nothing, a Ray worker killed mid-run (nothing
lost, nothing twice), and (with ``QDRANT_URL``) the workers writing to a server."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from qdrant_xai.cli import main
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.storage.backfill import Backfiller, BackfillSummary
from qdrant_xai.storage.distributed import RayBackfiller
from qdrant_xai.storage.indexer import Indexer
from qdrant_xai.storage.schema import PayloadKeys
from qdrant_xai.testing import build_tiny_clip
from tests.integration._ray import assert_same_payload, assert_same_points, points_of, snapshot

pytest.importorskip(
    "ray", reason="ray is not installed (pip install 'qdrant-xai[ray]'): --engine ray untested"
)
pytest.importorskip("langchain_qdrant", reason="langchain-qdrant writes the foreign collection")
from tests.integration.foreign._base import Scenes
from tests.integration.foreign.langchain_writers import write_mixed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    # Ray's own deprecation notices about its own defaults (DataContext), not ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]

N_SCENES = 30  # own: 30 image + 30 caption points; langchain: 30 CSV rows + 5 images
BATCH = 4
OWN, LC = "own", "lc"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> ClipEncoder:
    # a 256-token context: LangChain's CSV rows ("image: ...\ncaption: ...") fit whole
    folder = build_tiny_clip(tmp_path_factory.mktemp("ray_bf_model"), max_position_embeddings=256)
    return ClipEncoder.from_pretrained(folder, num_threads=1)


@pytest.fixture(scope="module")
def world(
    encoder: ClipEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """An embedded folder ``base`` with the two collections to backfill (closed again):
    ``own`` indexed by qdrant-xai, then stripped of its features; ``lc`` written by
    ``QdrantVectorStore`` from a copy of the same scenes, where one image point's file is
    deleted and one text point's vector is turned around (it disagrees with its
    re-encoding)."""
    root = Path(tempfile.mkdtemp(prefix="xai-"))  # short: see foreign/conftest.py
    scenes = Scenes.write(root, N_SCENES, seed=7)
    base = tmp_path_factory.mktemp("ray_bf") / "base"
    with closing(QdrantClient(path=str(base))) as client:
        own = shutil.copytree(scenes.root / "images", root / "own")  # scene 0 stays here
        Indexer(client, encoder, collection_name=OWN, batch_size=BATCH).index_folder(
            own, captions=own / scenes.csv.name, progress=False
        )
        stripped = [PayloadKeys.FEATURES, PayloadKeys.LAST_LAYER, PayloadKeys.FINGERPRINT]
        client.delete_payload(OWN, keys=stripped, points=models.Filter())
        written = write_mixed(client, LC, encoder, scenes)
        broken = {
            next(p.id for p in written.points if p.image == scenes.items[0].image),
            _turn_around(client, LC, next(p.id for p in written.of_kind("text"))),
        }
    scenes.items[0].image.unlink()
    yield {"scenes": scenes, "base": base, "broken": broken}
    shutil.rmtree(root, ignore_errors=True)


def _turn_around(client: QdrantClient, name: str, point_id: str) -> str:
    (record,) = client.retrieve(name, [point_id], with_vectors=True)
    vectors = record.vector if isinstance(record.vector, dict) else {"": record.vector}
    turned = {k: [-x for x in v] for k, v in vectors.items()}  # type: ignore[union-attr]
    client.update_vectors(name, points=[models.PointVectors(id=point_id, vector=turned)])
    return point_id


def _backfiller(
    engine: str, client: QdrantClient, encoder: ClipEncoder, name: str, scenes: Scenes, **kw: Any
) -> Any:
    settings: dict[str, Any] = {
        "collection_name": name,
        "sources": ImageSourcePolicy.from_roots([scenes.root]),
        "batch_size": BATCH,
        **kw,
    }
    if engine == "ray":
        return RayBackfiller(client, encoder, workers=2, **settings)
    return Backfiller(client, encoder, **settings)


def _copy(base: Path, to: Path) -> Path:
    shutil.copytree(base, to)
    return to


@pytest.fixture(scope="module")
def backfilled(
    local_ray: Any,
    world: dict[str, Any],
    encoder: ClipEncoder,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Both collections backfilled by each engine, each in its own copy of ``base``."""
    stores = tmp_path_factory.mktemp("ray_bf_stores")
    result: dict[str, Any] = {}
    for engine in ("local", "ray"):
        path = _copy(world["base"], stores / engine)
        with closing(QdrantClient(path=str(path))) as client:
            started = time.perf_counter()
            for name in (OWN, LC):
                backfiller = _backfiller(engine, client, encoder, name, world["scenes"])
                result[engine, name] = backfiller.run(progress=False)
            result[engine, "seconds"] = time.perf_counter() - started
        result[engine] = path
    return result


def adds_up(summary: BackfillSummary, points: int) -> bool:
    return summary.updated + summary.unchanged + len(summary.failed) == points


def same_summary(ours: BackfillSummary, theirs: BackfillSummary) -> bool:
    return (ours.updated, ours.unchanged, sorted(ours.failed)) == (
        theirs.updated,
        theirs.unchanged,
        sorted(theirs.failed),
    )


def test_ray_writes_the_payloads_of_the_single_process_backfill(backfilled: dict[str, Any]) -> None:
    ours, theirs = snapshot(backfilled["ray"], OWN), snapshot(backfilled["local"], OWN)
    assert len(ours) == 2 * N_SCENES
    assert_same_points(ours, theirs)
    summary = backfilled["ray", OWN]
    assert same_summary(summary, backfilled["local", OWN])
    assert (summary.updated, summary.unchanged, summary.failed) == (2 * N_SCENES, 0, [])


def test_ray_writes_the_sidecar_of_the_single_process_backfill_and_not_the_collection(
    backfilled: dict[str, Any], world: dict[str, Any]
) -> None:
    ours, theirs = (
        snapshot(backfilled["ray"], f"{LC}__xai"),
        snapshot(backfilled["local"], f"{LC}__xai"),
    )
    assert set(ours) == set(theirs) and len(ours) == N_SCENES + 5 - 2
    for point_id, point in ours.items():
        assert set(point.payload) == set(theirs[point_id].payload)
        for kind, entry in point.payload.items():
            assert_same_payload(entry, theirs[point_id].payload[kind])
    assert_same_points(snapshot(backfilled["ray"], LC), snapshot(world["base"], LC))
    summary = backfilled["ray", LC]
    assert same_summary(summary, backfilled["local", LC])
    assert adds_up(summary, N_SCENES + 5)


def test_a_missing_image_and_a_disagreeing_vector_are_listed_the_rest_done(
    backfilled: dict[str, Any], world: dict[str, Any]
) -> None:
    summary = backfilled["ray", LC]
    failed = dict(summary.failed)
    assert set(failed) == world["broken"]
    assert all(failed.values())
    assert summary.updated == N_SCENES + 5 - 2 and summary.unchanged == 0


def test_a_rerun_writes_nothing(
    backfilled: dict[str, Any],
    world: dict[str, Any],
    encoder: ClipEncoder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A rerun over points that are all current: nothing encoded (no actor even starts),
    nothing written."""
    before = snapshot(backfilled["ray"], OWN)
    argv = ["backfill", "--engine", "ray", "--workers", "2", "--batch-size", str(BATCH)]
    argv += ["--image-root", str(world["scenes"].root), "--no-progress"]
    argv += ["--model", encoder.model_id, "--path", str(backfilled["ray"]), "--collection", OWN]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"backfilled 0 points; {2 * N_SCENES} unchanged; 0 skipped")
    after = snapshot(backfilled["ray"], OWN)
    assert set(after) == set(before)
    assert all(after[i].payload == before[i].payload for i in before)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    local_ray: Any,
    world: dict[str, Any],
    encoder: ClipEncoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    psutil = pytest.importorskip("psutil", reason="psutil finds the Ray worker to kill")
    total = 2 * N_SCENES
    written: list[int] = []  # points the driver has written, at each write
    write = Backfiller.write

    def counting_write(self: Backfiller, writes: Any) -> int:
        n = write(self, writes)
        written.append((written[-1] if written else 0) + n)
        return n

    monkeypatch.setattr(Backfiller, "write", counting_write)
    killed: list[tuple[int, int]] = []  # (pid, points written when it was killed)

    finished = threading.Event()

    def kill_first_actor() -> None:
        """SIGKILL the first backfill actor's process (Ray titles it ``ray::MapWorker(
        MapBatches(BackfillActor))``) once a batch is back, however long the pool takes to
        start on a loaded machine."""
        while not finished.is_set():
            for process in psutil.Process().children(recursive=True):
                try:
                    title = " ".join(process.cmdline())
                except psutil.Error:
                    continue
                if "BackfillActor" in title and written and written[-1] > 0:
                    process.send_signal(signal.SIGKILL)
                    killed.append((process.pid, written[-1]))
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_actor, daemon=True)
    reference = _copy(world["base"], tmp_path / "reference")
    with closing(QdrantClient(path=str(reference))) as client:
        local = _backfiller("local", client, encoder, OWN, world["scenes"]).run(progress=False)
    written.clear()
    path = _copy(world["base"], tmp_path / "store")
    with closing(QdrantClient(path=str(path))) as client:
        backfiller = _backfiller("ray", client, encoder, OWN, world["scenes"])
        killer.start()
        try:
            summary = backfiller.run(progress=False)
        finally:
            finished.set()
            killer.join(timeout=5)
    assert killed, "no BackfillActor was found alive to kill"
    assert killed[0][1] < total, "the run had ended before the worker was killed"
    assert written[-1] == total  # every point written once: 0 lost, 0 duplicated
    assert same_summary(summary, local)
    assert_same_points(snapshot(path, OWN), snapshot(reference, OWN))


@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="QDRANT_URL is not set: no server")
def test_against_a_server_the_workers_write_and_a_rerun_writes_nothing(
    local_ray: Any, world: dict[str, Any], backfilled: dict[str, Any], encoder: ClipEncoder
) -> None:
    url, api_key = os.environ["QDRANT_URL"], os.environ.get("QDRANT_API_KEY")
    name = f"ray_bf_{uuid.uuid4().hex[:8]}"
    client = QdrantClient(url=url, api_key=api_key)
    source = snapshot(world["base"], LC)
    try:
        client.create_collection(
            name,
            vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE),
        )
        client.upsert(
            name,
            points=[
                models.PointStruct(id=p.id, vector=p.vector, payload=p.payload)
                for p in source.values()
            ],
            wait=True,
        )
        backfiller = _backfiller(
            "ray", client, encoder, name, world["scenes"], url=url, api_key=api_key
        )
        assert not backfiller.driver_writes
        first, local = backfiller.run(progress=False), backfilled["local", LC]
        # the same points failed (a server keeps cosine vectors normalised: the figures in
        # a reason may differ in the last digits)
        assert (first.updated, first.unchanged) == (local.updated, local.unchanged)
        assert sorted(i for i, _ in first.failed) == sorted(i for i, _ in local.failed)
        ours, theirs = (
            points_of(client, f"{name}__xai"),
            snapshot(backfilled["local"], f"{LC}__xai"),
        )
        assert set(ours) == set(theirs)
        for point_id, point in ours.items():
            for kind, entry in point.payload.items():
                assert_same_payload(entry, theirs[point_id].payload[kind])
        again = backfiller.run(progress=False)
        assert (again.updated, again.unchanged) == (0, first.updated)
    finally:
        for collection in (name, f"{name}__xai"):
            if client.collection_exists(collection):
                client.delete_collection(collection)
        client.close()
