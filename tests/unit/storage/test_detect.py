"""Detecting which tool wrote a collection, and resolving the layout to read it with.

Payloads come from the writers' own code where it runs without a model: LlamaIndex's
``node_to_metadata_dict`` (what its ``QdrantVectorStore`` writes), langchain-qdrant's
``_build_payloads``; mcp-server-qdrant's documented layout (``fast-<model>`` vector,
``document`` and ``metadata``) is written through qdrant-client, as its code does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from langchain_qdrant import QdrantVectorStore
from llama_index.core.schema import ImageNode, TextNode
from llama_index.core.vector_stores.utils import node_to_metadata_dict
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from qdrant_xai import ClipEncoder
from qdrant_xai.errors import CollectionError
from qdrant_xai.search import AsyncSearcher, Searcher
from qdrant_xai.storage.detect import (
    aresolve_layout,
    detect_layout,
    inspect_collection,
    resolve_layout,
)
from qdrant_xai.storage.schema import PayloadKeys

DIM = 4
PARAMS = models.VectorParams(size=DIM, distance=models.Distance.COSINE)


def _llamaindex() -> list[dict[str, Any]]:
    nodes = [
        TextNode(text="a red circle", metadata={"file_path": "/d/notes.txt"}),
        ImageNode(image_path="/d/images/a.png"),
    ]
    return [node_to_metadata_dict(n, remove_text=False, flat_metadata=False) for n in nodes]


def _langchain() -> list[dict[str, Any]]:
    return QdrantVectorStore._build_payloads(
        ["image: a.png\ncaption: a red circle", "a blue square"],
        [{"source": "captions.csv", "row": 0}, {"source": "notes.txt"}],
        "page_content",
        "metadata",
    )


def _mcp() -> list[dict[str, Any]]:
    return [{"document": "remember the red circle", "metadata": {"tag": "x"}}]


def _tutorial() -> list[dict[str, Any]]:
    return [{"image": "https://example.org/1.png", "caption": "a red circle"}]


def _own() -> list[dict[str, Any]]:
    return [
        {PayloadKeys.KIND: "image", PayloadKeys.SOURCE: "/d/a.png", PayloadKeys.FINGERPRINT: "f"},
        {PayloadKeys.KIND: "text", PayloadKeys.TEXT: "a red circle", PayloadKeys.FINGERPRINT: "f"},
    ]


def _write(
    client: QdrantClient,
    name: str,
    vectors: dict[str, models.VectorParams] | models.VectorParams,
    payloads: list[dict[str, Any]],
    **extra: Any,
) -> None:
    client.create_collection(name, vectors_config=vectors, **extra)
    rng = np.random.default_rng(0)
    names = list(vectors) if isinstance(vectors, dict) else None
    points = []
    for payload in payloads:
        vector = rng.normal(size=DIM).tolist()
        points.append(
            models.PointStruct(
                id=str(uuid.uuid4()),
                vector={n: vector for n in names} if names is not None else vector,
                payload=payload,
            )
        )
    if points:
        client.upsert(name, points=points)


@pytest.mark.parametrize(
    ("payloads", "vectors", "writer", "using"),
    [
        (_llamaindex, PARAMS, "llamaindex", None),
        (_llamaindex, {"text-dense": PARAMS}, "llamaindex", "text-dense"),
        (_langchain, PARAMS, "langchain", None),
        (_langchain, {"dense": PARAMS}, "langchain", "dense"),  # QdrantVectorStore(vector_name=)
        (_mcp, {"fast-all-minilm-l6-v2": PARAMS}, "fastembed", "fast-all-minilm-l6-v2"),
        (_tutorial, {"image": PARAMS, "text": PARAMS}, "qdrant-tutorial", "text"),
        (_own, {"image": PARAMS, "text": PARAMS}, "qdrant-xai", "text"),
    ],
    ids=["llama", "llama-hybrid", "lc", "lc-named", "mcp", "tutorial", "own"],
)
def test_each_writer_is_detected_and_its_vector_resolved(
    payloads: Callable[[], list[dict[str, Any]]],
    vectors: Any,
    writer: str,
    using: str | None,
) -> None:
    client = QdrantClient(":memory:")
    _write(client, "c", vectors, payloads())
    assert detect_layout(client, "c").name == writer
    layout = resolve_layout(client, "c", "auto")
    assert layout.name == writer and layout.using("text") == using
    assert resolve_layout(client, "c", None) == layout


def test_points_backfilled_in_place_keep_their_writer() -> None:
    client = QdrantClient(":memory:")
    stamped = [{**p, PayloadKeys.FINGERPRINT: "f", PayloadKeys.KIND: "text"} for p in _langchain()]
    _write(client, "lc", PARAMS, stamped)
    assert detect_layout(client, "lc").name == "langchain"


def test_the_sample_votes() -> None:
    client = QdrantClient(":memory:")
    _write(client, "mixed", PARAMS, _langchain() * 3 + _llamaindex())
    assert detect_layout(client, "mixed").name == "langchain"


@pytest.mark.parametrize(
    ("vectors", "writer"),
    [
        ({"image": PARAMS, "text": PARAMS}, "qdrant-xai"),
        ({"fast-bge-small-en": PARAMS}, "fastembed"),
        ({"text-dense": PARAMS}, "llamaindex"),
        (PARAMS, "langchain"),
        ({"whatever": PARAMS}, "qdrant-xai"),
    ],
)
def test_an_empty_collection_is_judged_by_its_vector_names(vectors: Any, writer: str) -> None:
    client = QdrantClient(":memory:")
    _write(client, "empty", vectors, [])
    assert detect_layout(client, "empty").name == writer


def test_an_unknown_writer_asks_for_a_layout() -> None:
    client = QdrantClient(":memory:")
    huge_key = "k" * 5000
    _write(client, "odd", {"emb": PARAMS}, [{"body": "x", huge_key: 1}, {"body": "y"}])
    detected = detect_layout(client, "odd")
    assert detected.name == "unknown" and "body" in detected.notes
    with pytest.raises(CollectionError) as err:
        resolve_layout(client, "odd")
    message = str(err.value)
    for needed in ("--layout", "--vector NAME", "--image-key KEY", "--text-key KEY", "layout="):
        assert needed in message
    assert huge_key not in message and len(message) < 1000
    # the same collection read with a custom layout
    from qdrant_xai.storage.layouts import custom_layout

    layout = resolve_layout(client, "odd", custom_layout(text_keys=["body"]))
    assert layout.using("text") == "emb" and layout.text({"body": "x"}) == "x"


def test_several_vectors_and_no_name_the_writer_uses_ask_for_the_vector() -> None:
    client = QdrantClient(":memory:")
    _write(client, "two", {"a": PARAMS, "b": PARAMS}, _langchain())
    assert detect_layout(client, "two").name == "langchain"
    with pytest.raises(CollectionError, match="--vector NAME"):
        resolve_layout(client, "two")


def test_missing_collections_and_bad_presets() -> None:
    client = QdrantClient(":memory:")
    with pytest.raises(CollectionError, match="does not exist"):
        resolve_layout(client, "nope")
    _write(client, "c", PARAMS, _langchain())
    with pytest.raises(ValueError, match="choose one of"):
        resolve_layout(client, "c", "haystack")
    with pytest.raises(CollectionError, match="none matching"):
        resolve_layout(client, "c", "qdrant-xai")  # one unnamed vector: not ours


def test_detection_leaves_the_feature_maps_out(monkeypatch: pytest.MonkeyPatch) -> None:
    client = QdrantClient(":memory:")
    heavy = {**_own()[0], PayloadKeys.FEATURES: {"data": "A" * 100_000}}
    _write(client, "own", {"image": PARAMS, "text": PARAMS}, [heavy])
    selectors: list[Any] = []
    scroll = client.scroll

    def spy(*args: Any, **kwargs: Any) -> Any:
        selectors.append(kwargs.get("with_payload"))
        records, offset = scroll(*args, **kwargs)
        assert all(PayloadKeys.FEATURES not in (r.payload or {}) for r in records)
        return records, offset

    monkeypatch.setattr(client, "scroll", spy)
    assert detect_layout(client, "own").name == "qdrant-xai"
    inspect_collection(client, "own")
    assert len(selectors) == 2
    for selector in selectors:
        assert isinstance(selector, models.PayloadSelectorExclude)
        assert set(PayloadKeys.HEAVY) <= set(selector.exclude)


async def test_async_resolution() -> None:
    client = AsyncQdrantClient(":memory:")
    await client.create_collection("lc", vectors_config=PARAMS)
    await client.upsert(
        "lc",
        points=[
            models.PointStruct(id=i, vector=[0.5] * DIM, payload=p)
            for i, p in enumerate(_langchain())
        ],
    )
    assert (await aresolve_layout(client, "lc")).name == "langchain"
    assert (await aresolve_layout(client, "lc", "llamaindex")).using("text") is None
    await client.close()


def _counting(monkeypatch: pytest.MonkeyPatch, client: Any, names: list[str]) -> dict[str, int]:
    calls = dict.fromkeys(names, 0)
    for name in names:
        method = getattr(client, name)

        def counted(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _method(*args, **kwargs)

        monkeypatch.setattr(client, name, counted)
    return calls


def test_searchers_detect_once_per_collection(
    monkeypatch: pytest.MonkeyPatch, tiny_encoder: ClipEncoder
) -> None:
    client = QdrantClient(":memory:")
    vectors = tiny_encoder.embed_texts(["a red circle", "a blue square"])
    client.create_collection(
        "lc", vectors_config=models.VectorParams(size=tiny_encoder.dim, distance="Cosine")
    )
    client.upsert(
        "lc",
        points=[
            models.PointStruct(id=i, vector=v.tolist(), payload=p)
            for i, (v, p) in enumerate(zip(vectors, _langchain(), strict=True))
        ],
    )
    calls = _counting(monkeypatch, client, ["get_collection", "scroll", "collection_exists"])
    searcher = Searcher(client, tiny_encoder, collection_name="lc")  # layout="auto"
    assert searcher.layout == "auto"
    first = searcher.search_texts("a red circle", limit=2)
    assert first[0].payload["page_content"] == "image: a.png\ncaption: a red circle"  # type: ignore[index]
    searcher.search_texts("a blue square", limit=2)
    searcher.score_points("a red circle", [0, 1])
    assert calls == {"get_collection": 1, "scroll": 1, "collection_exists": 1}
    assert searcher.resolved_layout().name == "langchain"
    with pytest.raises(ValueError, match="choose one of"):
        Searcher(client, tiny_encoder, collection_name="lc", layout="haystack")


async def test_async_searchers_detect_once(tiny_encoder: ClipEncoder) -> None:
    client = AsyncQdrantClient(":memory:")
    await client.create_collection(
        "lc", vectors_config=models.VectorParams(size=tiny_encoder.dim, distance="Cosine")
    )
    vectors = tiny_encoder.embed_texts(["a red circle", "a blue square"])
    await client.upsert(
        "lc",
        points=[
            models.PointStruct(id=i, vector=v.tolist(), payload=p)
            for i, (v, p) in enumerate(zip(vectors, _langchain(), strict=True))
        ],
    )
    searcher = AsyncSearcher(client, tiny_encoder, collection_name="lc")
    hits = await searcher.search_texts("a blue square", limit=1)
    assert hits[0].payload["page_content"] == "a blue square"  # type: ignore[index]
    layout = await searcher.resolved_layout()
    assert layout.name == "langchain" and len(searcher._collections) == 1
    await client.close()
