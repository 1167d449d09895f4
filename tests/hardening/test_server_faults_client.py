"""Server faults: transient failures, a restart mid-run, a server that stays down.

Without a server, a real embedded ``QdrantClient(path=...)`` is wrapped in
:class:`FaultyClient`, which raises qdrant-client's real transport errors
(``ResponseHandlingException(httpx.ConnectError)``, ``UnexpectedResponse(503)``, a read
timeout after the request was applied) at chosen calls, or "restarts" (closes the client,
fails the calls in between, opens a new one on the same storage). Indexing and backfill
must end in the same state as a clean run: no point lost, none duplicated.

Over real HTTP, a loopback TCP server started by the test never answers (timeout), closes
connections, or answers 503 (echoing the API key in its reason phrase, as a misbehaving
proxy might): the retries must happen, the final error must name the URL, and no message,
not even the command line's stderr, may contain the API key.

With ``QDRANT_URL`` set (or the compose file's engine answering) the proxy tests run against
that server as well.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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

pytestmark = pytest.mark.hardening

FAMILY = "server-faults"
API_KEY = "secret-key-123"
N_IMAGES = 6
BATCH = 3
ATTEMPTS = 4
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


# -- a fake clock and sleep, so backoff is observed without waiting ------------------------


@dataclass
class FakeTime:
    """``sleep`` records each pause and advances ``clock``; nothing waits."""

    now: float = 0.0
    pauses: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def survived(figures: Any, faults: int, fake: FakeTime | None = None) -> None:
    """Records ``faults`` transient faults injected and survived (and the pauses taken)."""
    figures.add(FAMILY, "transient faults injected", faults)
    figures.add(FAMILY, "transient faults survived", faults)
    if fake is not None:
        figures.add(FAMILY, "retries observed", len(fake.pauses))


def fast_policy(fake: FakeTime, **overrides: Any) -> RetryPolicy:
    options: dict[str, Any] = {
        "attempts": ATTEMPTS,
        "initial_delay": 0.5,
        "multiplier": 2.0,
        "max_delay": 8.0,
        "jitter": 0.0,
        "deadline": 60.0,
    }
    options.update(overrides)
    return RetryPolicy(sleep=fake.sleep, clock=fake.clock, **options)


# -- the fault-injecting proxy ------------------------------------------------------------


def connect_error() -> Exception:
    return ResponseHandlingException(httpx.ConnectError("[Errno 111] Connection refused"))


def unavailable_503() -> Exception:
    return UnexpectedResponse(503, "Service Unavailable", b'{"status":"down"}', httpx.Headers())


def read_timeout() -> Exception:
    return ResponseHandlingException(httpx.ReadTimeout("timed out"))


# a fault: (mode, error factory); "before" fails without sending the request, "after" sends
# it (the server applies it) and then loses the answer
Fault = tuple[str, Callable[[], Exception]]
BEFORE_CONNECT: Fault = ("before", connect_error)
BEFORE_503: Fault = ("before", unavailable_503)
AFTER_TIMEOUT: Fault = ("after", read_timeout)
KINDS = {"connect": BEFORE_CONNECT, "503": BEFORE_503, "lost-answer": AFTER_TIMEOUT}


class FaultyClient:
    """Forwards every public call to a real ``QdrantClient`` and fails chosen ones.

    Calls are numbered by operation: ``op`` counts the calls that succeeded, ``tries`` the
    failed attempts of the current one, so ``schedule(op, tries)`` can fail an operation a
    given number of times whatever the retry policy does. ``restart=(op, down)`` closes the
    real client when operation ``op`` starts, fails ``down`` attempts with connection errors,
    then opens a new client on the same storage; ``down_from=op`` fails everything from
    operation ``op`` on (a server that stays down).
    """

    def __init__(
        self,
        opener: Callable[[], QdrantClient],
        *,
        schedule: Callable[[int, int], Fault | None] | None = None,
        restart: tuple[int, int] | None = None,
        down_from: int | None = None,
    ) -> None:
        self._opener = opener
        self.inner: QdrantClient | None = opener()
        self._schedule = schedule
        self._restart = restart
        self._down_from = down_from
        self.op = 0
        self.tries = 0
        self.attempts = 0
        self.faults = 0
        self.restarts = 0
        self.failed_names: list[str] = []

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__["inner"] or self.__dict__.get("_last")
        value = getattr(inner, name)
        if name.startswith("_") or name == "close" or not callable(value):
            return value
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def _fail(self, name: str, error: Exception) -> Exception:
        self.tries += 1
        self.faults += 1
        self.failed_names.append(name)
        return error

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.attempts += 1
        if self._down_from is not None and self.op >= self._down_from:
            raise self._fail(name, connect_error())
        if self._restart is not None and self.op == self._restart[0]:
            down = self._restart[1]
            if self.inner is not None:
                self.__dict__["_last"] = self.inner
                self.inner.close()
                self.inner = None
            if self.tries < down:
                raise self._fail(name, connect_error())
            self.inner = self._opener()
            self.restarts += 1
            self._restart = None
        fault = self._schedule(self.op, self.tries) if self._schedule else None
        if fault is not None and fault[0] == "before":
            raise self._fail(name, fault[1]())
        assert self.inner is not None
        result = getattr(self.inner, name)(*args, **kwargs)
        if fault is not None:  # "after": applied, answer lost
            raise self._fail(name, fault[1]())
        self.op += 1
        self.tries = 0
        return result


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
    points: list[Any] = []
    offset = None
    while True:
        page, offset = client.scroll(
            collection, limit=64, offset=offset, with_payload=True, with_vectors=True
        )
        points += page
        if offset is None:
            break
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
def clean_states(tmp_path_factory: pytest.TempPathFactory, scenes: Path, tiny_encoder: ClipEncoder):
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


# -- (a) transient faults at chosen calls ------------------------------------------------------


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
        proxy = backend.proxy(schedule=schedule)
        collection = fresh_name()
        try:
            index_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
            assert proxy.faults > 0, label
            assert len(fake.pauses) == proxy.faults, label  # one pause per retried failure
            compare(figures, clean, snapshot(proxy.inner, collection))
        finally:
            _drop(proxy, collection, backend)
            proxy.close()
        survived(figures, proxy.faults, fake)
        figures.add(FAMILY, "runs with faults (indexing)", 1)


def test_backfill_survives_transient_faults(
    backend: Backend, scenes: Path, tiny_encoder: ClipEncoder, clean_states: Any, figures: Any
) -> None:
    clean = clean_states["backfill"]
    for label, schedule in _schedules(clean_states["backfill_calls"], figures, "backfill"):
        fake = FakeTime()
        proxy = backend.proxy()
        collection = fresh_name()
        try:
            index_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
            strip_features(proxy.inner, collection)
            start = proxy.op
            proxy._schedule = lambda op, tries, s=schedule, start=start: s(op - start, tries)
            backfill_run(proxy, tiny_encoder, collection, scenes, fast_policy(fake))
            assert proxy.faults > 0, label
            assert len(fake.pauses) == proxy.faults, label
            proxy._schedule = None
            compare(figures, clean, snapshot(proxy.inner, collection))
        finally:
            _drop(proxy, collection, backend)
            proxy.close()
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
            proxy = backend.proxy()
            collection = fresh_name()
            try:
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
            finally:
                _drop(proxy, collection, backend)
                proxy.close()
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
        proxy = backend.proxy(down_from=at)
        collection = fresh_name()
        try:
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
        finally:
            proxy._down_from = None
            _drop(proxy, collection, backend)
            proxy.close()


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


# -- the policy itself ----------------------------------------------------------------------------


def test_policy_backoff_deadline_and_what_is_not_retried(figures: Any) -> None:
    fake = FakeTime()
    policy = fast_policy(fake, attempts=10, initial_delay=1.0, max_delay=4.0, deadline=10.0)
    calls = 0

    def always_down() -> None:
        nonlocal calls
        calls += 1
        raise connect_error()

    with pytest.raises(QdrantUnavailableError, match=r"after 4 attempts over 7\.0 s"):
        policy.call(always_down, what="a test call")
    assert fake.pauses == [1.0, 2.0, 4.0]  # 1+2+4 = 7 s; the next pause (4) would pass 10 s
    assert calls == 4  # the deadline stopped it before attempts (10) ran out

    # not transient: passed through unchanged, at once
    for error in (
        UnexpectedResponse(404, "Not Found", b"", httpx.Headers()),
        UnexpectedResponse(400, "Bad Request", b"", httpx.Headers()),
        ResponseHandlingException(ValueError("bad json")),
        ValueError("a bug"),
    ):
        fake.pauses.clear()
        tried = 0

        def fails(error: Exception = error) -> None:
            nonlocal tried
            tried += 1
            raise error

        with pytest.raises(type(error)) as caught:
            policy.call(fails, what="x")
        assert caught.value is error and tried == 1 and fake.pauses == []

    # transient kinds are retried, then the call succeeds
    for error in (
        connect_error(),
        read_timeout(),
        unavailable_503(),
        UnexpectedResponse(429, "Too Many Requests", b"", httpx.Headers({"retry-after": "3"})),
        ConnectionResetError("reset"),
        TimeoutError("slow"),
    ):
        fake.pauses.clear()
        assert policy.call(_flaky([error]), what="x") == "ok"
        expected = 3.0 if isinstance(error, UnexpectedResponse) and error.status_code == 429 else 1
        assert fake.pauses == [expected]  # a 429's Retry-After is honoured (up to max_delay)
        figures.add(FAMILY, "transient error kinds retried", 1)


def _flaky(failures: list[Exception]) -> Callable[[], str]:
    """A call that raises ``failures`` one by one, then answers "ok"."""

    def call() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    return call


# -- (b) a real client against a misbehaving loopback server ---------------------------------


class LoopbackServer:
    """A TCP server on 127.0.0.1 that misbehaves: ``hang`` (accepts, never answers),
    ``close`` (accepts, closes at once), ``503`` (answers 503 with the request's api-key
    header echoed in the reason phrase), ``flaky`` (503 ``flaky_failures`` times, then a
    valid answer to ``/collections/<name>/exists``). Counts requests; remembers keys seen."""

    def __init__(self, mode: str, flaky_failures: int = 2) -> None:
        self.mode = mode
        self.flaky_failures = flaky_failures
        self.requests = 0
        self.keys_seen: set[str] = set()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        if self.mode == "close":
            self.requests += 1
            conn.close()
            return
        conn.settimeout(5)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            conn.close()
            return
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        path = lines[0].split(" ")[1] if lines and " " in lines[0] else ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "api-key":
                self.keys_seen.add(value.strip())
        if path == "/" or not path.startswith("/collections"):
            conn.sendall(_http(200, "OK", b'{"title":"fake","version":"1.15.0"}'))
            conn.close()
            return
        self.requests += 1
        if self.mode == "hang":
            self._held.append(conn)  # never answered
            return
        if self.mode == "flaky" and self.requests > self.flaky_failures:
            body = b'{"result":{"exists":true},"status":"ok","time":0.0}'
            conn.sendall(_http(200, "OK", body))
        else:
            echoed = ",".join(sorted(self.keys_seen)) or "no key"
            conn.sendall(_http(503, f"Unavailable for {echoed}", b'{"status":"down"}'))
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._held:
            conn.close()
        self._sock.close()


def _http(status: int, reason: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


@pytest.fixture
def loopback(request: pytest.FixtureRequest) -> Iterator[Callable[..., LoopbackServer]]:
    servers: list[LoopbackServer] = []

    def start(mode: str, **options: Any) -> LoopbackServer:
        server = LoopbackServer(mode, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _remote(url: str) -> QdrantClient:
    return QdrantClient(url=url, api_key=API_KEY, timeout=1, check_compatibility=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
@pytest.mark.parametrize("mode", ["hang", "close", "503", "refused"])
def test_real_client_against_a_misbehaving_server(
    mode: str, loopback: Callable[..., LoopbackServer], tiny_encoder: ClipEncoder, figures: Any
) -> None:
    attempts = figures.count(FAMILY, "attempts per loopback outage", reduced=2, full=4)
    server = loopback(mode) if mode != "refused" else None
    url = server.url if server else f"http://127.0.0.1:{_free_port()}"
    client = _remote(url)
    fake = FakeTime()
    start = time.monotonic()
    try:
        with pytest.raises(QdrantUnavailableError) as caught:
            Searcher(
                client,
                tiny_encoder,
                collection_name="photos",
                retry=fast_policy(fake, attempts=attempts),
            ).search_images("a red circle")
    finally:
        client.close()
    message = str(caught.value)
    assert url in message and f"after {attempts} attempts" in message, message
    assert "\n" not in message
    if server is not None:
        assert server.requests == attempts  # every attempt reached the server
    if server is not None and mode != "close":
        assert API_KEY in server.keys_seen  # the key was sent ...
    leaks = _leaks(caught.value)
    figures.add(FAMILY, "API key leaks", leaks)  # ... and never shown
    assert leaks == 0, message
    if mode == "hang":
        assert time.monotonic() - start >= attempts * 0.9  # each attempt waited its timeout
    figures.add(FAMILY, "loopback outages (hang, close, 503, refused)", 1)
    figures.add(FAMILY, "final errors", 1)
    figures.add(FAMILY, "persistent outages", 1)
    figures.add(FAMILY, "retries observed", len(fake.pauses))


def _leaks(exc: BaseException) -> int:
    """Places the API key shows up: the message, its chain, the formatted traceback."""
    import traceback

    texts = [str(exc), "".join(traceback.format_exception(exc))]
    cause = exc.__cause__
    while cause is not None:
        texts.append(str(cause))
        cause = cause.__cause__
    return sum(API_KEY in text for text in texts)


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_a_server_that_recovers_is_used(
    loopback: Callable[..., LoopbackServer], figures: Any
) -> None:
    server = loopback("flaky", flaky_failures=2)
    client = _remote(server.url)
    fake = FakeTime()
    try:
        exists = fast_policy(fake).call(client.collection_exists, "photos", what="probe")
    finally:
        client.close()
    assert exists is True
    assert server.requests == 3 and fake.pauses == [0.5, 1.0]
    survived(figures, 2, fake)


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_retriever_sync_and_async_outage(
    loopback: Callable[..., LoopbackServer], tiny_encoder: ClipEncoder, figures: Any
) -> None:
    from langchain_qdrant_xai import QdrantXaiRetriever

    server = loopback("503")
    fake = FakeTime()
    client = _remote(server.url)
    aclient = AsyncQdrantClient(
        url=server.url, api_key=API_KEY, timeout=1, check_compatibility=False
    )
    retriever = QdrantXaiRetriever(
        client=client,
        async_client=aclient,
        encoder=tiny_encoder,
        collection_name="photos",
        retry=fast_policy(fake, attempts=3),
    )
    try:
        with pytest.raises(QdrantUnavailableError) as sync_error:
            retriever.invoke("a red circle")
        with pytest.raises(QdrantUnavailableError) as async_error:
            asyncio.run(retriever.ainvoke("a red circle"))
    finally:
        client.close()
        asyncio.run(aclient.close())
    for caught in (sync_error, async_error):
        assert server.url in str(caught.value) and "after 3 attempts" in str(caught.value)
        leaks = _leaks(caught.value)
        figures.add(FAMILY, "API key leaks", leaks)
        assert leaks == 0
        figures.add(FAMILY, "final errors", 1)
        figures.add(FAMILY, "persistent outages", 1)
    assert server.requests == 6 and fake.pauses == [0.5, 1.0, 0.5, 1.0]
    figures.add(FAMILY, "retries observed", len(fake.pauses))


def test_cli_outage_is_one_line_without_the_key(
    loopback: Callable[..., LoopbackServer],
    tiny_model_dir: Path,
    figures: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``qdrant-xai search --url ...`` with QDRANT_API_KEY set, against a server answering
    503 with the key in its reason phrase: one ``retrying:`` line per retry, then one
    ``error:`` line naming the URL, exit status 1, and the key nowhere in stdout, stderr or
    the retry log."""
    from qdrant_xai.cli import main

    server = loopback("503")
    monkeypatch.setenv("QDRANT_API_KEY", API_KEY)
    caplog.set_level(logging.INFO, logger="qdrant_xai")
    argv = ["search", "a red circle", "--url", server.url, "--model", str(tiny_model_dir)]
    argv += ["--retries", "2", "--timeout", "1", "--collection", "photos"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qdrant-client: "Api key is used with an insecure ..."
        status = main(argv)
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 1, err
    retries = [line for line in err.splitlines() if line.startswith("retrying:")]
    assert len(errors) == 1 and err.strip().splitlines() == [*retries, errors[0]], err
    assert len(retries) == 1 and server.url in retries[0] and "***" in retries[0]
    assert server.url in errors[0] and "after 2 attempts" in errors[0]
    assert server.requests == 2 and API_KEY in server.keys_seen
    assert "retrying in" in caplog.text and "***" in caplog.text  # redacted, not dropped
    leaks = (API_KEY in err) + (API_KEY in out) + (API_KEY in caplog.text)
    figures.add(FAMILY, "API key leaks", leaks)
    assert leaks == 0, err
    figures.add(FAMILY, "final errors", 1)
    figures.add(FAMILY, "persistent outages", 1)
    figures.add(FAMILY, "retries observed", server.requests - 1)


def test_evaluation_survives_transient_faults(
    scenes: Path, tiny_encoder: ClipEncoder, figures: Any
) -> None:
    """`qdrant-xai eval` against a flaky Qdrant: every call fails once (connection refused,
    503 or a lost answer in turn); the report's numbers equal a clean run's."""
    from qdrant_xai.eval.retrieval import read_dataset

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
