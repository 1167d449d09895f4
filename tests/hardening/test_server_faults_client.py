"""Server faults injected into a real client: transient failures, a restart, an outage.

Without a server, a real embedded ``QdrantClient(path=...)`` is wrapped in
:class:`~tests.hardening._faults.FaultyClient`, which raises qdrant-client's real transport
errors (``ResponseHandlingException(httpx.ConnectError)``, ``UnexpectedResponse(503)``, a
read timeout after the request was applied) at chosen calls, or "restarts" (closes the
client, fails the calls in between, opens a new one on the same storage), or stays down.
Indexing, backfill and evaluation must end in the same state as a clean run: no point lost,
none duplicated; an outage gives one error naming the storage. With ``QDRANT_URL`` set (or
the compose file's engine answering) the same tests run against that server as well.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException

from qdrant_xai import (
    Backfiller,
    ClipEncoder,
    ImageSourcePolicy,
    Indexer,
    PayloadKeys,
    QdrantUnavailableError,
    RetryPolicy,
    Searcher,
)
from qdrant_xai.demo.world import write_scene_folder
from tests.hardening._faults import (
    AFTER_TIMEOUT,
    ATTEMPTS,
    BEFORE_503,
    BEFORE_CONNECT,
    FAMILY,
    KINDS,
    FakeTime,
    Fault,
    FaultyClient,
    fast_policy,
    survived,
)
from tests.hardening._points import all_points

pytestmark = pytest.mark.hardening

N_IMAGES = 6
BATCH = 3
BACKENDS = [
    "embedded",
    pytest.param(
        "server",
        marks=pytest.mark.skipif(
            not os.environ.get("QDRANT_URL"),
            reason="set QDRANT_URL to run the server-fault tests against a Qdrant server",
        ),
    ),
    pytest.param("docker", marks=pytest.mark.docker),
]


# -- backends and data --------------------------------------------------------------------


@dataclass
class Backend:
    """Opens clients on one storage: an embedded folder or a server."""

    name: str
    opener: Callable[[], QdrantClient]
    where: str  # what the error message must name

    def proxy(self, **options: Any) -> FaultyClient:
        return FaultyClient(self.opener, **options)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "embedded":
        path = str(tmp_path / "qdrant")
        QdrantClient(path=path).close()  # create the folder
        return Backend("embedded", lambda: QdrantClient(path=path), path)
    url = (
        os.environ["QDRANT_URL"]
        if request.param == "server"
        else request.getfixturevalue("docker_qdrant_url")
    )
    key = os.environ.get("QDRANT_API_KEY") if request.param == "server" else None
    return Backend(request.param, lambda: QdrantClient(url=url, api_key=key), url.rstrip("/"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fault-scenes")
    write_scene_folder(root, N_IMAGES, seed=11, size=48)
    return root


def snapshot(client: Any, collection: str) -> dict[str, tuple[str, tuple[float, ...]]]:
    """Every point: id -> (payload as JSON, vector values), straight from Qdrant."""
    points = all_points(client, collection, page=64)
    result = {}
    for point in points:
        vectors = point.vector if isinstance(point.vector, dict) else {"": point.vector}
        flat = tuple(round(float(x), 5) for name in sorted(vectors) for x in (vectors[name] or []))
        result[str(point.id)] = (json.dumps(point.payload, sort_keys=True), flat)
    assert len(result) == len(points), "a point id came back twice"
    assert client.count(collection, exact=True).count == len(points)
    return result


def compare(figures: Any, clean: dict[str, Any], got: dict[str, Any]) -> None:
    """Records points lost and duplicated (extra) against the clean run; both must be 0."""
    lost = len(set(clean) - set(got))
    extra = len(set(got) - set(clean))
    figures.add(FAMILY, "points lost", lost)
    figures.add(FAMILY, "points duplicated or extra", extra)
    figures.add(FAMILY, "points compared with a clean run", len(clean))
    assert lost == 0 and extra == 0
    differing = [pid for pid in clean if clean[pid] != got[pid]]
    assert not differing, f"{len(differing)} points differ from the clean run"


def index_run(
    client: Any, encoder: ClipEncoder, collection: str, scenes: Path, retry: RetryPolicy
) -> None:
    indexer = Indexer(client, encoder, collection_name=collection, batch_size=BATCH, retry=retry)
    summary = indexer.index_folder(scenes, captions=scenes / "captions.csv", progress=False)
    assert not summary.failed


def strip_features(client: Any, collection: str) -> None:
    """Makes a collection look foreign: no features, no fingerprint (backfill's input)."""
    ids = [str(k) for k in snapshot(client, collection)]
    client.delete_payload(
        collection,
        keys=[PayloadKeys.FEATURES, PayloadKeys.FINGERPRINT, PayloadKeys.PROFILE],
        points=ids,
        wait=True,
    )


def backfill_run(
    client: Any, encoder: ClipEncoder, collection: str, scenes: Path, retry: RetryPolicy
) -> None:
    summary = Backfiller(
        client,
        encoder,
        collection_name=collection,
        sources=ImageSourcePolicy.from_roots([scenes]),
        batch_size=BATCH,
        retry=retry,
    ).run(progress=False)
    assert not summary.failed


def fresh_name() -> str:
    return f"faults_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def clean_states(
    tmp_path_factory: pytest.TempPathFactory, scenes: Path, tiny_encoder: ClipEncoder
) -> dict[str, Any]:
    """End states of clean indexing and backfill runs (embedded), and their call counts."""
    path = str(tmp_path_factory.mktemp("clean") / "qdrant")
    fake = FakeTime()
    proxy = FaultyClient(lambda: QdrantClient(path=path))
    index_run(proxy, tiny_encoder, "clean", scenes, fast_policy(fake))
    index_calls = proxy.op
    indexed = snapshot(proxy, "clean")
    strip_features(proxy, "clean")
    before = proxy.op
    backfill_run(proxy, tiny_encoder, "clean", scenes, fast_policy(fake))
    backfill_calls = proxy.op - before
    backfilled = snapshot(proxy, "clean")
    proxy.close()
    assert fake.pauses == []
    return {
        "index": indexed,
        "backfill": backfilled,
        "index_calls": index_calls,
        "backfill_calls": backfill_calls,
    }


