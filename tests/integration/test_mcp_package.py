"""The MCP package front: its public names, pinned, and the extra it names when the MCP SDK
is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("mcp", reason="needs the mcp extra")

import qdrant_xai_mcp

PUBLIC = [
    "QdrantXaiMCPServer",
    "SdkSettings",
    "ServerSettings",
    "SettingsError",
    "XaiBackend",
    "create_server",
    "main",
]


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert sorted(qdrant_xai_mcp.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(qdrant_xai_mcp, name) is not None, name


@pytest.mark.slow
def test_without_the_mcp_sdk_the_import_names_the_extra() -> None:
    code = "import sys\nsys.modules['mcp'] = None\nimport qdrant_xai_mcp\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "qdrant-xai[mcp]" in result.stderr and "1.10 or later" in result.stderr
