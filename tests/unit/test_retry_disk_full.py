"""A full disk is not retried: the retry policy raises DiskFullError at once, naming where."""

from __future__ import annotations

import errno
import sqlite3

import httpx
import pytest
from qdrant_client.http.exceptions import UnexpectedResponse

from qdrant_xai import DiskFullError, RetryPolicy


class Embedded:  # what describe_server reads of an embedded client
    location = "./qdrant_data"


def failing(exc: Exception, calls: list[int]):  # type: ignore[no-untyped-def]
    def fn() -> None:
        calls.append(1)
        raise exc

    return fn


@pytest.mark.parametrize(
    "exc",
    [
        sqlite3.OperationalError("database or disk is full"),
        OSError(errno.ENOSPC, "No space left on device"),
        UnexpectedResponse(
            500,
            "Internal Server Error",
            b'{"status":{"error":"No space left on device"}}',
            httpx.Headers(),
        ),
    ],
    ids=["sqlite", "enospc", "server-500"],
)
def test_a_full_disk_is_raised_at_once_not_retried(exc: Exception) -> None:
    calls: list[int] = []
    policy = RetryPolicy(attempts=5, sleep=lambda _: None)
    with pytest.raises(DiskFullError, match="the disk is full") as caught:
        policy.call(failing(exc, calls), what="upsert", client=Embedded())
    assert len(calls) == 1
    assert "embedded Qdrant at ./qdrant_data" in str(caught.value) or "Qdrant" in str(caught.value)
    assert caught.value.__cause__ is exc


def test_other_errors_pass_through_as_before() -> None:
    calls: list[int] = []
    policy = RetryPolicy(attempts=5, sleep=lambda _: None)
    with pytest.raises(ValueError, match="bad"):
        policy.call(failing(ValueError("bad"), calls), what="upsert", client=Embedded())
    assert len(calls) == 1
