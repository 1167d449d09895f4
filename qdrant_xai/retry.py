"""Talking to Qdrant when it misbehaves: retries with backoff and one clear error.

Every Qdrant call of the package goes through a :class:`RetryPolicy`. A transient failure
(the server cannot be reached, a request timed out, the server answered 408, 429 or a 5xx
gateway/availability status, gRPC ``UNAVAILABLE``/``DEADLINE_EXCEEDED``) is retried with
exponential backoff; when it persists, one :class:`~qdrant_xai.QdrantUnavailableError`
names the operation, the server (its URL, never its API key) and what to check. Any other
error (a missing collection, a bad request) passes through unchanged, at once.

Only idempotent operations are retried, and every Qdrant call of qdrant-xai is one: reads
(``retrieve``, ``scroll``, ``count``, ``query_points``, collection info), upserts of points
with deterministic ids (writing a point twice leaves one point), ``set_payload`` of the
same values, and collection creation that first checks whether the collection exists. So
a request whose answer was lost after the server applied it can be sent again safely.

Use::

    from qdrant_xai import RetryPolicy
    retry = RetryPolicy(attempts=6, max_delay=10)
    info = retry.call(client.get_collection, "photos", what="reading collection 'photos'")
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qdrant_xai.connection import describe_server, redact
from qdrant_xai.errors import QdrantUnavailableError
from qdrant_xai.files import disk_full_error

__all__ = [
    "TRANSIENT_STATUS",
    "RetryPolicy",
    "is_transient",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth retrying: timeout, rate limit, server/gateway errors
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

try:  # gRPC is optional (prefer_grpc=True clients)
    import grpc

    _GRPC_TRANSIENT: frozenset[Any] = frozenset(
        {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    )
    _RPC_ERROR: type[BaseException] | None = grpc.RpcError
except ImportError:  # pragma: no cover - grpcio comes with qdrant-client
    _GRPC_TRANSIENT = frozenset()
    _RPC_ERROR = None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure worth retrying (the server may answer next time)."""
    if isinstance(exc, ResponseHandlingException):
        source = getattr(exc, "source", None)
        # transport errors and timeouts; not a response that failed to parse
        return isinstance(source, httpx.TransportError | ConnectionError | TimeoutError)
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in TRANSIENT_STATUS
    if isinstance(exc, ConnectionError | TimeoutError | httpx.TransportError):
        return True
    if _RPC_ERROR is not None and isinstance(exc, _RPC_ERROR):
        code = getattr(exc, "code", None)
        try:
            return callable(code) and code() in _GRPC_TRANSIENT
        except Exception:  # a bare RpcError without a status
            return False
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How Qdrant calls are retried: attempts, exponential backoff, a total deadline.

    Attempt ``n`` (from 1) that fails transiently is followed by a pause of
    ``min(max_delay, initial_delay * multiplier ** (n - 1))``, spread by ``jitter`` (a
    fraction, ±) so that many clients do not retry in step; a ``Retry-After`` header of a
    429/503 answer is honoured up to ``max_delay``. Retrying stops after ``attempts``
    attempts, or before a pause that would end past ``deadline`` seconds from the first
    attempt; then :class:`~qdrant_xai.QdrantUnavailableError` is raised (from the last
    error). Non-transient errors pass through unchanged at once.

    Only idempotent operations may be retried: reads, upserts with deterministic ids,
    ``set_payload`` of fixed values. Every Qdrant call of qdrant-xai is one.

    Args:
        attempts: tries in all (1: no retry).
        initial_delay: seconds before the second attempt.
        multiplier: growth of the pause from one retry to the next.
        max_delay: upper bound of one pause, seconds.
        jitter: relative spread of each pause (0.1: ±10 %).
        deadline: upper bound of the whole call, seconds (``None``: attempts only). The
            client's own ``timeout`` bounds each attempt.
        sleep: waits a number of seconds (tests inject a recorder); in :meth:`acall` a
            non-default ``sleep`` may also return an awaitable.
        clock: monotonic seconds, for the deadline and the elapsed time in messages.
    """

    attempts: int = 5
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 8.0
    jitter: float = 0.1
    deadline: float | None = 60.0
    sleep: Callable[[float], Any] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError("deadline must be positive (or None)")

    # -- calling --------------------------------------------------------------------------

    def call(
        self, fn: Callable[..., T], *args: Any, what: str, client: Any = None, **kwargs: Any
    ) -> T:
        """``fn(*args, **kwargs)``, retried while it fails transiently.

        Args:
            fn: the Qdrant call (often a bound method of the client).
            what: the operation, for messages (``"upsert of 16 points into 'photos'"``).
            client: the client ``fn`` talks to, to name the server in messages (default:
                ``fn.__self__``).

        Raises:
            QdrantUnavailableError: the failure persisted through every attempt.
        """
        start = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                delay = self._next_delay(exc, attempt, start, what, _client_of(fn, client))
            self.sleep(delay)

    async def acall(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        what: str,
        client: Any = None,
        **kwargs: Any,
    ) -> T:
        """Async :meth:`call`, for ``AsyncQdrantClient`` methods (pauses with
        ``asyncio.sleep`` unless another ``sleep`` was given)."""
        start = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                delay = self._next_delay(exc, attempt, start, what, _client_of(fn, client))
            if self.sleep is time.sleep:
                await asyncio.sleep(delay)
            else:
                pause = self.sleep(delay)
                if inspect.isawaitable(pause):
                    await pause

    # -- steps ----------------------------------------------------------------------------

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt ``attempt`` (from 1), before jitter."""
        return float(min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1)))

    def _next_delay(
        self, exc: Exception, attempt: int, start: float, what: str, client: Any
    ) -> float:
        """The pause before the next attempt, or raises: ``exc`` itself when it is not
        transient, :class:`QdrantUnavailableError` when retrying is over, and
        :class:`~qdrant_xai.errors.DiskFullError` at once when the disk is full (a full
        disk does not empty itself between attempts)."""
        full = disk_full_error(exc, describe_server(client))
        if full is not None:
            raise full from exc
        if not is_transient(exc):
            raise exc
        delay = self.delay(attempt)
        if self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)
        delay = max(delay, min(_retry_after(exc), self.max_delay))
        elapsed = self.clock() - start
        out_of_time = self.deadline is not None and elapsed + delay > self.deadline
        if attempt >= self.attempts or out_of_time:
            raise _unavailable(exc, what, client, attempt, elapsed) from _cause(exc, client)
        logger.info(
            "%s: %s failed (%s); attempt %d of %d, retrying in %.2f s",
            describe_server(client),
            what,
            redact(_short(exc), client),
            attempt,
            self.attempts,
            delay,
        )
        return delay


