"""The MCP server's settings: every environment variable it reads, accepted or refused with a
message, including those of an mcp-server-qdrant configuration carried over; the command
line's help and configuration errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="needs the mcp extra")

from qdrant_xai_mcp import ServerSettings, SettingsError
from qdrant_xai_mcp.server import main
from qdrant_xai_mcp.settings import ENV_VARS, SdkSettings

from qdrant_xai.storage.layouts import CollectionLayout

URL = {"QDRANT_URL": "http://localhost:6333"}


def test_defaults_follow_mcp_server_qdrant() -> None:
    settings = ServerSettings.from_env(URL)
    assert settings == ServerSettings(url="http://localhost:6333")
    assert settings.collection_name is None  # each call names its collection
    assert settings.search_limit == 10 and settings.read_only is True
    assert settings.layout == "auto" and settings.model is None and settings.image_roots == ()
    assert settings.allow_arbitrary_filter is False
    assert settings.sdk == SdkSettings() and settings.sdk.log_level == "WARNING"
    assert "the collection each call names" in settings.describe()


def test_settings_from_env(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    settings = ServerSettings.from_env(
        {
            "QDRANT_URL": "https://user:pw@qdrant.example:6333",
            "QDRANT_API_KEY": "s3cret",
            "COLLECTION_NAME": "photos",
            "QDRANT_READ_ONLY": "False",
            "QDRANT_SEARCH_LIMIT": "12",
            "QDRANT_ALLOW_ARBITRARY_FILTER": "yes",
            "QDRANT_XAI_MODEL": "shapes",
            "QDRANT_XAI_IMAGE_ROOTS": os.pathsep.join([str(first), "", str(second)]),
            "QDRANT_XAI_LAYOUT": "langchain",
            "QDRANT_XAI_DEVICE": "cpu",
            "QDRANT_LOCAL_PATH": "",  # empty counts as unset
        }
    )
    assert settings.collection_name == "photos" and settings.read_only is False
    assert settings.search_limit == 12 and settings.model == "shapes"
    assert settings.allow_arbitrary_filter is True and settings.layout == "langchain"
    assert settings.image_roots == (first.resolve(), second.resolve())
    assert settings.api_key == "s3cret"
    shown = repr(settings) + settings.describe()
    assert "s3cret" not in shown and "pw@" not in shown
    assert "qdrant.example:6333" in settings.describe()

    local = ServerSettings.from_env({"QDRANT_LOCAL_PATH": str(tmp_path), "QDRANT_READ_ONLY": "1"})
    assert local.local_path == str(tmp_path) and local.url is None and local.read_only


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set QDRANT_URL"),
        ({"QDRANT_URL": "http://q:6333", "QDRANT_LOCAL_PATH": "x"}, "not both"),
        ({"QDRANT_LOCAL_PATH": "x", "QDRANT_API_KEY": "k"}, "without QDRANT_URL"),
        ({**URL, "QDRANT_READ_ONLY": "maybe"}, "QDRANT_READ_ONLY must be true or false"),
        ({**URL, "QDRANT_ALLOW_ARBITRARY_FILTER": "2"}, "QDRANT_ALLOW_ARBITRARY_FILTER must"),
        ({**URL, "QDRANT_SEARCH_LIMIT": "ten"}, "QDRANT_SEARCH_LIMIT must be a whole number"),
        ({**URL, "QDRANT_SEARCH_LIMIT": "500"}, "between 1 and 50"),
        ({**URL, "QDRANT_XAI_LAYOUT": "chroma"}, "QDRANT_XAI_LAYOUT must be 'auto' or one of"),
        ({**URL, "QDRANT_XAI_IMAGE_KEY": ".bad."}, "QDRANT_XAI_IMAGE_KEY"),
    ],
)
def test_malformed_values_are_refused_with_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        ServerSettings.from_env(env)


def test_image_roots_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not a directory"):
        ServerSettings.from_env({**URL, "QDRANT_XAI_IMAGE_ROOTS": str(tmp_path / "absent")})


def test_custom_layouts_from_the_environment() -> None:
    custom = ServerSettings.from_env(
        {**URL, "QDRANT_XAI_VECTOR": "clip", "QDRANT_XAI_IMAGE_KEY": "meta.img"}
    ).layout
    assert isinstance(custom, CollectionLayout) and custom.name == "custom"
    assert (custom.image_vector, custom.text_vector) == ("clip", "clip")
    assert custom.image_keys == ("meta.img",) and custom.text_keys == ()

    # over a preset, the given parts replace the preset's
    refined = ServerSettings.from_env(
        {**URL, "QDRANT_XAI_LAYOUT": "langchain", "QDRANT_XAI_TEXT_KEY": "body"}
    ).layout
    assert isinstance(refined, CollectionLayout) and refined.text_keys == ("body",)
    assert refined.image_vector == "" and "langchain" in refined.name
    assert "custom" in ServerSettings.from_env({**URL, "QDRANT_XAI_TEXT_KEY": "t"}).describe()


# -- mcp-server-qdrant's variables ----------------------------------------------------------


def test_embedding_model_names_fastembeds_clip_or_is_refused() -> None:
    for name in ("Qdrant/clip-ViT-B-32-text", "qdrant/clip-vit-b-32-text"):
        settings = ServerSettings.from_env({**URL, "EMBEDDING_MODEL": name})
        assert settings.model == "openai/clip-vit-base-patch32"
    fastembed = {**URL, "EMBEDDING_PROVIDER": "fastembed"}
    assert ServerSettings.from_env(fastembed).model is None
    same = {"EMBEDDING_MODEL": "Qdrant/clip-ViT-B-32-text"}
    both = {**URL, **same, "QDRANT_XAI_MODEL": "openai/clip-vit-base-patch32"}
    assert ServerSettings.from_env(both).model == "openai/clip-vit-base-patch32"

    for env, message in [
        ({"EMBEDDING_MODEL": "sentence-transformers/all-MiniLM-L6-v2"}, "not a CLIP model"),
        ({"EMBEDDING_MODEL": "jinaai/jina-clip-v1"}, "set QDRANT_XAI_MODEL"),
        ({"EMBEDDING_PROVIDER": "openai"}, "EMBEDDING_PROVIDER='openai' is not supported"),
        ({**same, "QDRANT_XAI_MODEL": "shapes"}, "unset EMBEDDING_MODEL"),
    ]:
        with pytest.raises(SettingsError, match=message):
            ServerSettings.from_env({**URL, **env})


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("TOOL_STORE_DESCRIPTION", "qdrant-store tool, which qdrant-xai-mcp does not have"),
        ("TOOL_FIND_DESCRIPTION", "qdrant-find tool"),
        ("FILTERABLE_FIELDS", "QDRANT_ALLOW_ARBITRARY_FILTER=true"),
        ("FASTMCP_STATELESS_HTTP", "FASTMCP_STATELESS_HTTP is set, but qdrant-xai-mcp does not"),
        ("FASTMCP_SERVER_AUTH", "Unset FASTMCP_SERVER_AUTH"),
    ],
)
def test_unsupported_variables_are_refused_never_ignored(name: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        ServerSettings.from_env({**URL, name: "anything"})
    assert ServerSettings.from_env({**URL, name: ""}).url  # empty: unset, accepted


def test_fastmcp_variables_reach_the_sdk() -> None:
    sdk = ServerSettings.from_env(
        {
            **URL,
            "FASTMCP_HOST": "0.0.0.0",
            "FASTMCP_SERVER_PORT": "9123",  # fastmcp 2's spelling, as mcp-server-qdrant 0.8
            "FASTMCP_LOG_LEVEL": "debug",
            "FASTMCP_DEBUG": "true",
            "FASTMCP_SSE_PATH": "/events",
            "FASTMCP_MESSAGE_PATH": "/post/",
            "FASTMCP_STREAMABLE_HTTP_PATH": "/rpc",
            "FASTMCP_WARN_ON_DUPLICATE_TOOLS": "false",
            "FASTMCP_WARN_ON_DUPLICATE_RESOURCES": "0",
            "FASTMCP_WARN_ON_DUPLICATE_PROMPTS": "no",
            "FASTMCP_DEPENDENCIES": '["pandas"]',
        }
    ).sdk
    assert sdk == SdkSettings(
        host="0.0.0.0",
        port=9123,
        log_level="DEBUG",
        debug=True,
        sse_path="/events",
        message_path="/post/",
        streamable_http_path="/rpc",
        warn_on_duplicate_resources=False,
        warn_on_duplicate_tools=False,
        warn_on_duplicate_prompts=False,
        dependencies=("pandas",),
    )
    for env, message in [
        ({"FASTMCP_PORT": "http"}, "FASTMCP_PORT must be a TCP port"),
        ({"FASTMCP_LOG_LEVEL": "LOUD"}, "FASTMCP_LOG_LEVEL must be one of"),
        ({"FASTMCP_SSE_PATH": "sse"}, "starting with '/'"),
        ({"FASTMCP_DEPENDENCIES": "pandas"}, "JSON list of strings"),
        ({"FASTMCP_HOST": "a", "FASTMCP_SERVER_HOST": "b"}, "both set, to different values"),
    ]:
        with pytest.raises(SettingsError, match=message):
            ServerSettings.from_env({**URL, **env})


def test_every_variable_read_is_listed() -> None:
    source = "".join(
        (Path(__file__).parents[2] / "integrations" / "qdrant_xai_mcp" / name).read_text()
        for name in ("settings.py", "environment.py")
    )
    read = {
        word.strip("\"'")
        for word in source.replace("(", " ").replace(")", " ").replace(",", " ").split()
        if word.startswith(('"QDRANT_', '"COLLECTION_NAME"', '"EMBEDDING_')) and word.endswith('"')
    }
    assert read and read <= set(ENV_VARS), read - set(ENV_VARS)


# -- command line -------------------------------------------------------------------------


def test_help_exits_zero_and_lists_the_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for word in ("--transport", "sse", "streamable-http", "--host", *ENV_VARS):
        assert word in out, word


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set QDRANT_URL"),
        ({**URL, "EMBEDDING_MODEL": "BAAI/bge-small-en"}, "set QDRANT_XAI_MODEL"),
        ({**URL, "TOOL_FIND_DESCRIPTION": "Search code"}, "Unset TOOL_FIND_DESCRIPTION"),
    ],
)
def test_main_reports_configuration_errors(
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in list(os.environ):
        if name.startswith(("QDRANT_", "COLLECTION_", "EMBEDDING_", "FASTMCP_", "TOOL_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and message in err
