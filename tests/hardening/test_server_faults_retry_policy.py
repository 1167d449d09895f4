"""Server faults, the retry policy alone: backoff, deadline, and what is not retried.

:class:`~qdrant_xai.RetryPolicy` on a fake clock: the pauses double up to the cap, the
deadline stops the attempts early, errors that are not transient (404, 400, a bad answer, a
bug) pass through at once, and each transient kind (connection refused, read timeout, 503,
429 with Retry-After, reset, timeout) is retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qdrant_xai import QdrantUnavailableError
from tests.hardening._faults import (
    FAMILY,
    FakeTime,
    connect_error,
    fast_policy,
    read_timeout,
    unavailable_503,
)

pytestmark = pytest.mark.hardening


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
