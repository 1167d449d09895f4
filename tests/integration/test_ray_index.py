"""``--engine ray`` on a local Ray (2 CPUs) with the tiny CLIP, into embedded folders: the same
points as the single-process indexer, a rerun that writes nothing, a corrupt image listed,
a Ray worker killed mid-run (nothing lost, nothing twice), and (with ``QDRANT_URL``) the
workers writing to a server themselves."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from qdrant_xai.cli import main
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.storage.distributed import RayIndexer
from qdrant_xai.storage.distributed import pipeline as pipeline_module
from qdrant_xai.storage.index_records import IndexSummary
from qdrant_xai.storage.indexer import Indexer
from qdrant_xai.storage.schema import image_point_id
from qdrant_xai.testing import build_tiny_clip
from tests.integration._ray import assert_same_points, points_of, snapshot

ray = pytest.importorskip(
    "ray", reason="ray is not installed (pip install 'qdrant-xai[ray]'): --engine ray untested"
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    # Ray's own deprecation notices about its own defaults (DataContext), not ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]

N_IMAGES = 120
BATCH = 4
CORRUPT = "corrupt.png"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray_scenes")
    write_scene_folder(root, N_IMAGES, seed=11, size=48)
    whole = (root / "scene_0000.png").read_bytes()
    (root / CORRUPT).write_bytes(whole[: len(whole) // 2])  # a truncated PNG
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> ClipEncoder:
    folder = build_tiny_clip(tmp_path_factory.mktemp("ray_model"))
    return ClipEncoder.from_pretrained(folder, num_threads=1)


@pytest.fixture(scope="module")
def indexed(
    local_ray: Any, scenes: Path, encoder: ClipEncoder, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The folder indexed by Ray (workers=2) and by the single-process indexer, each into
    its own embedded folder (closed again)."""
    stores = tmp_path_factory.mktemp("ray_stores")
    captions = scenes / "captions.csv"
    with closing(QdrantClient(path=str(stores / "local"))) as client:
        local = Indexer(client, encoder, collection_name="c", batch_size=BATCH)
        local_summary = local.index_folder(scenes, captions=captions, progress=False)
    started = time.perf_counter()
    with closing(QdrantClient(path=str(stores / "ray"))) as client:
        engine = RayIndexer(client, encoder, collection_name="c", batch_size=BATCH, workers=2)
        assert engine.driver_writes
        ray_summary = engine.index_folder(scenes, captions=captions, progress=False)
    return {
        "local": stores / "local",
        "ray": stores / "ray",
        "local_summary": local_summary,
        "ray_summary": ray_summary,
        "seconds": time.perf_counter() - started,
    }


def adds_up(summary: IndexSummary, images: int) -> bool:
    failed_images = {s for s, _ in summary.failed if not s.endswith(".csv")}
    return summary.indexed_images + summary.unchanged + len(failed_images) == images


def test_ray_writes_the_points_of_the_single_process_indexer(indexed: dict[str, Any]) -> None:
    ours, theirs = snapshot(indexed["ray"]), snapshot(indexed["local"])
    assert len(ours) == 2 * N_IMAGES  # one image point and one caption point per scene
    assert_same_points(ours, theirs)
    summary, local = indexed["ray_summary"], indexed["local_summary"]
    assert (summary.indexed_images, summary.indexed_texts) == (N_IMAGES, N_IMAGES)
    assert (local.indexed_images, local.indexed_texts) == (N_IMAGES, N_IMAGES)


def test_a_corrupt_image_is_listed_with_its_reason_and_the_summary_adds_up(
    indexed: dict[str, Any], scenes: Path
) -> None:
    summary = indexed["ray_summary"]
    ((source, reason),) = summary.failed
    assert source == str((scenes / CORRUPT).resolve())
    assert reason.startswith("corrupt or truncated image")
    assert summary.failed == indexed["local_summary"].failed
    assert adds_up(summary, N_IMAGES + 1)


