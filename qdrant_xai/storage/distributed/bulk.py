"""Bulk mode for large ingests into a Qdrant server: HNSW graph building deferred while
points stream in, and the previous settings restored at the end.

Qdrant's bulk-upload guidance ("Bulk Upload Vectors to a Qdrant Collection"): batches of
64-256 points, two to four parallel upload streams, and for a large ingest the HNSW graph
deferred with ``m: 0`` (low memory while uploading; ``indexing_threshold: 0`` disables
indexing entirely and needs more RAM), then set back so the graph is built once over the
whole collection. :func:`bulk_ingest` does the ``m`` switch around a block, in a
``try/finally``, so an error or Ctrl-C inside it restores the collection's own setting too.
An embedded Qdrant builds no HNSW graph, so there it changes nothing and says so.

Use::

    with bulk_ingest(client, "photos") as notes:
        indexer.index_folder("photos/")
    print(*notes, sep="\\n")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from qdrant_client import QdrantClient, models

from qdrant_xai.connection import describe_server
from qdrant_xai.retry import RetryPolicy

__all__ = ["EMBEDDED_NOTE", "bulk_ingest", "is_embedded"]

EMBEDDED_NOTE = (
    "bulk mode changes nothing on an embedded Qdrant (it builds no HNSW index); "
    "it applies to a server (--url)"
)


def is_embedded(client: Any) -> bool:
    """Whether ``client`` is qdrant-client's local mode (a folder or ``:memory:``)."""
    inner = getattr(client, "_client", client)
    return type(inner).__name__ in ("QdrantLocal", "AsyncQdrantLocal")


@contextmanager
def bulk_ingest(
    client: QdrantClient, collection_name: str, *, retry: RetryPolicy | None = None
) -> Iterator[list[str]]:
    """HNSW graph building deferred (``m=0``) on ``collection_name`` inside the block, and
    the collection's previous ``m`` set back on the way out, whatever ends the block.

    Yields the notes of the run (a list, filled in as the switch happens): the settings
    changed and restored, or why nothing was changed. The collection must exist."""
    retry = retry or RetryPolicy()
    notes: list[str] = []
    if is_embedded(client):
        notes.append(EMBEDDED_NOTE)
        yield notes
        return
    info = retry.call(
        client.get_collection,
        collection_name,
        what=f"reading the settings of collection {collection_name!r}",
        client=client,
    )
    previous = info.config.hnsw_config.m
    _set_m(client, collection_name, 0, retry)
    notes.append(
        f"bulk mode: HNSW graph building deferred on {collection_name!r} "
        f"({describe_server(client)}) while indexing (m {previous} -> 0)"
    )
    try:
        yield notes
    finally:
        _set_m(client, collection_name, previous, retry)
        notes.append(f"bulk mode: m set back to {previous}; Qdrant builds the HNSW graph now")


def _set_m(client: QdrantClient, collection_name: str, m: int, retry: RetryPolicy) -> None:
    retry.call(
        client.update_collection,
        collection_name,
        what=f"setting hnsw m={m} on collection {collection_name!r}",
        client=client,
        hnsw_config=models.HnswConfigDiff(m=m),
    )
