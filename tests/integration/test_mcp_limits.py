"""The MCP server's bounds on one request, through the SDK's own client: query length and
query image size refused with the variable that raises them, words past the model's context
reported, one client's model work never holding the others, and (HTTP transports) request
bodies over QDRANT_XAI_MAX_REQUEST_BYTES refused before they are read."""

from __future__ import annotations

import base64
import io
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp", reason="needs the mcp extra")

import httpx
from PIL import Image
from qdrant_client import QdrantClient
from qdrant_xai_mcp import ServerSettings, create_server
from qdrant_xai_mcp.settings import DEFAULT_MAX_QUERY_CHARS, SettingsError

from qdrant_xai import ClipEncoder
from qdrant_xai.serial_client import SerialClient
from tests.integration._mcp import (
    COMMAND,
    connect,
    error_of,
    free_port,
    hits_of,
    index,
    server_env,
    six_scenes,
    text_of,
    wait_for_port,
)


@pytest.fixture
def memory(
    tiny_encoder: ClipEncoder, tmp_path: Path, collection_name: str
) -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    index(client, tiny_encoder, collection_name, six_scenes(tmp_path))
    yield client
    client.close()


def _server(client: QdrantClient, encoder: ClipEncoder, name: str, **settings: Any) -> Any:
    return create_server(
        ServerSettings(collection_name=name, **settings), client=client, encoder=encoder
    )


async def test_a_long_query_is_refused_naming_the_variable(
    memory: QdrantClient, tiny_encoder: ClipEncoder, collection_name: str
) -> None:
    server = _server(memory, tiny_encoder, collection_name)
    query = "a red circle " * 3100  # 40k characters
    async with connect(server) as client:
        hit = hits_of(await client.call_tool("search_images", {"query": "a red", "limit": 1}))[0]
        for tool, arguments in (
            ("search_images", {"query": query}),
            ("explain_hit", {"point_id": hit["id"], "query_text": query}),
        ):
            message = error_of(await client.call_tool(tool, arguments))
            assert "QDRANT_XAI_MAX_QUERY_CHARS" in message
            assert f"{len(query):,} characters" in message
            assert f"{DEFAULT_MAX_QUERY_CHARS:,}" in message
            assert len(message) < 600  # the query is not echoed
    # a server that raises the limit takes it
    raised = _server(memory, tiny_encoder, collection_name, max_query_chars=50_000)
    async with connect(raised) as client:
        assert hits_of(await client.call_tool("search_images", {"query": query, "limit": 2}))