# -- messages -----------------------------------------------------------------------------


def _unavailable(
    exc: Exception, what: str, client: Any, attempts: int, elapsed: float
) -> QdrantUnavailableError:
    server = describe_server(client)
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''} over {elapsed:.1f} s"
    if server.startswith("embedded"):
        check = "check that the folder is readable and not on a failing disk"
    else:
        check = (
            "check that the server is running and reachable from here, that the URL and "
            "port are right (QDRANT_URL / --url) and the API key is valid; if it is only "
            "slow, raise the timeout (--timeout)"
        )
    message = (
        f"{server} did not answer {what} after {tries} (last error: {_short(exc)}); "
        f"{check}. The operation is safe to rerun"
    )
    return QdrantUnavailableError(redact(message, client))


def _short(exc: BaseException) -> str:
    """One line naming the failure: ``ConnectError: [Errno 111] Connection refused``."""
    if isinstance(exc, UnexpectedResponse):
        text = f"HTTP {exc.status_code} {exc.reason_phrase}".strip()
    else:
        source = getattr(exc, "source", None) if isinstance(exc, ResponseHandlingException) else exc
        source = source if isinstance(source, BaseException) else exc
        detail = str(source) or repr(source)
        text = f"{type(source).__name__}: {detail}"
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= 200 else text[:197] + "..."


def _cause(exc: Exception, client: Any) -> Exception | None:
    """The error to chain, or None when its text carries a secret (tracebacks print it)."""
    text = f"{exc} {getattr(exc, 'source', '')}"
    return exc if redact(text, client) == text else None


def _client_of(fn: Callable[..., Any], client: Any) -> Any:
    return client if client is not None else getattr(fn, "__self__", None)


def _retry_after(exc: BaseException) -> float:
    headers = getattr(exc, "headers", None) if isinstance(exc, UnexpectedResponse) else None
    try:
        value = float(headers.get("retry-after", 0)) if headers is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
    return max(value, 0.0)
