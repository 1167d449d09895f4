"""Shared parts of the server-fault tests (``test_server_faults_*.py``).

A fake clock and sleep, so that retry backoff is observed without waiting; a fast
:class:`~qdrant_xai.RetryPolicy` on them; qdrant-client's real transport errors; and
:class:`FaultyClient`, which forwards every call to a real ``QdrantClient`` and fails
chosen ones, restarts the storage mid-run or keeps it down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qdrant_xai import RetryPolicy

FAMILY = "server-faults"
ATTEMPTS = 4


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

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__["inner"] or self.__dict__.get("_last")
        value = getattr(inner, name)
        if name.startswith("_") or name == "close" or not callable(value):
            return value
        return lambda *args, **kwargs: self._call(name, args, kwargs)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()

    def _fail(self, error: Exception) -> Exception:
        self.tries += 1
        self.faults += 1
        return error

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.attempts += 1
        if self._down_from is not None and self.op >= self._down_from:
            raise self._fail(connect_error())
        if self._restart is not None and self.op == self._restart[0]:
            down = self._restart[1]
            if self.inner is not None:
                self.__dict__["_last"] = self.inner
                self.inner.close()
                self.inner = None
            if self.tries < down:
                raise self._fail(connect_error())
            self.inner = self._opener()
            self.restarts += 1
            self._restart = None
        fault = self._schedule(self.op, self.tries) if self._schedule else None
        if fault is not None and fault[0] == "before":
            raise self._fail(fault[1]())
        assert self.inner is not None
        result = getattr(self.inner, name)(*args, **kwargs)
        if fault is not None:  # "after": applied, answer lost
            raise self._fail(fault[1]())
        self.op += 1
        self.tries = 0
        return result
