"""Fixtures of the integration tests that more than one module uses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def local_ray() -> Iterator[Any]:
    """A local Ray with 2 CPUs, started once for the Ray tests (``test_ray_*``) and shut
    down at the end of the session; skipped with a reason when ray is not installed."""
    ray = pytest.importorskip(
        "ray", reason="ray is not installed (pip install 'qdrant-xai[ray]'): --engine ray untested"
    )
    from qdrant_xai.storage.distributed import start_ray

    started = start_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()
