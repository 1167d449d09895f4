"""MCP server of qdrant-xai: explainable CLIP search over Qdrant as MCP tools.

Run ``qdrant-xai-mcp`` (stdio), ``qdrant-xai-mcp --transport streamable-http`` or ``--transport
sse``, configured like mcp-server-qdrant by environment variables (``QDRANT_URL`` or
``QDRANT_LOCAL_PATH``, ``COLLECTION_NAME`` or a ``collection_name`` per call,
``QDRANT_XAI_IMAGE_ROOTS`` ...; see :mod:`qdrant_xai_mcp.settings`), or build it in Python::

    from qdrant_xai_mcp import ServerSettings, create_server
    server = create_server(ServerSettings(collection_name="photos", local_path="./qdrant_data"))
    server.serve("stdio")

The package: :mod:`~qdrant_xai_mcp.server` (tool registration, command line),
:mod:`~qdrant_xai_mcp.backend` (the work of each tool, over the core),
:mod:`~qdrant_xai_mcp.results` (what the tools return), :mod:`~qdrant_xai_mcp.settings` and
:mod:`~qdrant_xai_mcp.environment` (configuration), :mod:`~qdrant_xai_mcp._sdk` (the MCP SDK,
1.x or 2.x).

Needs the ``mcp`` extra: ``pip install 'qdrant-xai[mcp]'`` (the MCP SDK 1.10 or later, or 2.x:
it installs beside mcp-server-qdrant, which needs ``mcp<2``).
"""

from __future__ import annotations

from qdrant_xai_mcp.backend import XaiBackend
from qdrant_xai_mcp.server import QdrantXaiMCPServer, create_server, main
from qdrant_xai_mcp.settings import SdkSettings, ServerSettings, SettingsError

__all__ = [
    "QdrantXaiMCPServer",
    "SdkSettings",
    "ServerSettings",
    "SettingsError",
    "XaiBackend",
    "create_server",
    "main",
]
