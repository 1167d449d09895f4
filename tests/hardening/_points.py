"""Reading a whole collection back, for the checks of several hardening families."""

from __future__ import annotations

from typing import Any


def all_points(client: Any, collection: str, *, page: int = 256) -> list[Any]:
    """Every point of ``collection`` with its payload and vectors, scrolled page by page.

    ``client`` is a ``QdrantClient`` or anything that forwards ``scroll`` to one (the
    fault-injecting proxy of the server-fault tests).
    """
    points: list[Any] = []
    offset = None
    while True:
        batch, offset = client.scroll(
            collection, limit=page, offset=offset, with_payload=True, with_vectors=True
        )
        points += batch
        if offset is None:
            return points
