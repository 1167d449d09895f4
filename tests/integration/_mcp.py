"""Shared parts of the MCP server tests (``test_mcp_*.py``): the scenes they index, and the
installed MCP SDK's own client (1.x or 2.x, whichever is installed), used as its users do.

Import it after ``pytest.importorskip("mcp")``: it needs the MCP SDK.

The two SDKs name their clients and their result fields differently (2.x ``mcp.Client``,
snake_case attributes; 1.x ``ClientSession`` over a transport, camelCase attributes), so
the tests read results through :func:`dump` (the wire form: camelCase keys in both).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel
from qdrant_client import QdrantClient
from qdrant_xai_mcp._sdk import SDK_MAJOR

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.demo.world import write_scene_folder

REPO = Path(__file__).resolve().parents[2]
READ_TOOLS = {"search_images", "search_texts", "explain_hit"}
#: the real command, as a desktop client starts it (the console script pip installed)
_SCRIPT = Path(sys.executable).with_name("qdrant-xai-mcp")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "qdrant_xai_mcp"]


def six_scenes(tmp_path: Path) -> tuple[Path, Path]:
    """Six shapes scenes under ``tmp_path/images`` and their captions.csv."""
    images = tmp_path / "images"
    return images, write_scene_folder(images, 6, seed=3)


def index(client: QdrantClient, encoder: ClipEncoder, name: str, scenes: tuple[Path, Path]) -> None:
    images, captions = scenes
    summary = Indexer(client, encoder, collection_name=name).index_folder(
        images, captions=captions, progress=False
    )
    assert summary.indexed_images == 6 and not summary.failed


# -- the SDK's client -----------------------------------------------------------------------


@asynccontextmanager
async def connect(target: Any, *, sse: bool = False) -> AsyncIterator[Any]:
    """A client session (``list_tools``, ``call_tool``) to ``target``: a server object (in
    process), ``StdioServerParameters`` (the client starts the command), or a URL (of the
    SSE transport with ``sse=True``, else of streamable HTTP)."""
    if SDK_MAJOR >= 2:
        from mcp import Client

        if isinstance(target, str) and sse:
            from mcp.client.sse import sse_client

            target = sse_client(target)
        async with Client(target) as client:
            yield client
        return
    if not isinstance(target, (str, StdioServerParameters)):
        from mcp.shared.memory import create_connected_server_and_client_session

        async with create_connected_server_and_client_session(target._mcp_server) as session:
            yield session
        return
    transport: Any
    if isinstance(target, StdioServerParameters):
        from mcp.client.stdio import stdio_client

        transport = stdio_client(target)
    elif sse:
        from mcp.client.sse import sse_client

        transport = sse_client(target)
    else:
        from mcp.client import streamable_http

        # 1.x renamed streamablehttp_client streamable_http_client (1.2x), deprecating the old
        http_client = getattr(streamable_http, "streamable_http_client", None)
        transport = (http_client or streamable_http.streamablehttp_client)(target)
    async with transport as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        yield session


async def call(server: Any, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    async with connect(server) as client:
        result: CallToolResult = await client.call_tool(tool, arguments)
        return result


async def tools_of(client: Any) -> dict[str, dict[str, Any]]:
    """The listed tools, by name, in their wire form (``inputSchema``, ``annotations``...)."""
    return {t.name: dump(t) for t in (await client.list_tools()).tools}


def dump(model: BaseModel) -> dict[str, Any]:
    """A protocol object as on the wire: camelCase keys, whichever SDK built it."""
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def structured(result: CallToolResult) -> dict[str, Any]:
    """A tool result's structured content (``{}`` when it has none)."""
    data = dump(result).get("structuredContent") or {}
    assert isinstance(data, dict)
    return data


def hits_of(result: CallToolResult) -> list[dict[str, Any]]:
    assert not is_error(result), text_of(result)
    hits = structured(result)["hits"]
    assert isinstance(hits, list)
    return hits


def is_error(result: CallToolResult) -> bool:
    return bool(dump(result).get("isError"))


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def error_of(result: CallToolResult) -> str:
    assert is_error(result), f"expected a tool error, got {text_of(result)[:300]}"
    return text_of(result)


# -- the real command in a subprocess -----------------------------------------------------


def server_env(**variables: str) -> dict[str, str]:
    """The environment of a server subprocess: no QDRANT_*/FASTMCP_* of ours, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT", "FASTMCP", "COLL"))}
    return {**env, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **variables}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for_port(port: int, process: Any, timeout: float = 90) -> None:
    """Until the server subprocess listens on ``port`` (fails with its stderr if it exits)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                err = process.stderr.read().decode() if process.stderr else ""
                raise AssertionError(f"the server did not start: {err[-2000:]}") from None
            await anyio.sleep(0.2)