@contextmanager
def faulty_run(backend: Backend, **options: Any) -> Iterator[tuple[FaultyClient, str]]:
    """A fault-injecting proxy on ``backend`` (``options`` as :class:`FaultyClient` takes
    them) and a fresh collection name; afterwards the storage is up again, the collection
    dropped (on a server) and the proxy closed."""
    proxy = backend.proxy(**options)
    collection = fresh_name()
    try:
        yield proxy, collection
    finally:
        proxy._down_from = None
        _drop(proxy, collection, backend)
        proxy.close()


# -- transient faults, a restart, an outage ---------------------------------------------------


def _every_op(kinds: list[Fault], times: int) -> Callable[[int, int], Fault | None]:
    """Every operation fails ``times`` times, the kinds taken in turn."""

    def schedule(op: int, tries: int) -> Fault | None:
        return kinds[(op + tries) % len(kinds)] if tries < times else None

    return schedule


def _at(op_at: int, fault: Fault, times: int) -> Callable[[int, int], Fault | None]:
    def schedule(op: int, tries: int) -> Fault | None:
        return fault if op == op_at and tries < times else None

    return schedule


def _schedules(calls: int, figures: Any, name: str) -> list[tuple[str, Callable[..., Any]]]:
    """Reduced: two runs, every operation failing (mixed kinds, then lost answers).
    Full: also one run per (operation, kind), failing ATTEMPTS - 1 times in a row."""
    runs: list[tuple[str, Callable[..., Any]]] = [
        ("every op, connect/503 x2", _every_op([BEFORE_CONNECT, BEFORE_503], 2)),
        ("every op, lost answer x1", _every_op([AFTER_TIMEOUT], 1)),
    ]
    single = figures.count(FAMILY, f"{name}: single-fault runs", reduced=0, full=calls * 3)
    if single:
        for op in range(calls):
            for kind, fault in KINDS.items():
                runs.append((f"op {op} {kind} x{ATTEMPTS - 1}", _at(op, fault, ATTEMPTS - 1)))
    return runs