async def test_a_large_base64_image_is_refused_before_decoding(
    memory: QdrantClient, tiny_encoder: ClipEncoder, collection_name: str
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(buffer, format="BMP")  # 12 KB
    data = base64.b64encode(buffer.getvalue()).decode()
    server = _server(memory, tiny_encoder, collection_name, max_image_bytes=4096)
    async with connect(server) as client:
        message = error_of(await client.call_tool("search_texts", {"image_base64": data}))
        assert "QDRANT_XAI_MAX_IMAGE_BYTES" in message and "4,096" in message
    roomy = _server(memory, tiny_encoder, collection_name)
    async with connect(roomy) as client:
        assert hits_of(await client.call_tool("search_texts", {"image_base64": data}))


async def test_explain_hit_says_which_words_the_model_never_saw(
    memory: QdrantClient, tiny_encoder: ClipEncoder, collection_name: str
) -> None:
    query = " ".join(["a red circle and a blue square"] * tiny_encoder.max_text_tokens)
    server = _server(memory, tiny_encoder, collection_name)
    async with connect(server) as client:
        hits = hits_of(await client.call_tool("search_images", {"query": query, "limit": 1}))
        assert "past the model's context not attributed" in hits[0]["why"]
        result = await client.call_tool(
            "explain_hit", {"point_id": hits[0]["id"], "query_text": query}
        )
        assert "past the model's context: CLIP never saw them" in text_of(result)
        short = await client.call_tool(
            "explain_hit", {"point_id": hits[0]["id"], "query_text": "a red circle"}
        )
        assert "never saw" not in text_of(short)


async def test_one_clients_model_work_does_not_hold_another(
    memory: QdrantClient, tiny_encoder: ClipEncoder, collection_name: str
) -> None:
    """While one call is inside the model (held there until the other call has finished),
    a second client's search runs to its end: under one lock for the whole call, as the
    server had, the second would wait for the first and this test would time out."""
    server = _server(memory, tiny_encoder, collection_name)
    backend = server.backend
    assert isinstance(backend.client, SerialClient)  # an embedded Qdrant: calls serialised
    other_done = threading.Event()
    held = threading.Event()
    embed = tiny_encoder.embed_texts

    def slow_embed(texts: Any) -> Any:
        if list(texts) == ["the slow query"]:
            held.set()
            assert other_done.wait(30), "the second client was blocked by the first"
        return embed(texts)

    backend.encoder().embed_texts = slow_embed  # type: ignore[method-assign]
    try:
        async with connect(server) as first, connect(server) as second:
            results: dict[str, Any] = {}

            async def slow() -> None:
                results["slow"] = await first.call_tool(
                    "search_images", {"query": "the slow query"}
                )

            async def fast() -> None:
                await anyio.to_thread.run_sync(held.wait, 30)
                results["fast"] = await second.call_tool("search_images", {"query": "a red"})
                other_done.set()

            async with anyio.create_task_group() as group:
                group.start_soon(slow)
                group.start_soon(fast)
            assert hits_of(results["fast"]) and hits_of(results["slow"])
    finally:
        del tiny_encoder.embed_texts  # type: ignore[method-assign]


def test_limits_from_the_environment() -> None:
    url = {"QDRANT_URL": "http://localhost:6333"}
    settings = ServerSettings.from_env(
        {
            **url,
            "QDRANT_XAI_MAX_QUERY_CHARS": "500",
            "QDRANT_XAI_MAX_IMAGE_BYTES": "1000",
            "QDRANT_XAI_MAX_REQUEST_BYTES": "2000",
        }
    )
    assert (settings.max_query_chars, settings.max_image_bytes, settings.max_request_bytes) == (
        500,
        1000,
        2000,
    )
    for bad in ("0", "-5"):
        with pytest.raises(SettingsError, match="QDRANT_XAI_MAX_QUERY_CHARS"):
            ServerSettings.from_env({**url, "QDRANT_XAI_MAX_QUERY_CHARS": bad})
    with pytest.raises(SettingsError, match="QDRANT_XAI_MAX_REQUEST_BYTES must be a whole"):
        ServerSettings.from_env({**url, "QDRANT_XAI_MAX_REQUEST_BYTES": "16MB"})


@pytest.mark.slow
async def test_http_bodies_over_the_limit_are_refused(
    tiny_encoder: ClipEncoder, tiny_model_dir: Path, collection_name: str, tmp_path: Path
) -> None:
    """The real command on streamable HTTP with QDRANT_XAI_MAX_REQUEST_BYTES: a body over
    it gets 413 (declared or streamed), a normal session works."""
    folder = tmp_path / "qdrant"
    writer = QdrantClient(path=str(folder))
    index(writer, tiny_encoder, collection_name, six_scenes(tmp_path))
    writer.close()
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "--transport", "streamable-http", "--port", str(port)],
        env=server_env(
            QDRANT_LOCAL_PATH=str(folder),
            QDRANT_XAI_MODEL=str(tiny_model_dir),
            COLLECTION_NAME=collection_name,
            QDRANT_XAI_MAX_REQUEST_BYTES="20000",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_for_port(port, process)
        url = f"http://127.0.0.1:{port}/mcp"
        headers = {"Accept": "application/json, text/event-stream"}
        body = b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"q": "' + b"a" * 50_000
        async with httpx.AsyncClient(timeout=30) as http:
            declared = await http.post(url, content=body + b'"}}', headers=headers)
            assert declared.status_code == 413

            async def chunks() -> Any:  # no Content-Length: counted as it arrives
                for start in range(0, len(body), 8192):
                    yield body[start : start + 8192]

            streamed = await http.post(url, content=chunks(), headers=headers)
            assert streamed.status_code == 413
        async with connect(url) as client:
            assert hits_of(await client.call_tool("search_images", {"query": "a red circle"}))
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()
