"""The MCP server on collections others wrote, as mcp-server-qdrant's users run it: no
COLLECTION_NAME (each call names its collection), layouts detected, a hit that cannot be
explained reported with its reason beside the others, payload values never returned whole,
filters, and the source collections left as they were.

The collections are written by the real langchain-qdrant code and in mcp-server-qdrant's
documented layout (``tests/integration/foreign``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="needs the mcp extra")
pytest.importorskip("langchain_qdrant", reason="writes collections with langchain-qdrant")

from mcp.types import ImageContent
from qdrant_client import QdrantClient, models
from qdrant_xai_mcp import ServerSettings, create_server
from qdrant_xai_mcp.backend import XaiBackend

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.errors import QdrantXaiError
from tests.integration._mcp import (
    READ_TOOLS,
    connect,
    error_of,
    hits_of,
    structured,
    text_of,
    tools_of,
)
from tests.integration.foreign import langchain_writers, mcp_writers
from tests.integration.foreign.writers import (
    Scenes,
    Written,
    collection_names,
    point_key,
    snapshot,
)

QUERY = "a red circle"


@pytest.fixture
def scenes(tmp_path: Path) -> Scenes:
    return Scenes.write(tmp_path / "data")


@pytest.fixture
def qdrant() -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    yield client
    client.close()


def own(client: QdrantClient, encoder: ClipEncoder, scenes: Scenes) -> None:
    summary = Indexer(client, encoder, collection_name="ours").index_folder(
        scenes.root / "images", captions=scenes.csv, progress=False
    )
    assert summary.indexed_images == 6


def server_for(client: QdrantClient, encoder: ClipEncoder, **settings: Any) -> Any:
    return create_server(ServerSettings(**settings), client=client, encoder=encoder)


async def test_each_call_names_its_collection_and_its_layout_is_detected(
    qdrant: QdrantClient, tiny_encoder: ClipEncoder, scenes: Scenes
) -> None:
    own(qdrant, tiny_encoder, scenes)
    mixed = langchain_writers.write_mixed(qdrant, "lc", tiny_encoder, scenes)
    memories = mcp_writers.write_memories(qdrant, "memories", tiny_encoder, scenes)
    names = collection_names(qdrant)
    before = {name: snapshot(qdrant, name) for name in ("ours", "lc", "memories")}
    server = server_for(qdrant, tiny_encoder, image_roots=(scenes.root,))

    async with connect(server) as client:
        tools = await tools_of(client)
        for name in READ_TOOLS:  # as mcp-server-qdrant without COLLECTION_NAME
            assert "collection_name" in tools[name]["inputSchema"]["required"], name
            assert "query_filter" not in tools[name]["inputSchema"]["properties"]
        missing = await client.call_tool("search_images", {"query": QUERY})
        assert "collection_name" in error_of(missing)

        ours = hits_of(
            await client.call_tool("search_images", {"query": QUERY, "collection_name": "ours"})
        )
        assert len(ours) == 6 and all(h["status"] == "ok" and h["peak"] for h in ours)

        result = await client.call_tool(
            "search_images", {"query": QUERY, "collection_name": "lc", "limit": 20}
        )
        assert structured(result)["collection"] == "lc"
        hits = hits_of(result)
        assert {point_key(h["id"]) for h in hits} == {p.id for p in mixed.points}
        images = [h for h in hits if mixed.by_id()[point_key(h["id"])].kind == "image"]
        assert len(images) == 5 and all(h["status"] == "ok" for h in images)
        assert all(h["peak_on"] == "hit image" for h in images)

        # mcp-server-qdrant's memories (texts): captions for an image, their words explained
        picture = str(scenes.items[0].image)
        result = await client.call_tool(
            "search_texts", {"image_path": picture, "collection_name": "memories"}
        )
        texts = hits_of(result)
        embedded = {p.id: p.embedded_text for p in memories.points}
        assert {point_key(h["id"]) for h in texts} == set(embedded)
        for hit in texts:
            assert hit["status"] == "ok" and hit["text"] == embedded[point_key(hit["id"])]
            words = set(re.findall(r"\w+", hit["text"].lower()))
            assert {w["word"].lower() for w in hit["top_words"]} <= words

        explained = await client.call_tool(
            "explain_hit",
            {"point_id": texts[0]["id"], "collection_name": "memories", "query_text": "circle"},
        )
        assert "Word attributions of the hit's text" in text_of(explained)

    # read-only: nothing written, no sidecar created, every point as it was
    assert collection_names(qdrant) == names
    assert {name: snapshot(qdrant, name) for name in before} == before


async def test_a_hit_that_cannot_be_explained_says_why_beside_the_others(
    qdrant: QdrantClient, tiny_encoder: ClipEncoder, scenes: Scenes
) -> None:
    mixed = langchain_writers.write_mixed(qdrant, "lc", tiny_encoder, scenes)
    # a broken upload as large as the issue saw (44 k characters of base64), and a deleted file
    store = langchain_writers.open_store(qdrant, "lc", tiny_encoder)
    broken = scenes.items[5].base64()[:200] + "A" * 44_000
    (upload,) = langchain_writers.add_images(store, [scenes.items[5]], inline=True, b64=[broken])
    gone = scenes.items[0]
    (deleted,) = [p for p in mixed.points if p.image == gone.image]
    gone.image.unlink()
    server = server_for(qdrant, tiny_encoder, image_roots=(scenes.root,))

    result = await _search(server, "lc", limit=50)
    hits = hits_of(result)
    assert len(hits) == len(mixed.points) + 1
    by_id = {point_key(h["id"]): h for h in hits}
    failed = {i for i, h in by_id.items() if h["status"] == "failed"}
    assert failed == {upload.id, deleted.id}
    assert structured(result)["failed"] == 2
    for point_id in failed:
        error = by_id[point_id]["error"]
        assert error["type"] and 0 < len(error["message"]) <= 1000
        assert by_id[point_id]["why"].startswith("not explained: ")
        assert by_id[point_id]["peak"] is None and by_id[point_id]["top_words"] == []
    assert gone.image.name in by_id[deleted.id]["error"]["message"]
    # the other hits are explained
    assert all(h["status"] == "ok" for i, h in by_id.items() if i not in failed)
    # no payload value is returned whole: the tool's whole text stays small
    text = text_of(result)
    assert "A" * 600 not in text and len(text) < 60_000
    for scene in scenes.items[3:5]:  # the good inline images, stored as base64
        assert scene.base64()[:600] not in text


async def test_images_outside_the_allowed_folders_are_found_not_read(
    qdrant: QdrantClient, tiny_encoder: ClipEncoder, scenes: Scenes
) -> None:
    mixed = langchain_writers.write_mixed(qdrant, "lc", tiny_encoder, scenes)
    by_path = {p.id for p in mixed.points if p.kind == "image" and not p.inline}
    blind = server_for(qdrant, tiny_encoder)  # no QDRANT_XAI_IMAGE_ROOTS
    result = await _search(blind, "lc", limit=20)
    hits = {point_key(h["id"]): h for h in hits_of(result)}
    assert {i for i, h in hits.items() if h["status"] == "failed"} == by_path
    for point_id in by_path:
        assert "QDRANT_XAI_IMAGE_ROOTS" in hits[point_id]["error"]["message"]

    # with the folder allowed, the image is read and the heatmap drawn over it
    server = server_for(qdrant, tiny_encoder, image_roots=(scenes.root,))
    async with connect(server) as client:
        arguments = {"point_id": hits[min(by_path)]["id"], "collection_name": "lc"}
        result = await client.call_tool("explain_hit", {**arguments, "query_text": QUERY})
    assert any(isinstance(c, ImageContent) for c in result.content), text_of(result)
    assert "Heatmap" in text_of(result)


async def test_a_writable_server_keeps_features_in_the_sidecar_only(
    qdrant: QdrantClient, tiny_encoder: ClipEncoder, scenes: Scenes
) -> None:
    langchain_writers.write_mixed(qdrant, "lc", tiny_encoder, scenes)
    before = snapshot(qdrant, "lc")
    server = server_for(qdrant, tiny_encoder, image_roots=(scenes.root,), read_only=False)
    first = hits_of(await _search(server, "lc"))
    assert "lc__xai" in collection_names(qdrant)  # features computed, stored beside
    assert snapshot(qdrant, "lc") == before  # the user's collection as it was
    again = hits_of(await _search(server, "lc"))
    assert [(h["id"], h["status"], h["peak"]) for h in again] == [
        (h["id"], h["status"], h["peak"]) for h in first
    ]


async def test_default_limit_filters_and_the_configured_collection(
    qdrant: QdrantClient, tiny_encoder: ClipEncoder, scenes: Scenes
) -> None:
    written: Written = langchain_writers.write_mixed(qdrant, "lc", tiny_encoder, scenes)
    assert len(written.points) == 11
    # QDRANT_SEARCH_LIMIT defaults to 10, as mcp-server-qdrant
    plain = server_for(qdrant, tiny_encoder, image_roots=(scenes.root,))
    assert len(hits_of(await _search(plain, "lc"))) == 10

    # QDRANT_ALLOW_ARBITRARY_FILTER: a query_filter argument, a Qdrant filter as JSON
    server = server_for(
        qdrant, tiny_encoder, image_roots=(scenes.root,), allow_arbitrary_filter=True
    )
    source = str(scenes.items[1].image)
    only = {"must": [{"key": "metadata.source", "match": {"value": source}}]}
    async with connect(server) as client:
        tools = await tools_of(client)
        assert "query_filter" in tools["search_images"]["inputSchema"]["properties"]
        assert "query_filter" not in tools["explain_hit"]["inputSchema"]["properties"]
        filtered = await client.call_tool(
            "search_images", {"query": QUERY, "collection_name": "lc", "query_filter": only}
        )
        (hit,) = hits_of(filtered)
        assert hit["source"] == source and hit["status"] == "ok"
        wrong = await client.call_tool(
            "search_images",
            {"query": QUERY, "collection_name": "lc", "query_filter": {"must": "everything"}},
        )
        assert "query_filter is not a Qdrant filter" in error_of(wrong)

    # COLLECTION_NAME set: the tools take no collection_name, and the backend no other one
    fixed = XaiBackend(ServerSettings(collection_name="lc"), qdrant, tiny_encoder)
    assert fixed.search_images(QUERY, limit=2).collection == "lc"
    with pytest.raises(QdrantXaiError, match="serves only collection 'lc'"):
        fixed.search_images(QUERY, collection_name="ours")
    free = XaiBackend(ServerSettings(), qdrant, tiny_encoder)
    for name in ("", "a/b", "x" * 300):
        with pytest.raises(QdrantXaiError, match="collection_name"):
            free.search_images(QUERY, collection_name=name)


async def test_a_layout_that_does_not_fit_is_a_clear_error(
    qdrant: QdrantClient, tiny_encoder: ClipEncoder, scenes: Scenes
) -> None:
    # an empty collection: no hits, nothing to explain, no error
    vectors = models.VectorParams(size=tiny_encoder.dim, distance=models.Distance.COSINE)
    qdrant.create_collection("empty", vectors_config=vectors)
    result = await _search(server_for(qdrant, tiny_encoder), "empty")
    assert hits_of(result) == [] and structured(result)["failed"] == 0

    langchain_writers.write_mixed(qdrant, "lc", tiny_encoder, scenes)
    # the preset of another writer: its vector is not in this collection
    server = server_for(qdrant, tiny_encoder, layout="qdrant-tutorial")
    message = error_of(await _search(server, "lc"))
    assert "QDRANT_XAI_LAYOUT" in message and "'lc'" in message


async def _search(server: Any, collection_name: str, **arguments: Any) -> Any:
    async with connect(server) as client:
        arguments = {"query": QUERY, "collection_name": collection_name, **arguments}
        return await client.call_tool("search_images", arguments)
