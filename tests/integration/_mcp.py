"""Shared parts of the MCP server tests (``test_mcp_*.py``): the scenes they index, and
calling a tool through the SDK's in-process client.

Import it after ``pytest.importorskip("mcp.server.mcpserver")``: it needs the MCP SDK.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp import Client
from mcp.types import CallToolResult, TextContent
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.demo.world import write_scene_folder

READ_TOOLS = {"search_images", "search_texts", "explain_hit"}


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


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def error_of(result: CallToolResult) -> str:
    assert result.is_error, f"expected a tool error, got {text_of(result)[:300]}"
    return text_of(result)


async def call(server: Any, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    async with Client(server) as client:
        return await client.call_tool(tool, arguments)
