"""``--engine ray`` at scale on this machine: N small shapes images indexed by a local Ray
(``--workers`` actors, the tiny CLIP) into an on-disk embedded store, then a rerun.

Prints the throughput over time (images/s in each tenth of the run), the peak RSS of every
process (the driver, each encoder actor, Ray's own daemons; ``psutil`` when installed,
else the driver's and its reaped children's ``resource`` peaks), Ray's start-up time and
the time of a rerun that must write nothing.

Use::

    python -m tests.benchmarks.ray_scale --images 2000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]


class Timeline:
    """A progress bar stand-in that records ``(seconds, images done, driver RSS MB)`` at
    every update; with ``kill_at``, it kills one encoder actor's process (SIGKILL) once that
    many images are done, and records its pid and the count in :attr:`killed`."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.start = time.perf_counter()
        self.points: list[tuple[float, int, float]] = [(0.0, 0, _driver_rss_mb())]
        self.kill_at = kill_at
        self.killed: tuple[int, int] | None = None

    def update(self, n: int) -> None:
        done = self.points[-1][1] + n
        self.points.append((time.perf_counter() - self.start, done, _driver_rss_mb()))
        if self.kill_at is not None and self.killed is None and done >= self.kill_at:
            self.killed = _kill_an_encoder(done)

    def close(self) -> None:
        pass

    def tenths(self) -> list[dict[str, float]]:
        """Images/s within each tenth of the images (by count), when it ended and the
        driver's RSS then."""
        total = self.points[-1][1]
        rows, previous = [], self.points[0]
        for tenth in range(1, 11):
            goal = total * tenth / 10
            reached = next(p for p in self.points if p[1] >= goal)
            if reached[1] > previous[1]:
                seconds = max(reached[0] - previous[0], 1e-9)
                rate = (reached[1] - previous[1]) / seconds
                rows.append(
                    {
                        "tenth": tenth,
                        "at_s": reached[0],
                        "images_per_s": rate,
                        "driver_rss_mb": reached[2],
                    }
                )
                previous = reached
        return rows


def _driver_rss_mb() -> float:
    """This process's RSS now (``psutil``), else its peak so far (``resource``)."""
    try:
        import psutil
    except ImportError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return float(psutil.Process().memory_info().rss / 2**20)


class MemoryWatch:
    """Peak RSS (MB) of this process and of every process under it, sampled every
    ``interval`` seconds, by pid, with the role each played (Ray titles its workers
    ``ray::<actor or task>``, ``ray::IDLE`` between tasks)."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.rss: dict[int, float] = {}
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        me = psutil.Process()
        while not self._stop.is_set():
            for process in [me, *me.children(recursive=True)]:
                try:
                    title = "driver" if process == me else _role(process.cmdline())
                    rss = process.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.rss[process.pid] = max(self.rss.get(process.pid, 0.0), rss)
                if title and not title.endswith("IDLE"):
                    self.roles[process.pid] = title
            self._stop.wait(self.interval)

    @property
    def peaks(self) -> dict[str, float]:
        return {f"{pid} {self.roles.get(pid, 'ray::IDLE')}": mb for pid, mb in self.rss.items()}


def _kill_an_encoder(done: int) -> tuple[int, int] | None:
    """SIGKILL the process of one ``BatchEncoder`` actor; ``(pid, images done)``."""
    import signal

    import psutil

    for process in psutil.Process().children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::") and "BatchEncoder" in title:
            os.kill(process.pid, signal.SIGKILL)
            return process.pid, done
    return None


def _role(cmdline: list[str]) -> str:
    """``ray::MapWorker(MapBatches(BatchEncoder))`` without the method; Ray's daemons by
    their program's name; empty for a worker not yet titled."""
    line = " ".join(cmdline)
    if line.startswith("ray::"):
        return line.split()[0].split(".")[0]
    for daemon in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "agent"):
        if daemon in line:
            return daemon
    return ""


