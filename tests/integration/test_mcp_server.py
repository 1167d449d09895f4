"""The MCP server as a process sees it: settings from the environment, the command line,
API keys kept out of errors, an embedded folder opened from settings, and the real command
over stdio and streamable HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp.server.mcpserver", reason="needs the mcp extra (SDK 2.x)")

from mcp import Client, StdioServerParameters
from qdrant_client import QdrantClient
from qdrant_xai_mcp import ServerSettings, SettingsError, create_server
from qdrant_xai_mcp.server import main

from qdrant_xai import ClipEncoder, RetryPolicy
from tests.integration._mcp import READ_TOOLS, call, error_of, index, six_scenes, text_of

REPO = Path(__file__).resolve().parents[2]


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
        result = await call(server, "search_images", {"query": "a red circle"})
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
    assert not result.is_error, text_of(result)
    assert len((result.structured_content or {})["hits"]) == 2


# -- settings and command line ----------------------------------------------------------------


def test_settings_from_env(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    settings = ServerSettings.from_env({"QDRANT_URL": "http://localhost:6333"})
    assert settings == ServerSettings(url="http://localhost:6333")
    assert settings.read_only is True and settings.collection_name == "qdrant_xai"
    assert settings.image_roots == () and settings.model is None and settings.search_limit == 5

    settings = ServerSettings.from_env(
        {
            "QDRANT_URL": "https://user:pw@qdrant.example:6333",
            "QDRANT_API_KEY": "s3cret",
            "COLLECTION_NAME": "photos",
            "QDRANT_READ_ONLY": "False",
            "QDRANT_SEARCH_LIMIT": "12",
            "QDRANT_XAI_MODEL": "shapes",
            "QDRANT_XAI_IMAGE_ROOTS": os.pathsep.join([str(first), "", str(second)]),
            "QDRANT_LOCAL_PATH": "",  # empty counts as unset
        }
    )
    assert settings.collection_name == "photos" and settings.read_only is False
    assert settings.search_limit == 12 and settings.model == "shapes"
    assert settings.image_roots == (first.resolve(), second.resolve())
    assert settings.api_key == "s3cret"
    shown = repr(settings) + settings.describe()
    assert "s3cret" not in shown and "pw@" not in shown
    assert "qdrant.example:6333" in settings.describe()

    local = ServerSettings.from_env({"QDRANT_LOCAL_PATH": str(tmp_path), "QDRANT_READ_ONLY": "1"})
    assert local.local_path == str(tmp_path) and local.url is None and local.read_only

    for env, message in [
        ({}, "set QDRANT_URL"),
        ({"QDRANT_URL": "http://q:6333", "QDRANT_LOCAL_PATH": "x"}, "not both"),
        ({"QDRANT_LOCAL_PATH": "x", "QDRANT_API_KEY": "k"}, "without QDRANT_URL"),
        ({"QDRANT_URL": "http://q", "QDRANT_READ_ONLY": "maybe"}, "QDRANT_READ_ONLY"),
        ({"QDRANT_URL": "http://q", "QDRANT_SEARCH_LIMIT": "ten"}, "QDRANT_SEARCH_LIMIT"),
        ({"QDRANT_URL": "http://q", "QDRANT_SEARCH_LIMIT": "500"}, "between 1 and 50"),
        (
            {"QDRANT_URL": "http://q", "QDRANT_XAI_IMAGE_ROOTS": str(tmp_path / "absent")},
            "not a directory",
        ),
    ]:
        with pytest.raises(SettingsError, match=message):
            ServerSettings.from_env(env)


def test_help_exits_zero_and_lists_the_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for word in ("--transport", "streamable-http", "QDRANT_URL", "QDRANT_XAI_IMAGE_ROOTS"):
        assert word in out


def test_main_reports_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("QDRANT_LOCAL_PATH", raising=False)
    assert main([]) == 2
    assert "set QDRANT_URL" in capsys.readouterr().err


# -- transports (the real command, in a subprocess) ----------------------------------------


def server_env(path: Path, collection: str, model_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QDRANT")}
    return {
        **env,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "QDRANT_LOCAL_PATH": str(path),
        "COLLECTION_NAME": collection,
        "QDRANT_XAI_MODEL": str(model_dir),
    }


COMMAND = [sys.executable, "-c", "from qdrant_xai_mcp.server import main; raise SystemExit(main())"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
async def test_stdio_and_streamable_http_transports(
    tiny_encoder: ClipEncoder,
    tiny_model_dir: Path,
    scenes: tuple[Path, Path],
    collection_name: str,
    tmp_path: Path,
) -> None:
    """The real command on both transports (concurrently: each process takes seconds to
    import torch). An embedded folder admits one process, so each server gets a copy."""
    stdio_path, http_path = tmp_path / "stdio", tmp_path / "http"
    writer = QdrantClient(path=str(stdio_path))
    index(writer, tiny_encoder, collection_name, scenes)
    writer.close()
    shutil.copytree(stdio_path, http_path)

    port = free_port()
    http = subprocess.Popen(
        [*COMMAND, "--transport", "streamable-http", "--host", "127.0.0.1", "--port", str(port)],
        env=server_env(http_path, collection_name, tiny_model_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # stdio: the client starts the server; anything but protocol on stdout would break it
        params = StdioServerParameters(
            command=COMMAND[0],
            args=COMMAND[1:],
            env=server_env(stdio_path, collection_name, tiny_model_dir),
        )
        async with Client(params) as client:
            assert {t.name for t in (await client.list_tools()).tools} == READ_TOOLS
            result = await client.call_tool("search_images", {"query": "a red circle", "limit": 2})
        assert not result.is_error, text_of(result)
        assert len((result.structured_content or {})["hits"]) == 2

        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if http.poll() is not None or time.monotonic() > deadline:
                    err = http.stderr.read().decode() if http.stderr else ""
                    pytest.fail(f"the HTTP server did not start: {err[-2000:]}")
                await anyio.sleep(0.2)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            assert {t.name for t in (await client.list_tools()).tools} == READ_TOOLS
            result = await client.call_tool("search_images", {"query": "a red circle"})
        assert not result.is_error, text_of(result)
        assert len((result.structured_content or {})["hits"]) == 5
    finally:
        http.terminate()
        http.wait(timeout=30)
        if http.stderr:
            http.stderr.close()
