"""Reading the server's environment: typed values, the layout variables, and the variables of
mcp-server-qdrant and FastMCP that a configuration copied from mcp-server-qdrant carries.

Every variable mcp-server-qdrant 0.8 reads is either honoured or refused at start with a
message saying what to set instead; none is silently ignored:

- ``EMBEDDING_PROVIDER``: ``fastembed`` (its only value) is accepted; anything else refused.
- ``EMBEDDING_MODEL`` (a FastEmbed model name there): FastEmbed's CLIP,
  ``Qdrant/clip-ViT-B-32-text`` (an export of ``openai/clip-vit-base-patch32``), is loaded
  as that checkpoint; every other model is refused (its vectors cannot be searched with
  CLIP): set ``QDRANT_XAI_MODEL``.
- ``QDRANT_ALLOW_ARBITRARY_FILTER``: supported (read in :mod:`qdrant_xai_mcp.settings`).
- ``TOOL_STORE_DESCRIPTION``, ``TOOL_FIND_DESCRIPTION``, ``FILTERABLE_FIELDS``: refused (this
  server has neither ``qdrant-store`` nor ``qdrant-find``, nor per-field filter arguments).
- ``FASTMCP_*`` (the SDK's settings; fastmcp 2 spells the server's ``FASTMCP_SERVER_*``):
  those in :data:`FASTMCP_VARIABLES` are supported, any other is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from qdrant_xai.errors import brief_repr
from qdrant_xai.storage.layouts import AUTO, LAYOUTS, CollectionLayout, custom_layout

__all__ = [
    "FASTEMBED_CLIP",
    "FASTMCP_VARIABLES",
    "REFUSED",
    "Environment",
    "SettingsError",
    "embedding_model",
    "fastmcp_settings",
    "layout_from_env",
    "refuse_unsupported",
]


class SettingsError(ValueError):
    """The server's configuration is invalid; the message names the variable to fix."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Environment:
    """Typed reads of environment variables; empty values count as unset (MCP client
    configurations often template them)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise SettingsError(
            f"{name} must be true or false (or 1/0, yes/no, on/off), got {brief_repr(value)}"
        )

    def number(self, name: str, default: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, got {brief_repr(value)}") from None

    def names(self, prefix: str) -> list[str]:
        """The set variables whose names start with ``prefix``, sorted."""
        return sorted(n for n in self._environ if n.startswith(prefix) and self.text(n))


# -- mcp-server-qdrant's embedding settings ------------------------------------------------

#: FastEmbed CLIP models (lower-cased names) and the checkpoint they export
FASTEMBED_CLIP: dict[str, str] = {
    "qdrant/clip-vit-b-32-text": "openai/clip-vit-base-patch32",
    "qdrant/clip-vit-b-32-vision": "openai/clip-vit-base-patch32",
}


def embedding_model(env: Environment) -> str | None:
    """The CLIP checkpoint mcp-server-qdrant's ``EMBEDDING_MODEL`` names (None when unset).

    Raises:
        SettingsError: ``EMBEDDING_PROVIDER`` is not ``fastembed``, or ``EMBEDDING_MODEL``
            names a model that is not FastEmbed's CLIP.
    """
    provider = env.text("EMBEDDING_PROVIDER")
    if provider is not None and provider.lower() != "fastembed":
        raise SettingsError(
            f"EMBEDDING_PROVIDER={brief_repr(provider)} is not supported: qdrant-xai-mcp embeds "
            "with a CLIP model through transformers. Unset EMBEDDING_PROVIDER and set "
            "QDRANT_XAI_MODEL to the CLIP model (hub id or folder) that wrote the collection"
        )
    name = env.text("EMBEDDING_MODEL")
    if name is None:
        return None
    if name.lower() in FASTEMBED_CLIP:
        return FASTEMBED_CLIP[name.lower()]
    raise SettingsError(
        f"EMBEDDING_MODEL={brief_repr(name)} is not a CLIP model qdrant-xai-mcp can load: it "
        "reads EMBEDDING_MODEL as mcp-server-qdrant does, as a FastEmbed model name, and of "
        "those takes only FastEmbed's CLIP, 'Qdrant/clip-ViT-B-32-text' (loaded as "
        "openai/clip-vit-base-patch32). Vectors written by another model cannot be searched "
        "with CLIP. Unset EMBEDDING_MODEL and set QDRANT_XAI_MODEL to the CLIP model (hub id "
        "or folder) that wrote the collection"
    )


#: mcp-server-qdrant variables this server refuses, and why
REFUSED: dict[str, str] = {
    "TOOL_STORE_DESCRIPTION": "it describes mcp-server-qdrant's qdrant-store tool, which "
    "qdrant-xai-mcp does not have (its tools are search_images, search_texts, explain_hit and, "
    "when not read-only, index_images)",
    "TOOL_FIND_DESCRIPTION": "it describes mcp-server-qdrant's qdrant-find tool (text "
    "memories), which qdrant-xai-mcp does not have; its search tools return images and "
    "captions with explanations and describe themselves",
    "FILTERABLE_FIELDS": "qdrant-xai-mcp has no per-field filter arguments; set "
    "QDRANT_ALLOW_ARBITRARY_FILTER=true to give its search tools a query_filter argument",
}


def refuse_unsupported(env: Environment) -> None:
    """Raises :class:`SettingsError` for the first set variable of :data:`REFUSED`."""
    for name, why in REFUSED.items():
        if env.text(name) is not None:
            raise SettingsError(f"{name} is set, but {why}. Unset {name}")


# -- FastMCP's settings --------------------------------------------------------------------


def _port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise SettingsError(f"{name} must be a TCP port (1-65535), got {brief_repr(value)}")
    return port


def _path(name: str, value: str) -> str:
    if not value.startswith("/"):
        raise SettingsError(f"{name} must be a URL path starting with '/', got {brief_repr(value)}")
    return value


def _level(name: str, value: str) -> str:
    levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    if value.upper() not in levels:
        raise SettingsError(f"{name} must be one of {', '.join(levels)}, got {brief_repr(value)}")
    return value.upper()


def _bool(name: str, value: str) -> bool:
    return Environment({name: value}).flag(name, False)


def _list(name: str, value: str) -> tuple[str, ...]:
    try:
        items = json.loads(value)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise SettingsError(
            f"{name} must be a JSON list of strings (as FastMCP reads it), e.g. "
            f'["pandas"], got {brief_repr(value)}'
        )
    return tuple(items)


#: FASTMCP_<NAME> variables supported: the SdkSettings field each sets, its reader, meaning
FASTMCP_VARIABLES: dict[str, tuple[str, Callable[[str, str], Any], str]] = {
    "HOST": ("host", lambda _, v: v, "bind address of sse/streamable-http (default 127.0.0.1)"),
    "PORT": ("port", _port, "port of sse/streamable-http (default 8000)"),
    "LOG_LEVEL": ("log_level", _level, "the SDK's log level, on stderr (default WARNING)"),
    "DEBUG": ("debug", _bool, "the SDK's debug mode (default false)"),
    "SSE_PATH": ("sse_path", _path, "URL path of the sse transport (default /sse)"),
    "MESSAGE_PATH": ("message_path", _path, "sse message path (default /messages/)"),
    "STREAMABLE_HTTP_PATH": (
        "streamable_http_path",
        _path,
        "URL path of streamable-http (default /mcp)",
    ),
    "WARN_ON_DUPLICATE_RESOURCES": ("warn_on_duplicate_resources", _bool, "passed to the SDK"),
    "WARN_ON_DUPLICATE_TOOLS": ("warn_on_duplicate_tools", _bool, "passed to the SDK"),
    "WARN_ON_DUPLICATE_PROMPTS": ("warn_on_duplicate_prompts", _bool, "passed to the SDK"),
    "DEPENDENCIES": ("dependencies", _list, "passed to the SDK (a JSON list)"),
}


def fastmcp_settings(env: Environment) -> dict[str, Any]:
    """The SDK settings the ``FASTMCP_*`` variables set, as ``SdkSettings`` keyword arguments.

    ``FASTMCP_HOST`` and ``FASTMCP_SERVER_HOST`` (how fastmcp 2, under mcp-server-qdrant 0.8,
    spells it) mean the same; both given, they must agree.

    Raises:
        SettingsError: a value is malformed, the two spellings disagree, or a ``FASTMCP_*``
            variable is set that this server does not support.
    """
    found: dict[str, tuple[str, Any]] = {}  # field -> (variable, value)
    for name in env.names("FASTMCP_"):
        key = name.removeprefix("FASTMCP_")
        key = (
            key.removeprefix("SERVER_") if key.removeprefix("SERVER_") in FASTMCP_VARIABLES else key
        )
        if key not in FASTMCP_VARIABLES:
            supported = ", ".join(f"FASTMCP_{k}" for k in FASTMCP_VARIABLES)
            raise SettingsError(
                f"{name} is set, but qdrant-xai-mcp does not support it (supported: {supported}, "
                f"also spelt FASTMCP_SERVER_*). Unset {name}"
            )
        field, read, _ = FASTMCP_VARIABLES[key]
        value = read(name, env.text(name) or "")
        if field in found and found[field][1] != value:
            raise SettingsError(
                f"{found[field][0]} and {name} are both set, to different values; keep one"
            )
        found[field] = (name, value)
    return {field: value for field, (_, value) in found.items()}


# -- layouts -------------------------------------------------------------------------------

CUSTOM_LAYOUT_VARIABLES = ("QDRANT_XAI_VECTOR", "QDRANT_XAI_IMAGE_KEY", "QDRANT_XAI_TEXT_KEY")


def layout_from_env(env: Environment) -> str | CollectionLayout:
    """``QDRANT_XAI_LAYOUT`` (``"auto"``: detect, the default; or a preset name), refined by
    ``QDRANT_XAI_VECTOR`` / ``QDRANT_XAI_IMAGE_KEY`` / ``QDRANT_XAI_TEXT_KEY`` into a custom
    layout when any is set (see :func:`~qdrant_xai.storage.layouts.custom_layout`: the given
    parts replace the preset's; over ``auto``, the collection's only vector and no keys but
    the given ones).

    Raises:
        SettingsError: an unknown preset, or a malformed key.
    """
    preset = env.text("QDRANT_XAI_LAYOUT") or AUTO
    if preset != AUTO and preset not in LAYOUTS:
        raise SettingsError(
            f"QDRANT_XAI_LAYOUT must be {AUTO!r} or one of {', '.join(LAYOUTS)}, got "
            f"{brief_repr(preset)}; for another layout set {', '.join(CUSTOM_LAYOUT_VARIABLES)}"
        )
    vector, image_key, text_key = (env.text(name) for name in CUSTOM_LAYOUT_VARIABLES)
    if vector is None and image_key is None and text_key is None:
        return preset
    try:
        return custom_layout(
            vector=vector,
            image_keys=(image_key,) if image_key else (),
            text_keys=(text_key,) if text_key else (),
            base=preset,
        )
    except ValueError as exc:
        raise SettingsError(f"QDRANT_XAI_IMAGE_KEY / QDRANT_XAI_TEXT_KEY: {exc}") from None
