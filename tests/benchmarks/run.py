"""Runs the benchmark sections and writes ``BENCHMARKS.md``.

Run it::

    python -m tests.benchmarks --out BENCHMARKS.md          # about 10 minutes on 2 cores
    python -m tests.benchmarks --quick --out /tmp/bench.md  # tiny models, seconds

Realistic costs come from a CLIP with ViT-B/32's shapes and random weights
(:func:`qdrant_xai.testing.build_vit_b32_random`); the scale run uses a tiny CLIP
(:func:`qdrant_xai.testing.build_tiny_clip`) and streams 20,000 points into embedded Qdrant
(and into a server when ``QDRANT_URL`` is set). No model is downloaded.

Sections: indexing throughput with feature storage vs. the bare encoder forward; search
alone vs. search plus explanations; per-hit cost of every method; batched vs. sequential
leave-one-word-out; payload bytes and codec fidelity; scale (throughput over time, memory,
latency); bf16 vs. fp32; sidecar storage (payload codec vs. multivectors); and where
the time goes (profiles, and the SDPA change measured
before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.benchmarks.codecs import bench_compact
from tests.benchmarks.explaining import bench_loo, bench_methods, bench_search
from tests.benchmarks.harness import BenchConfig, Report, Section, load_average
from tests.benchmarks.indexing import bench_indexing
from tests.benchmarks.inputs import BenchModels
from tests.benchmarks.payloads import bench_codecs
from tests.benchmarks.precision import bench_bf16
from tests.benchmarks.profiling import bench_where
from tests.benchmarks.projection import bench_ray
from tests.benchmarks.rendering import bench_render
from tests.benchmarks.scale import bench_scale
from tests.benchmarks.sidecar import bench_sidecar

__all__ = ["SECTIONS", "main", "run"]


SECTIONS = (
    "indexing",
    "search",
    "render",
    "methods",
    "loo",
    "codecs",
    "compact",
    "scale",
    "bf16",
    "sidecar",
    "where",
    "ray",
)


def run(
    config: BenchConfig,
    *,
    only: Sequence[str] = SECTIONS,
    workdir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Runs the benchmark sections in ``only`` and returns the report."""
    import qdrant_client
    import transformers

    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    load_before = load_average()
    busy = os.getloadavg()[0] > (os.cpu_count() or 1) - 0.5 if hasattr(os, "getloadavg") else False
    with tempfile.TemporaryDirectory(prefix="qdrant-xai-bench-", dir=workdir) as tmp:
        root = Path(tmp)
        models = BenchModels(config, root)
        sections: list[Section] = []
        for key in SECTIONS:
            if key not in only:
                continue
            if progress is not None:
                progress(f"{key} ({time.perf_counter() - started:.0f} s)")
            if key == "indexing":
                sections.append(bench_indexing(config, models, root))
            elif key == "search":
                sections.append(bench_search(config, models, root))
            elif key == "render":
                sections.append(bench_render(config, models, root))
            elif key == "methods" and config.method_costs:
                sections.append(bench_methods(config, models))
            elif key == "loo":
                sections.append(bench_loo(config, models))
            elif key == "codecs":
                sections.append(bench_codecs(config, models, root))
            elif key == "compact":
                sections.append(bench_compact(config))
            elif key == "scale":
                sections.append(bench_scale(config, models, root))
            elif key == "bf16":
                sections.append(bench_bf16(config, models))
            elif key == "sidecar":
                sections.append(
                    bench_sidecar(20 if config.quick else 200, 3 if config.quick else 15, root)
                )
            elif key == "where":
                sections.append(bench_where(config, models, root))
            elif key == "ray":
                sections.append(bench_ray(config, models, root))
    elapsed = time.perf_counter() - started
    setup = {
        "command": "python -m tests.benchmarks" + (" --quick" if config.quick else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores ({_cpu_name()})",
        "torch threads": str(torch.get_num_threads()),
        "dtype": "float32 (section 7 also bfloat16)",
        "versions": f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, qdrant-client "
        f"{_version('qdrant-client', qdrant_client)}, numpy {np.__version__}",
        "load average (1/5/15 min)": f"{load_before} at the start, {load_average()} at the "
        "end (the machine is shared; a load above the core count slows every figure, ratios "
        "less so)",
        "run time": f"{elapsed:.0f} s",
        **(
            {
                "note": "the machine was busy when the run started (1-minute load above the "
                "core count): absolute times are inflated, and single-text forwards more than "
                "batched ones (2 torch threads contend with the other processes)"
            }
            if busy
            else {}
        ),
        "server": "QDRANT_URL set" if os.environ.get("QDRANT_URL") else "none (QDRANT_URL unset)",
    }
    return Report(setup=setup, sections=sections)


def _cpu_name() -> str:
    try:
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines()
        ):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown CPU"


def _version(distribution: str, module: Any) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover
        return str(getattr(module, "__version__", "unknown"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks",
        description="Measure indexing, search and explanation costs and write BENCHMARKS.md.",
    )
    parser.add_argument("--out", default="BENCHMARKS.md", help="markdown file to write")
    parser.add_argument("--json", default=None, help="also write the numbers as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="every section at a tiny size (tiny models)"
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = BenchConfig.quick_run() if args.quick else BenchConfig()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    report = run(config, only=only, progress=lambda s: print(f"[benchmarks] {s}", flush=True))
    text = report.to_markdown()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2), encoding="utf-8")
    print(text)
    return 0
