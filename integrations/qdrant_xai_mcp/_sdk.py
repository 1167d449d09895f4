"""The MCP Python SDK, 1.x or 2.x: the few names and calls of it this server uses.

The server runs on either major version, so that it installs beside mcp-server-qdrant (whose
fastmcp 2.7 requires ``mcp<2``) as well as on its own with the newest SDK. What differs, read
from the SDK sources (1.10 and 1.30 against 2.3):

- the server class: 1.x ``mcp.server.fastmcp.FastMCP``, 2.x ``mcp.server.mcpserver.MCPServer``
  (its ``Image`` and ``exceptions.ToolError`` moved along);
- the server's ``title`` and ``version``: constructor arguments in 2.x, not taken by 1.x;
- host, port and URL paths of the HTTP transports: 1.x takes them in the constructor (and
  reads ``FASTMCP_*`` variables itself, which the values given override), 2.x in ``run()``;
- an exception raised by a tool: 1.x returns its message after "Error executing tool NAME:",
  2.x returns a ``ToolError``'s message and hides any other's;
- early 1.x (1.10) with a current pydantic-settings warns, at construction, that its
  settings' ``lifespan`` field has an unresolved annotation (harmless: silenced here).

Everything else the server uses is the same in both: ``add_tool(fn, name=, title=,
description=, annotations=, structured_output=)``, ``run(transport)``, ``mcp.types``
(whose models take camelCase names in both, so annotations are built from camelCase keys).
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from qdrant_xai_mcp.settings import SdkSettings

__all__ = [
    "SDK_MAJOR",
    "TRANSPORTS",
    "Image",
    "ServerBase",
    "TextContent",
    "ToolError",
    "Transport",
    "quiet_construction",
    "run_server",
    "server_options",
    "tool_annotations",
]

Transport = Literal["stdio", "sse", "streamable-http"]
TRANSPORTS: tuple[Transport, ...] = ("stdio", "sse", "streamable-http")

_MISSING = (
    "qdrant_xai_mcp needs the MCP Python SDK, 1.10 or later (1.x) or 2.x; install it with "
    "pip install 'qdrant-xai[mcp]'"
)


def _load() -> tuple[int, Any, Any, Any]:
    """(major version, server class, image class, tool error class) of the installed SDK."""
    try:
        import mcp.types  # noqa: F401  (the same in both versions)
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    try:
        from mcp.server.mcpserver import Image as Image2
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError as ToolError2

        return 2, MCPServer, Image2, ToolError2
    except ImportError:
        pass
    try:  # 1.x (imported by name: the type checker sees 2.x, where this module is a stub)
        fastmcp = importlib.import_module("mcp.server.fastmcp")
        exceptions = importlib.import_module("mcp.server.fastmcp.exceptions")
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    if "structured_output" not in inspect.signature(fastmcp.FastMCP.add_tool).parameters:
        raise ImportError(f"{_MISSING}; the installed SDK is older than 1.10")
    return 1, fastmcp.FastMCP, fastmcp.Image, exceptions.ToolError


SDK_MAJOR, _server, _image, _tool_error = _load()

from mcp.types import TextContent, ToolAnnotations  # noqa: E402  (after _load names the extra)

if TYPE_CHECKING:  # type-checked against 2.x; 1.x has the same calls (see the table above)
    from mcp.server.mcpserver import Image, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    ServerBase = MCPServer[Any]
else:
    ServerBase, Image, ToolError = _server, _image, _tool_error


def server_options(sdk: SdkSettings, *, title: str, version: str) -> dict[str, Any]:
    """Keyword arguments of the SDK's server constructor for ``sdk``."""
    options: dict[str, Any] = {
        "debug": sdk.debug,
        "log_level": sdk.log_level,
        "warn_on_duplicate_resources": sdk.warn_on_duplicate_resources,
        "warn_on_duplicate_tools": sdk.warn_on_duplicate_tools,
        "warn_on_duplicate_prompts": sdk.warn_on_duplicate_prompts,
        "dependencies": list(sdk.dependencies),
    }
    if SDK_MAJOR >= 2:
        return {**options, "title": title, "version": version}
    # 1.x: the HTTP settings belong to the constructor (given here, they win over the
    # FASTMCP_* variables the SDK would read itself)
    return {
        **options,
        "host": sdk.host,
        "port": sdk.port,
        "sse_path": sdk.sse_path,
        "message_path": sdk.message_path,
        "streamable_http_path": sdk.streamable_http_path,
    }


@contextmanager
def quiet_construction() -> Iterator[None]:
    """Silences what early 1.x SDKs warn while a server is built (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Field 'lifespan' has an incomplete definition")
        yield


def run_server(
    server: ServerBase, transport: Transport, sdk: SdkSettings, *, max_request_bytes: int
) -> None:
    """Runs ``server`` on ``transport`` until it stops (host, port and paths from ``sdk``).

    On the HTTP transports of SDK 2.x, a request body over ``max_request_bytes`` is answered
    413 before it is read whole (the SDK's ``RequestBodyLimitMiddleware``: the declared
    ``Content-Length``, then the bytes as they arrive). SDK 1.x has no such bound.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    if SDK_MAJOR < 2 or transport == "stdio":
        server.run(transport)
    elif transport == "sse":
        server.run(
            "sse",
            host=sdk.host,
            port=sdk.port,
            sse_path=sdk.sse_path,
            message_path=sdk.message_path,
            max_request_body_size=max_request_bytes,
        )
    else:
        server.run(
            "streamable-http",
            host=sdk.host,
            port=sdk.port,
            streamable_http_path=sdk.streamable_http_path,
            max_request_body_size=max_request_bytes,
        )


def tool_annotations(**hints: bool) -> ToolAnnotations:
    """Tool annotations from camelCase hints (``readOnlyHint=True``), for either SDK."""
    return ToolAnnotations.model_validate(hints)