def test_a_rerun_through_the_cli_writes_nothing(
    indexed: dict[str, Any], scenes: Path, encoder: ClipEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(indexed["ray"])
    argv = ["index", str(scenes), "--captions", str(scenes / "captions.csv")]
    argv += ["--engine", "ray", "--workers", "2", "--batch-size", str(BATCH), "--no-progress"]
    argv += ["--path", str(indexed["ray"]), "--collection", "c", "--model", encoder.model_id]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"indexed 0 images and 0 texts; {N_IMAGES} unchanged; 1 skipped")
    after = snapshot(indexed["ray"])
    assert set(after) == set(before)
    assert all(after[i].payload == before[i].payload for i in before)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    local_ray: Any,
    scenes: Path,
    encoder: ClipEncoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    psutil = pytest.importorskip("psutil", reason="psutil finds the Ray worker to kill")

    done: list[int] = []  # images the driver has seen finished, at each update

    class CountingBar:
        def update(self, n: int) -> None:
            done.append((done[-1] if done else 0) + n)

        def close(self) -> None:
            pass

    monkeypatch.setattr(pipeline_module, "progress_bar", lambda **_: CountingBar())
    killed: list[tuple[int, int]] = []  # (pid, images finished when it was killed)

    def kill_first_encoder() -> None:
        """SIGKILL the first encoder actor's process (Ray titles it ``ray::MapWorker(
        MapBatches(BatchEncoder))``; a local Ray's processes descend from this one) once
        it has started work."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for process in psutil.Process().children(recursive=True):
                try:
                    title = " ".join(process.cmdline())
                except psutil.Error:
                    continue
                if "BatchEncoder" in title and done and done[-1] > 0:  # a batch is back
                    process.send_signal(signal.SIGKILL)
                    killed.append((process.pid, done[-1]))
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_encoder, daemon=True)
    with closing(QdrantClient(path=str(tmp_path / "store"))) as client:
        engine = RayIndexer(client, encoder, collection_name="c", batch_size=BATCH, workers=2)
        killer.start()
        summary = engine.index_folder(scenes, captions=scenes / "captions.csv")
        killer.join(timeout=5)
        stored = points_of(client, "c")
    assert killed, "no BatchEncoder actor was found alive to kill"
    assert killed[0][1] < N_IMAGES + 1, "the run had ended before the worker was killed"
    expected = {
        image_point_id(str((scenes / f"scene_{i:04d}.png").resolve())) for i in range(N_IMAGES)
    }
    assert expected <= set(stored)  # 0 lost
    assert len(stored) == 2 * N_IMAGES  # 0 duplicated: every id once, nothing else
    assert (summary.indexed_images, summary.indexed_texts) == (N_IMAGES, N_IMAGES)
    assert adds_up(summary, N_IMAGES + 1) and len(summary.failed) == 1


@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="QDRANT_URL is not set: no server")
def test_against_a_server_the_workers_write_and_a_rerun_writes_nothing(
    indexed: dict[str, Any], scenes: Path, encoder: ClipEncoder
) -> None:
    url = os.environ["QDRANT_URL"]
    api_key = os.environ.get("QDRANT_API_KEY")
    name = f"ray_{uuid.uuid4().hex[:8]}"
    client = QdrantClient(url=url, api_key=api_key)
    try:
        engine = RayIndexer(
            client, encoder, collection_name=name, batch_size=BATCH, url=url, api_key=api_key
        )
        assert not engine.driver_writes
        first = engine.index_folder(scenes, captions=scenes / "captions.csv", progress=False)
        assert (first.indexed_images, first.indexed_texts) == (N_IMAGES, N_IMAGES)
        assert adds_up(first, N_IMAGES + 1)
        assert_same_points(points_of(client, name), snapshot(indexed["local"]))
        again = engine.index_folder(scenes, captions=scenes / "captions.csv", progress=False)
        assert (again.indexed_images, again.unchanged) == (0, N_IMAGES)
    finally:
        client.delete_collection(name)
        client.close()
