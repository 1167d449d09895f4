"""One call at a time into an embedded Qdrant, and nothing else held while the model works.

An embedded Qdrant (``QdrantClient(path=...)`` or ``":memory:"``) keeps its points in
Python structures that are not safe to change from two threads at once, so its calls must be
serialised; the encoder serialises its own forward passes (``ClipEncoder.forward_lock``).
A server holding one lock for a whole request, model work included, makes every other
client wait for all of one client's long query. :class:`SerialClient` holds the lock for
one Qdrant call only, so the work of concurrent requests interleaves: another client waits
at most for one Qdrant call and one forward pass, never for a whole explanation. The MCP
server (``qdrant_xai_mcp``) and ``qdrant-xai serve`` use it.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, cast

from qdrant_client import QdrantClient

__all__ = ["SerialClient", "is_embedded", "serial_client"]


class SerialClient:
    """``client`` with each of its public methods run under ``lock``; every other attribute
    (``_client``, ``init_options``...) is the client's own.

    Args:
        client: the Qdrant client to wrap.
        lock: held for each call (reentrant: a call made by another one does not block).
    """

    def __init__(self, client: QdrantClient, lock: threading.RLock) -> None:
        self.wrapped = client
        self.lock = lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.wrapped, name)
        if name.startswith("_") or not callable(value):
            return value

        @functools.wraps(value)
        def serialised(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                return value(*args, **kwargs)

        return serialised

    def __repr__(self) -> str:
        return f"SerialClient({self.wrapped!r})"


def is_embedded(client: QdrantClient) -> bool:
    """Whether ``client`` runs Qdrant in this process (a folder or ``":memory:"``)."""
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


def serial_client(client: QdrantClient, lock: threading.RLock) -> QdrantClient:
    """``client`` itself for a Qdrant server (its HTTP client is thread-safe), else a
    :class:`SerialClient` over it (typed as the client it stands for)."""
    if not is_embedded(client):
        return client
    return cast(QdrantClient, SerialClient(client, lock))
