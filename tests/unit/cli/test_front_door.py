"""``qdrant-xai --help``, every subcommand's ``--help`` and argument errors answer without
importing torch or transformers (``python -X importtime`` lists every module imported)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qdrant_xai.cli import COMMANDS

HEAVY = ("torch", "transformers")


def _imported(stderr: str) -> set[str]:
    """The modules an ``-X importtime`` run imported, from its stderr."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qdrant_xai", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--help"], id="--help"),
        *(
            pytest.param([command, "--help"], id=f"{command} --help", marks=pytest.mark.slow)
            for command in COMMANDS
        ),
    ],
)
def test_help_imports_no_torch_or_transformers(argv: list[str]) -> None:
    result = _run(argv)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: qdrant-xai")
    modules = _imported(result.stderr)
    assert "qdrant_xai.cli" in modules  # the parser was built in this process
    assert _heavy(modules) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "a dog", "--heatmap-method", "nope"], "invalid choice: 'nope'"),
        ([], "the following arguments are required: COMMAND"),
    ],
    ids=["bad choice", "no command"],
)
def test_argument_errors_import_no_torch_or_transformers(argv: list[str], message: str) -> None:
    result = _run(argv)
    assert result.returncode == 2
    assert message in result.stderr
    assert _heavy(_imported(result.stderr)) == []
