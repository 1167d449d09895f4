"""Server faults over real HTTP: a real client against misbehaving loopback servers.

A loopback TCP server started by the test never answers (timeout), closes connections,
answers 503 (echoing the API key in its reason phrase, as a misbehaving proxy might), or
answers 503 twice and then recovers; a port nobody listens on refuses. The retries must
happen, the final error must name the URL, and no message, not even the command line's
stderr or the retry log, may contain the API key. Through the searcher, the LangChain
retriever (sync and async) and ``qdrant-xai search``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient

from qdrant_xai import ClipEncoder, QdrantUnavailableError, Searcher
from tests.hardening._faults import FAMILY, FakeTime, fast_policy, survived

pytestmark = pytest.mark.hardening

API_KEY = "secret-key-123"


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
