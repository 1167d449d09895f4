"""The MCP server: tools over the SDK's in-process client, errors, settings, transports."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp.server.mcpserver", reason="needs the mcp extra (SDK 2.x)")

from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, ImageContent, TextContent
from PIL import Image
from qdrant_client import QdrantClient, models
from qdrant_xai_mcp import ServerSettings, SettingsError, create_server
from qdrant_xai_mcp.server import main

from qdrant_xai import ClipEncoder, Indexer, RetryPolicy, Searcher, load_image
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.storage.schema import PayloadKeys

REPO = Path(__file__).resolve().parents[2]
READ_TOOLS = {"search_images", "search_texts", "explain_hit"}


@pytest.fixture
def scenes(tmp_path: Path) -> tuple[Path, Path]:
    """Six shapes scenes and their captions.csv."""
    images = tmp_path / "images"
    return images, write_scene_folder(images, 6, seed=3)


def index(client: QdrantClient, encoder: ClipEncoder, name: str, scenes: tuple[Path, Path]) -> None:
    images, captions = scenes
    summary = Indexer(client, encoder, collection_name=name).index_folder(
        images, captions=captions, progress=False
    )
    assert summary.indexed_images == 6 and not summary.failed


@pytest.fixture
def memory(
    tiny_encoder: ClipEncoder, scenes: tuple[Path, Path], collection_name: str
) -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    index(client, tiny_encoder, collection_name, scenes)
    yield client
    client.close()


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def error_of(result: CallToolResult) -> str:
    assert result.is_error, f"expected a tool error, got {text_of(result)[:300]}"
    return text_of(result)


async def call(server: Any, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    async with Client(server) as client:
        return await client.call_tool(tool, arguments)


# -- tools ----------------------------------------------------------------------------------


async def test_read_only_lists_only_read_tools(
    memory: QdrantClient, tiny_encoder: ClipEncoder, collection_name: str
) -> None:
    server = create_server(
        ServerSettings(collection_name=collection_name), client=memory, encoder=tiny_encoder
    )
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == READ_TOOLS
        for tool in tools.values():
            assert tool.annotations is not None and tool.annotations.read_only_hint is True
            assert tool.description and len(tool.description) > 100
        assert set(tools["explain_hit"].input_schema["properties"]) == {
            "point_id",
            "query_text",
            "query_image_path",
            "query_image_base64",
            "method",
        }
        assert tools["explain_hit"].input_schema["required"] == ["point_id"]
        assert tools["search_images"].output_schema is not None
        # a hidden tool cannot be called either
        result = await client.call_tool("index_images", {"folder": "."})
        assert "index_images" in error_of(result)

    writable = create_server(
        ServerSettings(collection_name=collection_name, read_only=False),
        client=memory,
        encoder=tiny_encoder,
    )
    async with Client(writable) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == READ_TOOLS | {"index_images"}
    annotations = tools["index_images"].annotations
    assert annotations is not None and annotations.read_only_hint is False
    assert annotations.destructive_hint is False


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
    assert not result.is_error, text_of(result)
    expected = Searcher(client, tiny_encoder, collection_name=collection_name).search_images(
        query, limit=3
    )
    data = result.structured_content
    assert data is not None and data["query"] == query and data["collection"] == collection_name
    assert json.loads(text_of(result)) == data  # the text block carries the same JSON
    hits = data["hits"]
    assert [h["id"] for h in hits] == [str(h.id) for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], abs=1e-4)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    for hit in hits:
        assert hit["kind"] == "image" and hit["text"] is None
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
    async with Client(server) as client:
        for arguments in (
            {"image_path": str(picture)},
            {"image_base64": encoded},
            {"image_base64": "data:image/png;base64," + encoded},
        ):
            result = await client.call_tool("search_texts", {**arguments, "limit": 4})
            assert not result.is_error, text_of(result)
            hits = (result.structured_content or {})["hits"]
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
    assert block.mime_type == "image/png"
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
    async with Client(server) as client:
        found = await client.call_tool("search_images", {"query": query, "limit": 2})
        hit = (found.structured_content or {})["hits"][1]
        result = await client.call_tool("explain_hit", {"point_id": hit["id"], "query_text": query})
    assert not result.is_error, text_of(result)
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
    assert not result.is_error, text_of(result)
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
    async with Client(server) as client:
        found = await client.call_tool("search_texts", {"image_path": str(picture), "limit": 1})
        hit = (found.structured_content or {})["hits"][0]
        result = await client.call_tool(
            "explain_hit", {"point_id": hit["id"], "query_image_path": str(picture)}
        )
    assert not result.is_error, text_of(result)
    text = text_of(result)
    assert "text hit" in text and "over the query image" in text
    for word in hit["text"].split():
        assert f"\n  {word}: " in text
    (png,) = [c for c in result.content if isinstance(c, ImageContent)]
    assert decode_png(png).size == load_image(picture).image.size

    # a text query on a caption: words only, no image side, so no PNG
    result = await call(server, "explain_hit", {"point_id": hit["id"], "query_text": "a cross"})
    assert not result.is_error, text_of(result)
    assert not any(isinstance(c, ImageContent) for c in result.content)
    assert "Word attributions of the hit's text" in text_of(result)


async def test_errors_become_tool_errors_with_clear_messages(
    memory: QdrantClient, tiny_encoder: ClipEncoder, collection_name: str
) -> None:
    server = create_server(
        ServerSettings(collection_name=collection_name), client=memory, encoder=tiny_encoder
    )
    async with Client(server) as client:
        for arguments, expected in [
            ({"point_id": "not-an-id", "query_text": "a"}, "not a Qdrant point id"),
            ({"point_id": str(uuid.uuid4()), "query_text": "a"}, "no point"),
            ({"point_id": 12345, "query_text": "a"}, "no point 12345"),
            ({"point_id": 1}, "exactly one query"),
            ({"point_id": 1, "query_text": "a", "method": "magic"}, "unknown heatmap method"),
        ]:
            assert expected in error_of(await client.call_tool("explain_hit", arguments))
        assert "limit" in error_of(
            await client.call_tool("search_images", {"query": "a", "limit": 0})
        )
        # the server keeps serving after errors
        result = await client.call_tool("search_images", {"query": "a blue square"})
        assert not result.is_error and len((result.structured_content or {})["hits"]) == 5

    missing = create_server(
        ServerSettings(collection_name="no_such_collection"), client=memory, encoder=tiny_encoder
    )
    message = error_of(await call(missing, "search_images", {"query": "a red circle"}))
    assert "'no_such_collection' does not exist" in message


def langchain_collection(
    client: QdrantClient, name: str, encoder: ClipEncoder, images: Path
) -> list[Path]:
    """What langchain-qdrant writes: one unnamed vector, page_content and metadata.source;
    no qdrant-xai features."""
    client.create_collection(
        name, vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
    )
    paths = sorted(images.glob("*.png"))
    vectors = encoder.embed_images(paths)
    client.upsert(
        name,
        points=[
            models.PointStruct(
                id=i,
                vector=vectors[i].tolist(),
                payload={"page_content": p.name, "metadata": {"source": str(p)}},
            )
            for i, p in enumerate(paths)
        ],
    )
    return paths


async def test_collections_written_by_other_tools(
    tiny_encoder: ClipEncoder, scenes: tuple[Path, Path], collection_name: str
) -> None:
    images, _ = scenes
    client = QdrantClient(":memory:")
    langchain_collection(client, collection_name, tiny_encoder, images)
    settings = ServerSettings(collection_name=collection_name, layout="langchain")
    # without image roots the hits are found but cannot be explained: they say why
    blind = create_server(settings, client=client, encoder=tiny_encoder)
    result = await call(blind, "search_images", {"query": "a red circle", "limit": 3})
    assert not result.is_error, text_of(result)
    hits = (result.structured_content or {})["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3] and all(h["peak"] is None for h in hits)
    assert all("QDRANT_XAI_IMAGE_ROOTS" in h["why"] for h in hits)

    # with the folder allowed, features are recomputed from the images
    server = create_server(
        ServerSettings(collection_name=collection_name, layout="langchain", image_roots=(images,)),
        client=client,
        encoder=tiny_encoder,
    )
    async with Client(server) as mcp:
        result = await mcp.call_tool("search_images", {"query": "a red circle", "limit": 3})
        assert not result.is_error, text_of(result)
        explained = (result.structured_content or {})["hits"]
        assert [h["id"] for h in explained] == [h["id"] for h in hits]
        assert all(h["peak_on"] == "hit image" for h in explained)
        assert all(Path(h["source"]).parent == images for h in explained)
        result = await mcp.call_tool(
            "explain_hit", {"point_id": explained[0]["id"], "query_text": "a red circle"}
        )
    assert not result.is_error, text_of(result)
    assert any(isinstance(c, ImageContent) for c in result.content)
    client.close()

    with pytest.raises(SettingsError, match="QDRANT_XAI_LAYOUT"):
        ServerSettings(layout="chroma")


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
async def test_qdrant_failures_never_show_the_api_key(tiny_encoder: ClipEncoder) -> None:
    settings = ServerSettings(url="http://127.0.0.1:1", api_key="secret-key-123")
    assert "secret-key-123" not in repr(settings) and "secret-key-123" not in settings.describe()
    # nothing listens on port 1; skip the client's version probe (it warns from a thread)
    unreachable = QdrantClient(
        url=settings.url, api_key=settings.api_key, check_compatibility=False
    )
    once = RetryPolicy(attempts=1)
    server = create_server(settings, client=unreachable, encoder=tiny_encoder, retry=once)
    try:
        result = await call(server, "search_images", {"query": "a red circle"})
    finally:
        unreachable.close()
    message = error_of(result)
    assert "did not answer" in message and "127.0.0.1:1" in message
    assert "secret-key-123" not in message


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
    async with Client(server) as mcp:
        result = await mcp.call_tool("index_images", {"folder": str(images)})
        assert not result.is_error, text_of(result)
        assert "indexed 6 images and 6 texts" in text_of(result)
        assert "captions.csv" in text_of(result)
        again = await mcp.call_tool("index_images", {"folder": str(images)})
        assert "6 unchanged" in text_of(again)
        found = await mcp.call_tool("search_images", {"query": "a red circle", "limit": 2})
        assert len((found.structured_content or {})["hits"]) == 2
        message = error_of(await mcp.call_tool("index_images", {"folder": str(tmp_path)}))
        assert "QDRANT_XAI_IMAGE_ROOTS" in message
    assert client.count("fresh").count == 12
    client.close()


async def test_server_opens_an_embedded_folder_from_env_settings(
    tiny_encoder: ClipEncoder,
    tiny_model_dir: Path,
    scenes: tuple[Path, Path],
    collection_name: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "qdrant"
    writer = QdrantClient(path=str(path))
    index(writer, tiny_encoder, collection_name, scenes)
    writer.close()
    settings = ServerSettings.from_env(
        {"QDRANT_LOCAL_PATH": str(path), "COLLECTION_NAME": collection_name}
    )
    server = create_server(settings)  # own client; the model recorded in the collection
    try:
        assert server.backend.model_name() == str(tiny_model_dir)
        result = await call(server, "search_images", {"query": "a green cross", "limit": 2})
    finally:
        server.close()
    assert not result.is_error, text_of(result)
    assert len((result.structured_content or {})["hits"]) == 2


# -- settings and command line ----------------------------------------------------------------


def test_settings_from_env(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    settings = ServerSettings.from_env({"QDRANT_URL": "http://localhost:6333"})
    assert settings == ServerSettings(url="http://localhost:6333")
    assert settings.read_only is True and settings.collection_name == "qdrant_xai"
    assert settings.image_roots == () and settings.model is None and settings.search_limit == 5

    settings = ServerSettings.from_env(
        {
            "QDRANT_URL": "https://user:pw@qdrant.example:6333",
            "QDRANT_API_KEY": "s3cret",
            "COLLECTION_NAME": "photos",
            "QDRANT_READ_ONLY": "False",
            "QDRANT_SEARCH_LIMIT": "12",
            "QDRANT_XAI_MODEL": "shapes",
            "QDRANT_XAI_IMAGE_ROOTS": os.pathsep.join([str(first), "", str(second)]),
            "QDRANT_LOCAL_PATH": "",  # empty counts as unset
        }
    )
    assert settings.collection_name == "photos" and settings.read_only is False
    assert settings.search_limit == 12 and settings.model == "shapes"
    assert settings.image_roots == (first.resolve(), second.resolve())
    assert settings.api_key == "s3cret"
    shown = repr(settings) + settings.describe()
    assert "s3cret" not in shown and "pw@" not in shown
    assert "qdrant.example:6333" in settings.describe()

    local = ServerSettings.from_env({"QDRANT_LOCAL_PATH": str(tmp_path), "QDRANT_READ_ONLY": "1"})
    assert local.local_path == str(tmp_path) and local.url is None and local.read_only

    for env, message in [
        ({}, "set QDRANT_URL"),
        ({"QDRANT_URL": "http://q:6333", "QDRANT_LOCAL_PATH": "x"}, "not both"),
        ({"QDRANT_LOCAL_PATH": "x", "QDRANT_API_KEY": "k"}, "without QDRANT_URL"),
        ({"QDRANT_URL": "http://q", "QDRANT_READ_ONLY": "maybe"}, "QDRANT_READ_ONLY"),
        ({"QDRANT_URL": "http://q", "QDRANT_SEARCH_LIMIT": "ten"}, "QDRANT_SEARCH_LIMIT"),
        ({"QDRANT_URL": "http://q", "QDRANT_SEARCH_LIMIT": "500"}, "between 1 and 50"),
        (
            {"QDRANT_URL": "http://q", "QDRANT_XAI_IMAGE_ROOTS": str(tmp_path / "absent")},
            "not a directory",
        ),
    ]:
        with pytest.raises(SettingsError, match=message):
            ServerSettings.from_env(env)


def test_help_exits_zero_and_lists_the_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for word in ("--transport", "streamable-http", "QDRANT_URL", "QDRANT_XAI_IMAGE_ROOTS"):
        assert word in out


def test_main_reports_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("QDRANT_LOCAL_PATH", raising=False)
    assert main([]) == 2
    assert "set QDRANT_URL" in capsys.readouterr().err


# -- transports (the real command, in a subprocess) ----------------------------------------


def server_env(path: Path, collection: str, model_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDRANT")}
    return {
        **env,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "QDRANT_LOCAL_PATH": str(path),
        "COLLECTION_NAME": collection,
        "QDRANT_XAI_MODEL": str(model_dir),
    }


COMMAND = [sys.executable, "-c", "from qdrant_xai_mcp.server import main; raise SystemExit(main())"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
async def test_stdio_and_streamable_http_transports(
    tiny_encoder: ClipEncoder,
    tiny_model_dir: Path,
    scenes: tuple[Path, Path],
    collection_name: str,
    tmp_path: Path,
) -> None:
    """The real command on both transports (concurrently: each process takes seconds to
    import torch). An embedded folder admits one process, so each server gets a copy."""
    stdio_path, http_path = tmp_path / "stdio", tmp_path / "http"
    writer = QdrantClient(path=str(stdio_path))
    index(writer, tiny_encoder, collection_name, scenes)
    writer.close()
    shutil.copytree(stdio_path, http_path)

    port = free_port()
    http = subprocess.Popen(
        [*COMMAND, "--transport", "streamable-http", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env(http_path, collection_name, tiny_model_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # stdio: the client starts the server; anything but protocol on stdout would break it
        params = StdioServerParameters(
            command=COMMAND[0],
            args=COMMAND[1:],
            env=server_env(stdio_path, collection_name, tiny_model_dir),
        )
        async with Client(params) as client:
            assert {t.name for t in (await client.list_tools()).tools} == READ_TOOLS
            result = await client.call_tool("search_images", {"query": "a red circle", "limit": 2})
        assert not result.is_error, text_of(result)
        assert len((result.structured_content or {})["hits"]) == 2

        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if http.poll() is not None or time.monotonic() > deadline:
                    err = http.stderr.read().decode() if http.stderr else ""
                    pytest.fail(f"the HTTP server did not start: {err[-2000:]}")
                await anyio.sleep(0.2)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            assert {t.name for t in (await client.list_tools()).tools} == READ_TOOLS
            result = await client.call_tool("search_images", {"query": "a red circle"})
        assert not result.is_error, text_of(result)
        assert len((result.structured_content or {})["hits"]) == 5
    finally:
        http.terminate()
        http.wait(timeout=30)
        if http.stderr:
            http.stderr.close()
