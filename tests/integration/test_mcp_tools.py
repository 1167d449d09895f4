"""The MCP server's tools over the SDK's in-process client (1.x or 2.x, whichever is
installed): results, overlays, errors, collections written by other tools, indexing."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="needs the mcp extra")

from mcp.types import ImageContent, TextContent
from PIL import Image
from qdrant_client import QdrantClient
from qdrant_xai_mcp import ServerSettings, create_server

from qdrant_xai import ClipEncoder, Searcher, load_image
from qdrant_xai.storage.schema import PayloadKeys
from tests.integration._mcp import (
    READ_TOOLS,
    call,
    connect,
    dump,
    error_of,
    hits_of,
    index,
    is_error,
    six_scenes,
    structured,
    text_of,
    tools_of,
)


@pytest.fixture
def scenes(tmp_path: Path) -> tuple[Path, Path]:
    """Six shapes scenes and their captions.csv."""
    return six_scenes(tmp_path)


@pytest.fixture
def memory(
    tiny_encoder: ClipEncoder, scenes: tuple[Path, Path], collection_name: str
) -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    index(client, tiny_encoder, collection_name, scenes)
    yield client
    client.close()


# -- tools ----------------------------------------------------------------------------------


async def test_read_only_lists_only_read_tools(
    memory: QdrantClient, tiny_encoder: ClipEncoder, collection_name: str
) -> None:
    server = create_server(
        ServerSettings(collection_name=collection_name), client=memory, encoder=tiny_encoder
    )
    async with connect(server) as client:
        tools = await tools_of(client)
        assert set(tools) == READ_TOOLS
        for tool in tools.values():
            assert tool["annotations"]["readOnlyHint"] is True
            assert len(tool["description"]) > 100
        # COLLECTION_NAME set: no collection_name argument (as mcp-server-qdrant), no filter
        assert set(tools["explain_hit"]["inputSchema"]["properties"]) == {
            "point_id",
            "query_text",
            "query_image_path",
            "query_image_base64",
            "heatmap_method",
        }
        assert tools["explain_hit"]["inputSchema"]["required"] == ["point_id"]
        assert set(tools["search_images"]["inputSchema"]["properties"]) == {"query", "limit"}
        assert tools["search_images"]["outputSchema"]
        # a hidden tool cannot be called either
        result = await client.call_tool("index_images", {"folder": "."})
        assert "index_images" in error_of(result)

    writable = create_server(
        ServerSettings(collection_name=collection_name, read_only=False),
        client=memory,
        encoder=tiny_encoder,
    )
    async with connect(writable) as client:
        tools = await tools_of(client)
    assert set(tools) == READ_TOOLS | {"index_images"}
    for name in tools:  # explaining may store features in the sidecar: not read-only
        annotations = tools[name]["annotations"]
        assert annotations["readOnlyHint"] is False and annotations["destructiveHint"] is False


async def test_search_images_returns_the_searchers_hits_with_explanations(
    client: QdrantClient,
    tiny_encoder: ClipEncoder,
    scenes: tuple[Path, Path],
    collection_name: str,
) -> None:
    index(client, tiny_encoder, collection_name, scenes)
    server = create_server(
        ServerSettings(collection_name=collection_name), client=client, encoder=tiny_encoder
    )
    query = "a red circle"
    result = await call(server, "search_images", {"query": query, "limit": 3})
    assert not is_error(result), text_of(result)
    expected = Searcher(client, tiny_encoder, collection_name=collection_name).search_images(
        query, limit=3
    )
    data = structured(result)
    assert data["query"] == query and data["collection"] == collection_name
    assert data["failed"] == 0
    assert json.loads(text_of(result)) == data  # the text block carries the same JSON
    hits = data["hits"]
    assert [h["id"] for h in hits] == [str(h.id) for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], abs=1e-4)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    for hit in hits:
        assert hit["kind"] == "image" and hit["text"] is None
        assert hit["status"] == "ok" and hit["error"] is None
        assert Path(hit["source"]).parent == scenes[0].resolve()
        assert not any(k.startswith("xai_") for k in hit["payload"])
        assert {w["word"] for w in hit["top_words"]} <= {"a", "red", "circle"}
        assert all(w["score"] > 0 for w in hit["top_words"])
        peak = hit["peak"]
        assert (peak["rows"], peak["cols"]) == tiny_encoder.grid
        assert 0 <= peak["row"] < peak["rows"] and 0 <= peak["col"] < peak["cols"]
        assert hit["peak_on"] == "hit image" and peak["where"] in hit["why"]


async def test_search_texts_by_path_base64_and_data_uri(
    memory: QdrantClient,
    tiny_encoder: ClipEncoder,
    scenes: tuple[Path, Path],
    collection_name: str,
    tmp_path: Path,
) -> None:
    images, _ = scenes
    server = create_server(
        ServerSettings(collection_name=collection_name, image_roots=(images,)),
        client=memory,
        encoder=tiny_encoder,
    )
    picture = sorted(images.glob("*.png"))[0]
    expected = Searcher(memory, tiny_encoder, collection_name=collection_name).search_texts(
        load_image(picture), limit=4
    )
    encoded = base64.b64encode(picture.read_bytes()).decode()
    async with connect(server) as client:
        for arguments in (
            {"image_path": str(picture)},
            {"image_base64": encoded},
            {"image_base64": "data:image/png;base64," + encoded},
        ):
            result = await client.call_tool("search_texts", {**arguments, "limit": 4})
            assert not is_error(result), text_of(result)
            hits = hits_of(result)
            assert [h["id"] for h in hits] == [str(h.id) for h in expected]
            for hit, point in zip(hits, expected, strict=True):
                assert hit["text"] == (point.payload or {})[PayloadKeys.TEXT]
                assert hit["image_id"] == (point.payload or {})[PayloadKeys.IMAGE_ID]
                assert {w["word"] for w in hit["top_words"]} <= set(hit["text"].split())
                assert hit["kind"] == "text" and hit["source"] is None
                assert hit["peak_on"] == "query image" and hit["peak"]["where"] in hit["why"]

        outside = tmp_path / "elsewhere.png"
        outside.write_bytes(picture.read_bytes())
        message = error_of(await client.call_tool("search_texts", {"image_path": str(outside)}))
        assert "QDRANT_XAI_IMAGE_ROOTS" in message and "base64" in message
        message = error_of(await client.call_tool("search_texts", {"image_base64": "%%%"}))
        assert "not valid base64" in message
        message = error_of(await client.call_tool("search_texts", {"image_base64": encoded[:200]}))
        assert "<query image>" in message  # truncated bytes: the image loader's message
        message = error_of(
            await client.call_tool(
                "search_texts", {"image_path": str(picture), "image_base64": encoded}
            )
        )
        assert "exactly one" in message


def decode_png(block: ImageContent) -> Image.Image:
    assert dump(block)["mimeType"] == "image/png"
    image = Image.open(io.BytesIO(base64.b64decode(block.data)))
    image.load()
    assert image.format == "PNG"
    return image


async def test_explain_hit_returns_the_overlay_png_and_word_attributions(
    memory: QdrantClient,
    tiny_encoder: ClipEncoder,
    scenes: tuple[Path, Path],
    collection_name: str,
) -> None:
    images, _ = scenes
    server = create_server(
        ServerSettings(collection_name=collection_name, image_roots=(images,)),
        client=memory,
        encoder=tiny_encoder,
    )
    query = "a red circle"
    async with connect(server) as client:
        found = await client.call_tool("search_images", {"query": query, "limit": 2})
        hit = hits_of(found)[1]
        result = await client.call_tool("explain_hit", {"point_id": hit["id"], "query_text": query})
    assert not is_error(result), text_of(result)
    texts = [c for c in result.content if isinstance(c, TextContent)]
    pngs = [c for c in result.content if isinstance(c, ImageContent)]
    assert len(texts) == 1 and len(pngs) == 1
    text = texts[0].text
    assert f"Point {hit['id']}" in text and f"{hit['score']:.4f}" in text
    peak = hit["peak"]
    assert f"row {peak['row']}, col {peak['col']}" in text  # same heatmap as the search
    for word in ("a", "red", "circle"):
        assert f"\n  {word}: " in text
    overlay = decode_png(pngs[0])
    original = load_image(hit["source"]).image
    assert overlay.size == original.size
    assert overlay.convert("RGB").tobytes() != original.tobytes()

    # without image roots the hit's image is not read: the heatmap comes alone, with a note
    closed = create_server(
        ServerSettings(collection_name=collection_name), client=memory, encoder=tiny_encoder
    )
    result = await call(closed, "explain_hit", {"point_id": hit["id"], "query_text": query})
    assert not is_error(result), text_of(result)
    assert "heatmap alone" in text_of(result) and "QDRANT_XAI_IMAGE_ROOTS" in text_of(result)
    pngs = [c for c in result.content if isinstance(c, ImageContent)]
    rows, cols = tiny_encoder.grid
    assert decode_png(pngs[0]).size == (cols * 32, rows * 32)


async def test_explain_hit_with_an_image_query_on_a_caption(
    memory: QdrantClient,
    tiny_encoder: ClipEncoder,
    scenes: tuple[Path, Path],
    collection_name: str,
) -> None:
    images, _ = scenes
    server = create_server(
        ServerSettings(collection_name=collection_name, image_roots=(images,)),
        client=memory,
        encoder=tiny_encoder,
    )
    picture = sorted(images.glob("*.png"))[2]
    async with connect(server) as client:
        found = await client.call_tool("search_texts", {"image_path": str(picture), "limit": 1})
        hit = hits_of(found)[0]
        result = await client.call_tool(
            "explain_hit", {"point_id": hit["id"], "query_image_path": str(picture)}
        )
    assert not is_error(result), text_of(result)
    text = text_of(result)
    assert "text hit" in text and "over the query image" in text
    for word in hit["text"].split():
        assert f"\n  {word}: " in text
    (png,) = [c for c in result.content if isinstance(c, ImageContent)]
    assert decode_png(png).size == load_image(picture).image.size

    # a text query on a caption: words only, no image side, so no PNG
    result = await call(server, "explain_hit", {"point_id": hit["id"], "query_text": "a cross"})
    assert not is_error(result), text_of(result)
    assert not any(isinstance(c, ImageContent) for c in result.content)
    assert "Word attributions of the hit's text" in text_of(result)


async def test_errors_become_tool_errors_with_clear_messages(
    memory: QdrantClient, tiny_encoder: ClipEncoder, collection_name: str
) -> None:
    server = create_server(
        ServerSettings(collection_name=collection_name), client=memory, encoder=tiny_encoder
    )
    async with connect(server) as client:
        for arguments, expected in [
            ({"point_id": "not-an-id", "query_text": "a"}, "not a Qdrant point id"),
            ({"point_id": str(uuid.uuid4()), "query_text": "a"}, "no point"),
            ({"point_id": 12345, "query_text": "a"}, "no point 12345"),
            ({"point_id": 1}, "exactly one query"),
            (
                {"point_id": 1, "query_text": "a", "heatmap_method": "magic"},
                "unknown heatmap method",
            ),
        ]:
            assert expected in error_of(await client.call_tool("explain_hit", arguments))
        assert "limit" in error_of(
            await client.call_tool("search_images", {"query": "a", "limit": 0})
        )
        # the server keeps serving after errors
        result = await client.call_tool("search_images", {"query": "a blue square"})
        assert len(hits_of(result)) == 6  # every image: the default limit is 10

    missing = create_server(
        ServerSettings(collection_name="no_such_collection"), client=memory, encoder=tiny_encoder
    )
    message = error_of(await call(missing, "search_images", {"query": "a red circle"}))
    assert "'no_such_collection' does not exist" in message


async def test_index_images_when_writable(
    tiny_encoder: ClipEncoder, scenes: tuple[Path, Path], tmp_path: Path
) -> None:
    images, _ = scenes
    client = QdrantClient(":memory:")
    server = create_server(
        ServerSettings(collection_name="fresh", read_only=False, image_roots=(images,)),
        client=client,
        encoder=tiny_encoder,
    )
    async with connect(server) as mcp:
        result = await mcp.call_tool("index_images", {"folder": str(images)})
        assert not is_error(result), text_of(result)
        assert "indexed 6 images and 6 texts" in text_of(result)
        assert "captions.csv" in text_of(result)
        again = await mcp.call_tool("index_images", {"folder": str(images)})
        assert "6 unchanged" in text_of(again)
        found = await mcp.call_tool("search_images", {"query": "a red circle", "limit": 2})
        assert len(hits_of(found)) == 2
        message = error_of(await mcp.call_tool("index_images", {"folder": str(tmp_path)}))
        assert "QDRANT_XAI_IMAGE_ROOTS" in message
    assert client.count("fresh").count == 12
    client.close()
