"""Configuration of the MCP server, read from environment variables.

The variables follow the official Qdrant MCP server (``mcp-server-qdrant``) where they
overlap, so an existing client configuration carries over; its variables this server does
not support are refused at start with a message, never ignored (see
:mod:`qdrant_xai_mcp.environment`). :data:`ENV_VARS` lists every variable read, with its
meaning (``qdrant-xai-mcp --help`` prints it).

Empty values count as unset (MCP client configurations often template them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qdrant_xai.connection import strip_userinfo
from qdrant_xai.errors import brief_repr
from qdrant_xai.storage.layouts import LAYOUTS, CollectionLayout
from qdrant_xai_mcp.environment import (
    FASTMCP_VARIABLES,
    REFUSED,
    Environment,
    SettingsError,
    embedding_model,
    fastmcp_settings,
    layout_from_env,
    refuse_unsupported,
)

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_QUERY_CHARS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_SEARCH_LIMIT",
    "ENV_VARS",
    "MAX_SEARCH_LIMIT",
    "SdkSettings",
    "ServerSettings",
    "SettingsError",
]

DEFAULT_SEARCH_LIMIT = 10  # as mcp-server-qdrant
MAX_SEARCH_LIMIT = 50
#: agents send short queries; CLIP reads only its first few dozen words of any
DEFAULT_MAX_QUERY_CHARS = 2_000
#: a base64 query image of this many bytes (decoded) fits in one default request
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: HTTP transports: bodies over this are refused (413) before they are read whole
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024

#: every variable the server reads, with a one-line meaning (used by ``--help``)
ENV_VARS: dict[str, str] = {
    "QDRANT_URL": "Qdrant server URL, e.g. http://localhost:6333",
    "QDRANT_API_KEY": "API key of that server (never logged or returned)",
    "QDRANT_LOCAL_PATH": "folder of an embedded Qdrant (instead of QDRANT_URL)",
    "COLLECTION_NAME": "the one collection to serve; unset (default): every tool takes a "
    "collection_name argument",
    "QDRANT_READ_ONLY": "true (default) or false; false adds the index_images tool",
    "QDRANT_SEARCH_LIMIT": f"default hits per search (default: {DEFAULT_SEARCH_LIMIT}, "
    f"max {MAX_SEARCH_LIMIT})",
    "QDRANT_ALLOW_ARBITRARY_FILTER": "true: the search tools take a query_filter argument (a "
    "Qdrant filter as JSON); default false",
    "QDRANT_XAI_MODEL": "CLIP hub id, local directory, or 'shapes' (bundled demo model); "
    "default: the model recorded in the collection",
    "EMBEDDING_MODEL": "mcp-server-qdrant's: FastEmbed's CLIP 'Qdrant/clip-ViT-B-32-text' is "
    "loaded as openai/clip-vit-base-patch32; any other model is refused (set QDRANT_XAI_MODEL)",
    "EMBEDDING_PROVIDER": "mcp-server-qdrant's: 'fastembed' accepted, anything else refused",
    "QDRANT_XAI_IMAGE_ROOTS": f"folders the server may read images from, separated by "
    f"{os.pathsep!r} (default: none)",
    "QDRANT_XAI_LAYOUT": f"collection layout: auto (default: detected per collection) or "
    f"{', '.join(LAYOUTS)}",
    "QDRANT_XAI_VECTOR": "custom layout: the vector name (default: the collection's only "
    "vector, or QDRANT_XAI_LAYOUT's)",
    "QDRANT_XAI_IMAGE_KEY": "custom layout: payload key (dotted path) of the image source",
    "QDRANT_XAI_TEXT_KEY": "custom layout: payload key (dotted path) of the text",
    "QDRANT_XAI_DEVICE": "torch device (default: cpu)",
    "QDRANT_XAI_MAX_QUERY_CHARS": "longest text query, in characters (default: "
    f"{DEFAULT_MAX_QUERY_CHARS:,})",
    "QDRANT_XAI_MAX_IMAGE_BYTES": "largest base64 query image, in decoded bytes (default: "
    f"{DEFAULT_MAX_IMAGE_BYTES:,})",
    "QDRANT_XAI_MAX_REQUEST_BYTES": "sse/streamable-http: largest request body, in bytes "
    f"(default: {DEFAULT_MAX_REQUEST_BYTES:,}; MCP SDK 2.x)",
    **{f"FASTMCP_{key}": meaning for key, (_, _, meaning) in FASTMCP_VARIABLES.items()},
    "FASTMCP_SERVER_*": "the same as FASTMCP_* (as fastmcp 2 spells them); any other "
    "FASTMCP_* variable is refused",
    **{name: "refused (mcp-server-qdrant's; the message says why)" for name in REFUSED},
}


@dataclass(frozen=True)
class SdkSettings:
    """What the MCP SDK is told: FastMCP's settings (``FASTMCP_*`` variables).

    Args:
        host, port: where the ``sse`` and ``streamable-http`` transports listen.
        log_level: the SDK's log level (on stderr); ``WARNING`` by default, as ``INFO`` logs
            every HTTP request to a Qdrant server.
        debug: the SDK's debug mode.
        sse_path, message_path: the ``sse`` transport's URL paths.
        streamable_http_path: the ``streamable-http`` transport's URL path.
        warn_on_duplicate_resources, warn_on_duplicate_tools, warn_on_duplicate_prompts,
            dependencies: passed to the SDK as they are.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "WARNING"
    debug: bool = False
    sse_path: str = "/sse"
    message_path: str = "/messages/"
    streamable_http_path: str = "/mcp"
    warn_on_duplicate_resources: bool = True
    warn_on_duplicate_tools: bool = True
    warn_on_duplicate_prompts: bool = True
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True, repr=False)
class ServerSettings:
    """What the MCP server serves and what it may touch.

    Setup::

        from qdrant_xai_mcp.settings import ServerSettings
        settings = ServerSettings.from_env()              # QDRANT_URL, COLLECTION_NAME, ...
        settings = ServerSettings(collection_name="photos", local_path="./qdrant_data",
                                  image_roots=("photos/",))

    Use::

        from qdrant_xai_mcp.server import create_server
        create_server(settings).serve("stdio")
        print(settings.describe())                        # safe to log: no API key

    Args:
        collection_name: the one collection the tools search and explain; ``None``: each
            tool call names its collection (``collection_name`` argument), as in
            mcp-server-qdrant.
        url: Qdrant server URL; exclusive with ``local_path``.
        api_key: the server's API key; kept out of ``repr`` and :meth:`describe`.
        local_path: folder of an embedded Qdrant; exclusive with ``url``.
        model: CLIP hub id, directory, or ``"shapes"``; ``None``: the model recorded in
            the collection (else qdrant-xai's default model).
        read_only: hide the tools that write to Qdrant.
        image_roots: folders whose files the server may read (resolved, symlinks followed).
        search_limit: default number of hits of the search tools.
        layout: the collections' layout: ``"auto"`` (or ``None``; detected per collection), a
            preset name, or a :class:`~qdrant_xai.storage.layouts.CollectionLayout`.
        device: torch device of the encoder.
        allow_arbitrary_filter: give the search tools a ``query_filter`` argument.
        max_query_chars: longest text query accepted (checked before any other work).
        max_image_bytes: largest base64 query image (judged from its length, before
            decoding).
        max_request_bytes: largest HTTP request body of the sse and streamable-http
            transports (refused with 413 before it is read whole; MCP SDK 2.x).
        sdk: what the MCP SDK is told (host, port, log level...).
    """

    collection_name: str | None = None
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    local_path: str | None = None
    model: str | None = None
    read_only: bool = True
    image_roots: tuple[Path, ...] = ()
    search_limit: int = DEFAULT_SEARCH_LIMIT
    layout: str | CollectionLayout | None = "auto"
    device: str = "cpu"
    allow_arbitrary_filter: bool = False
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    sdk: SdkSettings = field(default_factory=SdkSettings)

    def __post_init__(self) -> None:
        if self.collection_name is not None and not self.collection_name.strip():
            raise SettingsError(
                "COLLECTION_NAME is empty; name the collection to serve, or leave it unset to "
                "name one in each tool call"
            )
        if self.url and self.local_path:
            raise SettingsError(
                "both QDRANT_URL and QDRANT_LOCAL_PATH are set; set QDRANT_URL for a Qdrant "
                "server or QDRANT_LOCAL_PATH for an embedded folder, not both"
            )
        if self.api_key and not self.url:
            raise SettingsError(
                "QDRANT_API_KEY is set without QDRANT_URL; the key is only sent to a Qdrant "
                "server (an embedded QDRANT_LOCAL_PATH needs none)"
            )
        if not 1 <= self.search_limit <= MAX_SEARCH_LIMIT:
            raise SettingsError(
                f"QDRANT_SEARCH_LIMIT must be between 1 and {MAX_SEARCH_LIMIT}, "
                f"got {self.search_limit}"
            )
        for name, value in (
            ("QDRANT_XAI_MAX_QUERY_CHARS", self.max_query_chars),
            ("QDRANT_XAI_MAX_IMAGE_BYTES", self.max_image_bytes),
            ("QDRANT_XAI_MAX_REQUEST_BYTES", self.max_request_bytes),
        ):
            if value < 1:
                raise SettingsError(f"{name} must be a positive number, got {value}")
        layout = "auto" if self.layout is None else self.layout
        if isinstance(layout, str) and layout != "auto" and layout not in LAYOUTS:
            raise SettingsError(
                f"QDRANT_XAI_LAYOUT must be 'auto' or one of {', '.join(LAYOUTS)}, "
                f"got {brief_repr(layout)}"
            )
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "image_roots", tuple(Path(r).resolve() for r in self.image_roots))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Settings from environment variables (``os.environ`` unless given).

        Raises:
            SettingsError: a value is malformed, both or neither of ``QDRANT_URL`` and
                ``QDRANT_LOCAL_PATH`` are set, an image root is not a directory, or a
                variable of mcp-server-qdrant or FastMCP is set that this server does not
                support (the message says what to set instead).
        """
        env = Environment(os.environ if environ is None else environ)
        refuse_unsupported(env)
        url, local_path = env.text("QDRANT_URL"), env.text("QDRANT_LOCAL_PATH")
        if not url and not local_path:
            raise SettingsError(
                "set QDRANT_URL (a Qdrant server, e.g. http://localhost:6333) or "
                "QDRANT_LOCAL_PATH (the folder of an embedded Qdrant, e.g. the --path given "
                "to 'qdrant-xai index')"
            )
        model, from_fastembed = env.text("QDRANT_XAI_MODEL"), embedding_model(env)
        if model and from_fastembed and model != from_fastembed:
            raise SettingsError(
                f"EMBEDDING_MODEL names {from_fastembed} and QDRANT_XAI_MODEL names "
                f"{brief_repr(model)}; keep QDRANT_XAI_MODEL and unset EMBEDDING_MODEL"
            )
        return cls(
            collection_name=env.text("COLLECTION_NAME"),
            url=url,
            api_key=env.text("QDRANT_API_KEY"),
            local_path=str(Path(local_path).expanduser()) if local_path else None,
            model=model or from_fastembed,
            read_only=env.flag("QDRANT_READ_ONLY", True),
            image_roots=_image_roots(env),
            search_limit=env.number("QDRANT_SEARCH_LIMIT", DEFAULT_SEARCH_LIMIT),
            layout=layout_from_env(env),
            device=env.text("QDRANT_XAI_DEVICE") or "cpu",
            allow_arbitrary_filter=env.flag("QDRANT_ALLOW_ARBITRARY_FILTER", False),
            max_query_chars=env.number("QDRANT_XAI_MAX_QUERY_CHARS", DEFAULT_MAX_QUERY_CHARS),
            max_image_bytes=env.number("QDRANT_XAI_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES),
            max_request_bytes=env.number("QDRANT_XAI_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
            sdk=SdkSettings(**fastmcp_settings(env)),
        )

    @property
    def layout_name(self) -> str:
        """``auto``, the preset's name, or the custom layout's."""
        return self.layout.name if isinstance(self.layout, CollectionLayout) else str(self.layout)

    def __repr__(self) -> str:
        # no API key, no credentials in the URL (they never reach a log)
        url = strip_userinfo(self.url) if self.url else None
        return (
            f"ServerSettings(collection_name={self.collection_name!r}, url={url!r}, "
            f"api_key={'***' if self.api_key else None}, local_path={self.local_path!r}, "
            f"model={self.model!r}, read_only={self.read_only}, "
            f"image_roots={tuple(str(r) for r in self.image_roots)}, "
            f"search_limit={self.search_limit}, layout={self.layout!r}, device={self.device!r}, "
            f"allow_arbitrary_filter={self.allow_arbitrary_filter}, "
            f"max_query_chars={self.max_query_chars}, max_image_bytes={self.max_image_bytes}, "
            f"max_request_bytes={self.max_request_bytes}, sdk={self.sdk!r})"
        )

    def describe(self) -> str:
        """One line for logs: where, which collection, model, mode. Never the API key."""
        where = (
            f"server {strip_userinfo(self.url)}"
            if self.url
            else f"embedded {self.local_path or '(client given)'}"
        )
        key = " with API key" if self.api_key else ""
        roots = ", ".join(str(r) for r in self.image_roots) or "none"
        served = (
            f"collection {self.collection_name!r}"
            if self.collection_name
            else "the collection each call names"
        )
        return (
            f"{served} on {where}{key}; model {self.model or 'recorded in the collection'}; "
            f"layout {self.layout_name}; {'read-only' if self.read_only else 'read-write'}; "
            f"image roots: {roots}"
        )


def _image_roots(env: Environment) -> tuple[Path, ...]:
    roots = []
    for part in (env.text("QDRANT_XAI_IMAGE_ROOTS") or "").split(os.pathsep):
        if not part.strip():
            continue
        root = Path(part.strip()).expanduser()
        if not root.is_dir():
            raise SettingsError(
                f"QDRANT_XAI_IMAGE_ROOTS: {part.strip()!r} is not a directory; list existing "
                f"folders separated by {os.pathsep!r}"
            )
        roots.append(root)
    return tuple(roots)