def run(
    images: int,
    workers: int,
    batch_size: int,
    root: Path,
    cpus: int,
    kill_at: float | None = None,
) -> dict[str, Any]:
    """Indexes ``images`` generated images through a local Ray, then again (a rerun);
    ``kill_at``: kill one encoder actor once that fraction of the first run is done."""
    from qdrant_client import QdrantClient

    from qdrant_xai.demo.world import write_scene_folder
    from qdrant_xai.encoding.encoder import ClipEncoder
    from qdrant_xai.storage.distributed import RayIndexer, start_ray
    from qdrant_xai.storage.index_records import IndexSummary
    from qdrant_xai.testing import build_tiny_clip

    folder, store = root / "images", root / "store"
    started = time.perf_counter()
    csv = write_scene_folder(folder, images, seed=7, size=32)
    written = time.perf_counter() - started
    encoder = ClipEncoder.from_pretrained(build_tiny_clip(root / "model"), num_threads=1)
    started = time.perf_counter()
    start_ray(num_cpus=cpus)
    ray_start = time.perf_counter() - started
    result: dict[str, Any] = {
        "images": images,
        "workers": workers,
        "batch_size": batch_size,
        "write_images_s": written,
        "ray_start_s": ray_start,
    }
    with MemoryWatch() as memory, closing(QdrantClient(path=str(store))) as client:
        engine = RayIndexer(
            client, encoder, collection_name="scale", batch_size=batch_size, workers=workers
        )
        for run_name in ("first", "rerun"):
            kill = None if kill_at is None or run_name == "rerun" else int(images * kill_at)
            timeline, summary = Timeline(kill), IndexSummary()
            records = _records(folder, csv)
            dataset = engine.pipeline(records, summary, timeline)
            engine.collect(dataset, summary, timeline)
            seconds = time.perf_counter() - timeline.start
            result[run_name] = {
                "seconds": seconds,
                "images_per_s": images / seconds,
                "indexed_images": summary.indexed_images,
                "indexed_texts": summary.indexed_texts,
                "unchanged": summary.unchanged,
                "failed": len(summary.failed),
                "tenths": timeline.tenths() if run_name == "first" else [],
                "killed": timeline.killed,
            }
        result["points_stored"] = client.count("scale").count
        # every image has one caption: a point lost or written twice shows here
        result["points_expected"] = 2 * images
    result["store_mb"] = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**20
    result["peak_rss_mb"] = memory.peaks or {
        "driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children (reaped)": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    import ray

    ray.shutdown()
    return result


def _records(folder: Path, csv: Path) -> list[Any]:
    from qdrant_xai.storage.captions import list_folder
    from qdrant_xai.storage.index_records import ImageRecord

    contents = list_folder(folder, captions=csv)
    return [ImageRecord(s, tuple(contents.captions.get(s, ()))) for _, s in contents.files]


def _print(result: dict[str, Any]) -> None:
    first, rerun = result["first"], result["rerun"]
    print(
        f"{result['images']} images, {result['workers']} workers, batch {result['batch_size']}:"
        f" Ray started in {result['ray_start_s']:.1f} s; first run {first['seconds']:.1f} s "
        f"({first['images_per_s']:.1f} img/s, {first['indexed_images']} images + "
        f"{first['indexed_texts']} texts, {first['failed']} failed); rerun "
        f"{rerun['seconds']:.1f} s ({rerun['indexed_images']} written, "
        f"{rerun['unchanged']} unchanged); {result['points_stored']} points, store "
        f"{result['store_mb']:.1f} MB"
    )
    print("tenth | ends at s | images/s | driver RSS MB")
    for row in first["tenths"]:
        print(
            f"{row['tenth']:>5} | {row['at_s']:>9.1f} | {row['images_per_s']:>8.1f} | "
            f"{row['driver_rss_mb']:>13.0f}"
        )
    print("peak RSS (MB) per process")
    for name, mb in sorted(result["peak_rss_mb"].items(), key=lambda kv: -kv[1]):
        print(f"  {mb:8.0f}  {name}")
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument(
        "--kill-at",
        type=float,
        default=None,
        metavar="FRACTION",
        help="kill one encoder actor once this fraction of the images is back in the driver "
        "(keep it small, e.g. 0.05: the actors run ahead of the driver's writes and may have "
        "finished by mid-run)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = args.dir or Path(tempfile.mkdtemp(prefix="ray_scale_"))
    try:
        _print(run(args.images, args.workers, args.batch_size, root, args.cpus, args.kill_at))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
