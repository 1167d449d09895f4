"""Serve a collection over MCP and call its tools: search, explain (heatmap PNG), reverse search.

Indexes generated shapes scenes with the bundled model, builds the qdrant-xai MCP server
in-process, and calls its tools through the MCP SDK's client exactly as an agent would. Runs
offline:

    python examples/mcp_server.py --out mcp-demo

To serve your own collection to a desktop client (Claude Desktop, Cursor, ...), add the
command to the client's MCP configuration instead:

    {"mcpServers": {"qdrant-xai": {
        "command": "qdrant-xai-mcp",
        "env": {"QDRANT_LOCAL_PATH": "/abs/path/qdrant_data", "COLLECTION_NAME": "photos",
                "QDRANT_XAI_IMAGE_ROOTS": "/abs/path/photos"}}}}

or run it over HTTP: ``QDRANT_URL=http://localhost:6333 COLLECTION_NAME=photos
qdrant-xai-mcp --transport streamable-http --port 8000`` (endpoint ``/mcp``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import tempfile
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.types import CallToolResult, ImageContent, TextContent
from qdrant_client import QdrantClient
from qdrant_xai_mcp import ServerSettings, create_server

from qdrant_xai import ClipEncoder, Explainer, Indexer, Searcher, load_image
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.render import write_report

COLLECTION = "mcp-example"


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def checked(result: CallToolResult) -> CallToolResult:
    if result.is_error:
        raise SystemExit(f"tool error: {text_of(result)}")
    return result


async def call_tools(server: Any, query: str, query_image: Path, out: Path) -> dict[str, Any]:
    """Calls every tool once, like an agent would; returns what the report needs."""
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(t.name for t in tools))

        found = checked(await client.call_tool("search_images", {"query": query, "limit": 3}))
        hits = (found.structured_content or {})["hits"]
        print(f"\nsearch_images({query!r}):")
        for hit in hits:
            print(f"  {hit['rank']}. {hit['score']:.3f}  {Path(hit['source']).name}  {hit['why']}")

        explained = checked(
            await client.call_tool("explain_hit", {"point_id": hits[0]["id"], "query_text": query})
        )
        print(f"\nexplain_hit({hits[0]['id']}):\n{text_of(explained)}")
        for block in explained.content:
            if isinstance(block, ImageContent):
                png = out / "explain_hit.png"
                png.write_bytes(base64.b64decode(block.data))
                print(f"heatmap overlay ({block.mime_type}): {png}")

        captions = checked(
            await client.call_tool("search_texts", {"image_path": str(query_image), "limit": 3})
        )
        texts = (captions.structured_content or {})["hits"]
        print(f"\nsearch_texts({query_image.name}):")
        for hit in texts:
            print(f"  {hit['rank']}. {hit['score']:.3f}  {hit['text']!r}  {hit['why']}")
    return {"image_ids": [h["id"] for h in hits], "text_ids": [h["id"] for h in texts]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--query", default="a red circle")
    parser.add_argument("--out", default=None, help="where to write report.html")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="qdrant-xai-mcp-"))
    images = out / "images"
    captions = write_scene_folder(images, 24, seed=1)
    client = QdrantClient(":memory:")  # the server could as well open QDRANT_URL/QDRANT_LOCAL_PATH
    encoder = ClipEncoder.from_pretrained(args.model)
    print(
        Indexer(client, encoder, collection_name=COLLECTION).index_folder(
            images, captions=captions, progress=False
        )
    )

    # read-only (the default), and allowed to read the scene folder only
    settings = ServerSettings(collection_name=COLLECTION, image_roots=(images,))
    server = create_server(settings, client=client, encoder=encoder)
    query_image = sorted(images.glob("*.png"))[0]
    ids = asyncio.run(call_tools(server, args.query, query_image, out))

    # the same searches through the library, for the HTML report: the MCP tools returned
    # exactly these hits, in this order
    searcher = Searcher(client, encoder, collection_name=COLLECTION)
    explainer = Explainer(encoder, client, collection_name=COLLECTION, image_roots=[images])
    image_hits = searcher.search_images(args.query, limit=3)
    loaded = load_image(query_image)
    text_hits = searcher.search_texts(loaded, limit=3)
    assert [str(h.id) for h in image_hits] == ids["image_ids"]
    assert [str(h.id) for h in text_hits] == ids["text_ids"]
    report = write_report(
        out / "report.html",
        [
            (args.query, explainer.explain(args.query, image_hits)),
            (loaded.image, explainer.explain(loaded, text_hits)),
        ],
        subtitle=f"the hits the MCP tools returned, collection '{COLLECTION}'",
    )
    client.close()
    print(f"report: {report}")


if __name__ == "__main__":
    main()