def test_indexing_survives_transient_faults(
    backend: Backend, scenes: Path, tiny_encoder: ClipEncoder, clean_states: Any, figures: Any
) -> None:
    clean = clean_states["index"]
    for label, schedule in _schedules(clean_states["index_calls"], figures, "indexing"):
        fake = FakeTime()
        with faulty_run(backend, schedule=schedule) as (proxy, collection):
            index_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
            assert proxy.faults > 0, label
            assert len(fake.pauses) == proxy.faults, label  # one pause per retried failure
            compare(figures, clean, snapshot(proxy.inner, collection))
        survived(figures, proxy.faults, fake)
        figures.add(FAMILY, "runs with faults (indexing)", 1)


def test_backfill_survives_transient_faults(
    backend: Backend, scenes: Path, tiny_encoder: ClipEncoder, clean_states: Any, figures: Any
) -> None:
    clean = clean_states["backfill"]
    for label, schedule in _schedules(clean_states["backfill_calls"], figures, "backfill"):
        fake = FakeTime()
        with faulty_run(backend) as (proxy, collection):
            index_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
            strip_features(proxy.inner, collection)
            start = proxy.op
            proxy._schedule = lambda op, tries, s=schedule, start=start: s(op - start, tries)
            backfill_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
            assert proxy.faults > 0, label
            assert len(fake.pauses) == proxy.faults, label
            proxy._schedule = None
            compare(figures, clean, snapshot(proxy.inner, collection))
        survived(figures, proxy.faults, fake)
        figures.add(FAMILY, "runs with faults (backfill)", 1)


def test_restart_mid_run_is_survived(
    backend: Backend, scenes: Path, tiny_encoder: ClipEncoder, clean_states: Any, figures: Any
) -> None:
    """The client's storage goes away at operation k (closed), ATTEMPTS - 1 attempts fail,
    then a new client opens on the same storage; indexing and backfill carry on."""
    calls = clean_states["index_calls"]
    n = figures.count(FAMILY, "restart points per run kind", reduced=1, full=calls - 1)
    points = _spread(1, calls - 1, n)
    for at in points:
        for kind in ("index", "backfill"):
            fake = FakeTime()
            with faulty_run(backend) as (proxy, collection):
                if kind == "index":
                    proxy._restart = (at, ATTEMPTS - 1)
                    index_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
                else:
                    index_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
                    strip_features(proxy.inner, collection)
                    back = min(at, clean_states["backfill_calls"] - 1)
                    proxy._restart = (proxy.op + back, ATTEMPTS - 1)
                    backfill_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
                assert proxy.restarts == 1
                assert len(fake.pauses) == ATTEMPTS - 1
                compare(figures, clean_states[kind], snapshot(proxy.inner, collection))
            figures.add(FAMILY, "restarts survived", proxy.restarts)
            figures.add(FAMILY, "retries observed", len(fake.pauses))
            survived(figures, proxy.faults)


