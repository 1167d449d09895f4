"""The options ``index`` and ``backfill`` share to run on Ray Data (``--engine``,
``--workers``, ``--ray-address``), and Ray joined or started for a run.

Beside :mod:`.options`, not in it, so that each stays under 500 lines."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from qdrant_xai.cli.options import positive_int

__all__ = ["add_engine_options", "ray_settings"]


def add_engine_options(
    parser: argparse.ArgumentParser, *, engine_help: str, title: str = "scale (Ray Data)"
) -> Any:
    """``--engine`` (its help, ``engine_help``, says what the actors do and who writes),
    ``--workers`` and ``--ray-address`` in an argument group ``title``, returned for a
    command's own scale options."""
    group = parser.add_argument_group(title)
    group.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help=f"{engine_help}. Needs the ray extra: pip install 'qdrant-xai[ray]'",
    )
    group.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        metavar="N",
        help="--engine ray: actors in the pool, each with its own model (default: 2)",
    )
    group.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="--engine ray: join the Ray cluster at ADDR (e.g. ray://head:10001 or auto); "
        "default: start a local Ray for this run and stop it at the end",
    )
    return group


def ray_settings(args: argparse.Namespace, stack: contextlib.ExitStack) -> dict[str, Any]:
    """``--engine ray``: Ray joined (``--ray-address``) or started locally for the run and
    stopped with ``stack`` when this run started it; returns the Ray classes' own keyword
    arguments (``workers``, ``url``/``api_key``/``timeout`` of a server the actors write
    to, ``device``). Without Ray, the error names the extra to install."""
    from qdrant_xai.storage.distributed.pipeline import import_ray, start_ray

    ray = import_ray()
    # a local Ray gets at least one CPU per worker, so that the whole pool can start
    if start_ray(args.ray_address, num_cpus=max(os.cpu_count() or 1, args.workers)):
        stack.callback(ray.shutdown)
    server = args.url if args.url and args.path is None else None
    return {
        "workers": args.workers,
        "url": server,
        "api_key": os.environ.get("QDRANT_API_KEY") if server else None,
        "timeout": args.timeout,
        # --device names the actors' device too; cpu (the default) lets them use the
        # cluster's GPUs when it has some
        "device": None if args.device == "cpu" else args.device,
    }
