"""Writers that fill a Qdrant collection exactly as each library's users do, and helpers
to compare a collection before and after qdrant-xai touched it.

``WRITERS`` maps a writer's name to ``write(client, collection_name, encoder, scenes) ->
Written``: LangChain (:mod:`.langchain_writers`), LlamaIndex (:mod:`.llamaindex_writers`),
mcp-server-qdrant (:mod:`.mcp_writers`). :func:`user_search` is the raw ``query_points``
each library sends, :func:`library_search` what its users get back; :func:`snapshot` is
every point of a collection (ids, all vectors, full payload), compared exactly
(payloads) and to 1e-6 (vectors).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder
from tests.integration.foreign import langchain_writers, llamaindex_writers, mcp_writers
from tests.integration.foreign._base import Scene, Scenes, Written, WrittenPoint, point_key

__all__ = [
    "WRITERS",
    "Scene",
    "Scenes",
    "Snapshot",
    "Written",
    "WrittenPoint",
    "collection_names",
    "edit_text_without_reembedding",
    "library_search",
    "point_key",
    "query_vector",
    "snapshot",
    "user_search",
]

Writer = Callable[[QdrantClient, str, ClipEncoder, Scenes], Written]

WRITERS: dict[str, Writer] = {
    "langchain-text": langchain_writers.write_text,
    "langchain-csv": langchain_writers.write_csv,
    "langchain-images": langchain_writers.write_images,
    "langchain-mixed": langchain_writers.write_mixed,
    "llamaindex-text": llamaindex_writers.write_text,
    "llamaindex-nodes": llamaindex_writers.write_nodes,
    "llamaindex-images": llamaindex_writers.write_images,
    "llamaindex-mixed": llamaindex_writers.write_mixed,
    "mcp-server-qdrant": mcp_writers.write_memories,
}

_SEARCHES: dict[str, Callable[[QdrantClient, Written, ClipEncoder, str, int], Any]] = {
    langchain_writers.LIBRARY: langchain_writers.search,
    llamaindex_writers.LIBRARY: llamaindex_writers.search,
    mcp_writers.LIBRARY: mcp_writers.search,
}


def collection_names(client: QdrantClient) -> list[str]:
    return sorted(c.name for c in client.get_collections().collections)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A collection's vector parameters and every point: payloads as exact JSON text,
    vectors as float32 arrays compared to 1e-6 (embedded Qdrant may hand back a stored
    cosine vector one float32 step apart after a query in the same process)."""

    params: str
    points_count: int | None
    payloads: dict[str, str]
    vectors: dict[str, dict[str, np.ndarray]]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return (
            (self.params, self.points_count, self.payloads)
            == (other.params, other.points_count, other.payloads)
            and self.vectors.keys() == other.vectors.keys()
            and all(_same_vectors(self.vectors[k], other.vectors[k]) for k in self.vectors)
        )

    def __hash__(self) -> int:
        return hash((self.params, self.points_count, tuple(sorted(self.payloads.items()))))


def _same_vectors(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and np.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a
    )


def snapshot(client: QdrantClient, collection_name: str) -> Snapshot:
    """The collection's vector parameters and every point (id, all vectors, full payload):
    equal snapshots mean the same points with the same payloads byte for byte."""
    info = client.get_collection(collection_name)
    payloads: dict[str, str] = {}
    vectors: dict[str, dict[str, np.ndarray]] = {}
    offset: Any = None
    while True:
        records, offset = client.scroll(
            collection_name, limit=256, offset=offset, with_payload=True, with_vectors=True
        )
        for r in records:
            key = point_key(r.id)
            payloads[key] = json.dumps(r.payload, ensure_ascii=False)
            named = r.vector if isinstance(r.vector, dict) else {"": r.vector}
            vectors[key] = {
                name: np.asarray(v, dtype=np.float32) for name, v in named.items() if v is not None
            }
        if offset is None:
            break
    return Snapshot(
        params=info.config.params.model_dump_json(),
        points_count=info.points_count,
        payloads=payloads,
        vectors=vectors,
    )


def query_vector(encoder: ClipEncoder, query: str) -> list[float]:
    return [float(x) for x in encoder.embed_texts([query])[0]]


def user_search(
    client: QdrantClient, written: Written, vector: list[float], limit: int
) -> list[str]:
    """The library's own ``query_points`` request (its ``using``, payload, no vectors), each
    returned point as exact JSON."""
    kwargs: dict[str, Any] = {}
    if written.library == langchain_writers.LIBRARY:
        kwargs = {"with_payload": True, "with_vectors": False}
    response = client.query_points(
        collection_name=written.collection_name,
        query=vector,
        using=written.using,
        limit=limit,
        **kwargs,
    )
    return [p.model_dump_json() for p in response.points]


def library_search(
    client: QdrantClient, written: Written, encoder: ClipEncoder, query: str, limit: int
) -> Any:
    """What the library hands its user for ``query`` (LangChain documents and scores,
    LlamaIndex node ids, similarities and nodes, mcp-server-qdrant entries)."""
    return _SEARCHES[written.library](client, written, encoder, query, limit)


def edit_text_without_reembedding(
    client: QdrantClient, written: Written, point: WrittenPoint, new_text: str
) -> None:
    """A user's own edit of a stored text through qdrant-client, vector left as it was (the
    stored vector no longer comes from the stored text)."""
    records = client.retrieve(written.collection_name, [point.id], with_payload=True)
    payload = dict(records[0].payload or {})
    if written.library == langchain_writers.LIBRARY:
        update = {"page_content": new_text}
    elif written.library == mcp_writers.LIBRARY:
        update = {"document": new_text}
    else:
        content = json.loads(payload["_node_content"])
        content["text"] = new_text
        update = {"_node_content": json.dumps(content, ensure_ascii=False)}
    client.set_payload(written.collection_name, payload=update, points=[point.id])
