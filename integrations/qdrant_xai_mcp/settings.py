"""Configuration of the MCP server, read from environment variables.

The variables follow the official Qdrant MCP server (``mcp-server-qdrant``) where they
overlap, so an existing client configuration carries over:

================================  ======================================================
``QDRANT_URL``                    Qdrant server URL (e.g. ``http://localhost:6333``)
``QDRANT_API_KEY``                its API key (only with ``QDRANT_URL``; never logged)
``QDRANT_LOCAL_PATH``             folder of an embedded Qdrant, instead of ``QDRANT_URL``
``COLLECTION_NAME``               the collection (default ``qdrant_xai``, as the CLI)
``QDRANT_READ_ONLY``              ``true`` (default) hides the indexing tool
``QDRANT_SEARCH_LIMIT``           default number of hits per search (default 5, max 50)
``QDRANT_XAI_MODEL``              CLIP hub id, directory, or ``shapes`` (the bundled demo
                                  model); default: the model recorded in the collection
``QDRANT_XAI_IMAGE_ROOTS``        folders (``os.pathsep``-separated) whose images the
                                  server may read: query images given as paths, hit
                                  images for overlays, folders to index. Default: none
``QDRANT_XAI_LAYOUT``             how the collection stores vectors and payloads:
                                  ``qdrant-xai`` (default) or the layout of the tool that
                                  wrote it (``langchain``, ``llamaindex``, ``fastembed``,
                                  ``qdrant-tutorial``; see :mod:`qdrant_xai.storage.layouts`)
``QDRANT_XAI_DEVICE``             torch device (default ``cpu``)
================================  ======================================================

Empty values count as unset (MCP client configurations often template them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qdrant_xai.connection import strip_userinfo
from qdrant_xai.storage.layouts import LAYOUTS

__all__ = ["DEFAULT_COLLECTION", "ENV_VARS", "ServerSettings", "SettingsError"]

DEFAULT_COLLECTION = "qdrant_xai"
DEFAULT_SEARCH_LIMIT = 5
MAX_SEARCH_LIMIT = 50

#: every variable the server reads, with a one-line meaning (used by ``--help``)
ENV_VARS: dict[str, str] = {
    "QDRANT_URL": "Qdrant server URL, e.g. http://localhost:6333",
    "QDRANT_API_KEY": "API key of that server (never logged or returned)",
    "QDRANT_LOCAL_PATH": "folder of an embedded Qdrant (instead of QDRANT_URL)",
    "COLLECTION_NAME": f"collection to serve (default: {DEFAULT_COLLECTION})",
    "QDRANT_READ_ONLY": "true (default) or false; false adds the index_images tool",
    "QDRANT_SEARCH_LIMIT": f"default hits per search (default: {DEFAULT_SEARCH_LIMIT}, "
    f"max {MAX_SEARCH_LIMIT})",
    "QDRANT_XAI_MODEL": "CLIP hub id, local directory, or 'shapes' (bundled demo model); "
    "default: the model recorded in the collection",
    "QDRANT_XAI_IMAGE_ROOTS": f"folders the server may read images from, separated by "
    f"{os.pathsep!r} (default: none)",
    "QDRANT_XAI_LAYOUT": f"collection layout: {', '.join(LAYOUTS)} (default: qdrant-xai)",
    "QDRANT_XAI_DEVICE": "torch device (default: cpu)",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """The server's configuration is invalid; the message names the variable to fix."""


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
        create_server(settings).run("stdio")
        print(settings.describe())                        # safe to log: no API key

    Args:
        collection_name: the collection the tools search and explain.
        url: Qdrant server URL; exclusive with ``local_path``.
        api_key: the server's API key; kept out of ``repr`` and :meth:`describe`.
        local_path: folder of an embedded Qdrant; exclusive with ``url``.
        model: CLIP hub id, directory, or ``"shapes"``; ``None``: the model recorded in
            the collection (else qdrant-xai's default model).
        read_only: hide the tools that write to Qdrant.
        image_roots: folders whose files the server may read (resolved, symlinks followed).
        search_limit: default number of hits of the search tools.
        layout: the collection's layout preset (see :mod:`qdrant_xai.storage.layouts`).
        device: torch device of the encoder.
    """

    collection_name: str = DEFAULT_COLLECTION
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    local_path: str | None = None
    model: str | None = None
    read_only: bool = True
    image_roots: tuple[Path, ...] = ()
    search_limit: int = DEFAULT_SEARCH_LIMIT
    layout: str = "qdrant-xai"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.collection_name:
            raise SettingsError("COLLECTION_NAME is empty; name the collection to serve")
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
        if self.layout not in LAYOUTS:
            raise SettingsError(
                f"QDRANT_XAI_LAYOUT must be one of {', '.join(LAYOUTS)}, got {self.layout!r}"
            )
        object.__setattr__(self, "image_roots", tuple(Path(r).resolve() for r in self.image_roots))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Settings from environment variables (``os.environ`` unless given).

        Raises:
            SettingsError: a value is malformed, both or neither of ``QDRANT_URL`` and
                ``QDRANT_LOCAL_PATH`` are set, or an image root is not a directory.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        url, local_path = get("QDRANT_URL"), get("QDRANT_LOCAL_PATH")
        if not url and not local_path:
            raise SettingsError(
                "set QDRANT_URL (a Qdrant server, e.g. http://localhost:6333) or "
                "QDRANT_LOCAL_PATH (the folder of an embedded Qdrant, e.g. the --path given "
                "to 'qdrant-xai index')"
            )
        roots = []
        for part in (get("QDRANT_XAI_IMAGE_ROOTS") or "").split(os.pathsep):
            if not part.strip():
                continue
            root = Path(part.strip()).expanduser()
            if not root.is_dir():
                raise SettingsError(
                    f"QDRANT_XAI_IMAGE_ROOTS: {part.strip()!r} is not a directory; list existing "
                    f"folders separated by {os.pathsep!r}"
                )
            roots.append(root)
        return cls(
            collection_name=get("COLLECTION_NAME") or DEFAULT_COLLECTION,
            url=url,
            api_key=get("QDRANT_API_KEY"),
            local_path=str(Path(local_path).expanduser()) if local_path else None,
            model=get("QDRANT_XAI_MODEL"),
            read_only=_parse_bool("QDRANT_READ_ONLY", get("QDRANT_READ_ONLY"), default=True),
            image_roots=tuple(roots),
            search_limit=_parse_int(
                "QDRANT_SEARCH_LIMIT", get("QDRANT_SEARCH_LIMIT"), default=DEFAULT_SEARCH_LIMIT
            ),
            layout=get("QDRANT_XAI_LAYOUT") or "qdrant-xai",
            device=get("QDRANT_XAI_DEVICE") or "cpu",
        )

    def __repr__(self) -> str:
        # no API key, no credentials in the URL (they never reach a log)
        url = strip_userinfo(self.url) if self.url else None
        return (
            f"ServerSettings(collection_name={self.collection_name!r}, url={url!r}, "
            f"api_key={'***' if self.api_key else None}, local_path={self.local_path!r}, "
            f"model={self.model!r}, read_only={self.read_only}, "
            f"image_roots={tuple(str(r) for r in self.image_roots)}, "
            f"search_limit={self.search_limit}, layout={self.layout!r}, device={self.device!r})"
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
        return (
            f"collection {self.collection_name!r} on {where}{key}; model "
            f"{self.model or 'recorded in the collection'}; "
            f"layout {self.layout}; {'read-only' if self.read_only else 'read-write'}; "
            f"image roots: {roots}"
        )


def _parse_bool(name: str, value: str | None, *, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false (or 1/0, yes/no, on/off), got {value!r}")


def _parse_int(name: str, value: str | None, *, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