def test_outage_gives_one_error_after_the_attempts_then_resumes(
    backend: Backend, scenes: Path, tiny_encoder: ClipEncoder, clean_states: Any, figures: Any
) -> None:
    """A storage that stays down from operation k: exactly one QdrantUnavailableError,
    naming the path or URL, after ATTEMPTS attempts with the backoff pauses; a rerun once it
    is back finishes the job with no point lost or duplicated."""
    calls = clean_states["index_calls"]
    n = figures.count(FAMILY, "outage points", reduced=1, full=calls)
    for at in _spread(0, calls - 1, n):
        fake = FakeTime()
        with faulty_run(backend, down_from=at) as (proxy, collection):
            with pytest.raises(QdrantUnavailableError) as caught:
                index_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
            message = str(caught.value)
            assert backend.where in message, message
            assert f"after {ATTEMPTS} attempts" in message
            assert proxy.faults == ATTEMPTS  # one operation, tried ATTEMPTS times, then stop
            assert fake.pauses == [0.5, 1.0, 2.0]
            assert isinstance(caught.value.__cause__, ResponseHandlingException)
            figures.add(FAMILY, "persistent outages", 1)
            figures.add(FAMILY, "final errors", 1)
            figures.add(FAMILY, "retries observed", len(fake.pauses))
            figures.record(FAMILY, "backoff pauses observed (s)", fake.pauses)
            proxy._down_from = None  # the server is back: rerun
            index_run(proxy, tiny_encoder, collection, scenes, fast_policy(FakeTime()))
            compare(figures, clean_states["index"], snapshot(proxy.inner, collection))


def test_search_outage_names_the_storage(
    backend: Backend, scenes: Path, tiny_encoder: ClipEncoder, figures: Any
) -> None:
    fake = FakeTime()
    proxy = backend.proxy(down_from=0)
    try:
        searcher = Searcher(
            proxy, tiny_encoder, collection_name="anything", retry=fast_policy(fake)
        )
        with pytest.raises(QdrantUnavailableError, match="reading collection 'anything'") as e:
            searcher.search_images("a red circle")
        assert backend.where in str(e.value)
        assert proxy.attempts == ATTEMPTS
    finally:
        proxy._down_from = None
        proxy.close()
    figures.add(FAMILY, "final errors", 1)
    figures.add(FAMILY, "persistent outages", 1)
    figures.add(FAMILY, "retries observed", len(fake.pauses))


def _spread(low: int, high: int, n: int) -> list[int]:
    """``n`` operation numbers spread over ``low..high`` (the middle one for n = 1)."""
    if n == 1:
        return [(low + high) // 2]
    return sorted({round(x) for x in np.linspace(low, high, n)})


def _drop(proxy: FaultyClient, collection: str, backend: Backend) -> None:
    if backend.name != "embedded" and proxy.inner is not None:
        proxy.inner.delete_collection(collection)


# -- evaluation ---------------------------------------------------------------------------


def test_evaluation_survives_transient_faults(
    scenes: Path, tiny_encoder: ClipEncoder, figures: Any
) -> None:
    """`qdrant-xai eval` against a flaky Qdrant: every call fails once (connection refused,
    503 or a lost answer in turn); the report's numbers equal a clean run's."""
    from qdrant_xai.eval.datasets import read_dataset

    dataset = read_dataset(scenes)

    def evaluated(client: Any, retry: RetryPolicy | None) -> dict[str, Any]:
        from qdrant_xai.eval.retrieval import evaluate

        report = evaluate(
            client, tiny_encoder, dataset, collection_name="ev", explain_top=2, retry=retry
        )
        keep = ("queries", "candidates", "recall", "mean_ap", "median_rank", "misses")
        return {
            name: {key: getattr(metrics, key) for key in keep}
            for name, metrics in report.metrics.items()
        } | {"unchanged": report.invariance is not None and report.invariance.verdict != "changed"}

    clean_client = QdrantClient(":memory:")
    clean = evaluated(clean_client, None)
    clean_client.close()
    assert clean["unchanged"]
    fake = FakeTime()
    proxy = FaultyClient(
        lambda: QdrantClient(":memory:"),
        schedule=_every_op([BEFORE_CONNECT, BEFORE_503, AFTER_TIMEOUT], 1),
    )
    try:
        assert evaluated(proxy, fast_policy(fake)) == clean
    finally:
        proxy.close()
    assert proxy.faults > 10 and len(fake.pauses) == proxy.faults
    survived(figures, proxy.faults, fake)
    figures.record(FAMILY, "evaluation runs with a fault on every call", 1)
