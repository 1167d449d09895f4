"""The MCP server as a process sees it: API keys kept out of errors, an embedded folder
opened from settings, and the real command over stdio, streamable HTTP and SSE, reached by
the SDK's own clients, with the collection named per call."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="needs the mcp extra")

from mcp import StdioServerParameters
from qdrant_client import QdrantClient
from qdrant_xai_mcp import ServerSettings, create_server

from qdrant_xai import ClipEncoder, RetryPolicy
from tests.integration._mcp import (
    COMMAND,
    READ_TOOLS,
    call,
    connect,
    error_of,
    free_port,
    hits_of,
    index,
    server_env,
    six_scenes,
    structured,
    tools_of,
    wait_for_port,
)


@pytest.fixture
def scenes(tmp_path: Path) -> tuple[Path, Path]:
    """Six shapes scenes and their captions.csv."""
    return six_scenes(tmp_path)


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
        arguments = {"query": "a red circle", "collection_name": "photos"}
        result = await call(server, "search_images", arguments)
    finally:
        unreachable.close()
    message = error_of(result)
    assert "did not answer" in message and "127.0.0.1:1" in message
    assert "secret-key-123" not in message


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
    assert len(hits_of(result)) == 2


# -- transports (the real command, in a subprocess) ----------------------------------------


async def _search_per_call(client: Any, collection_name: str) -> list[dict[str, Any]]:
    """Lists the tools (collection_name offered) and searches the named collection."""
    tools = await tools_of(client)
    assert set(tools) == READ_TOOLS
    assert "collection_name" in tools["search_images"]["inputSchema"]["required"]
    result = await client.call_tool(
        "search_images", {"query": "a red circle", "collection_name": collection_name}
    )
    assert structured(result)["collection"] == collection_name
    missing = await client.call_tool(
        "search_images", {"query": "a red circle", "collection_name": "no_such_collection"}
    )
    assert "'no_such_collection' does not exist" in error_of(missing)
    return hits_of(result)


@pytest.mark.slow
async def test_stdio_streamable_http_and_sse_transports(
    tiny_encoder: ClipEncoder,
    tiny_model_dir: Path,
    scenes: tuple[Path, Path],
    collection_name: str,
    tmp_path: Path,
) -> None:
    """The real command on each transport, without COLLECTION_NAME: every call names its
    collection. The HTTP servers start concurrently (each process takes seconds to import
    torch); an embedded folder admits one process, so each server gets a copy."""
    folders = {t: tmp_path / t for t in ("stdio", "http", "sse")}
    writer = QdrantClient(path=str(folders["stdio"]))
    index(writer, tiny_encoder, collection_name, scenes)
    writer.close()
    for transport in ("http", "sse"):
        shutil.copytree(folders["stdio"], folders[transport])

    def env(folder: Path, **more: str) -> dict[str, str]:
        return server_env(
            QDRANT_LOCAL_PATH=str(folder), QDRANT_XAI_MODEL=str(tiny_model_dir), **more
        )

    http_port, sse_port = free_port(), free_port()
    servers = {
        "http": subprocess.Popen(
            [*COMMAND, "--transport", "streamable-http", "--port", str(http_port)],
            env=env(folders["http"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ),
        # host and port from FASTMCP_* (as mcp-server-qdrant is configured), path too
        "sse": subprocess.Popen(
            [*COMMAND, "--transport", "sse"],
            env=env(
                folders["sse"],
                FASTMCP_HOST="127.0.0.1",
                FASTMCP_PORT=str(sse_port),
                FASTMCP_SSE_PATH="/events",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ),
    }
    try:
        # stdio: the client starts the server; anything but protocol on stdout would break it
        params = StdioServerParameters(
            command=COMMAND[0], args=COMMAND[1:], env=env(folders["stdio"])
        )
        async with connect(params) as client:
            hits = await _search_per_call(client, collection_name)
        assert len(hits) == 6 and all(h["status"] == "ok" for h in hits)

        await wait_for_port(http_port, servers["http"])
        async with connect(f"http://127.0.0.1:{http_port}/mcp") as client:
            assert len(await _search_per_call(client, collection_name)) == 6

        await wait_for_port(sse_port, servers["sse"])
        async with connect(f"http://127.0.0.1:{sse_port}/events", sse=True) as client:
            assert len(await _search_per_call(client, collection_name)) == 6
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(timeout=30)
            if process.stderr:
                process.stderr.close()
