"""Fixtures of the acceptance tests: a Qdrant both the test and the CLI can open (see
:mod:`._backends`), the scenes, a collection written by each library, and the CLI."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qdrant_xai import ClipEncoder
from qdrant_xai.cli import main
from qdrant_xai.testing import build_tiny_clip
from tests.integration.foreign._backends import BACKENDS, CliRun, Qdrant
from tests.integration.foreign.writers import WRITERS, Scenes, Written


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP of ``tests/conftest.py`` with a 256-token text context instead of 32.

    Its tokenizer spells words outside the shapes world out byte by byte, so the file path
    LlamaIndex puts before each text it embeds (``file_path: /tmp/pytest-of-.../caption_3
    .txt``) is about 100 tokens: with 32, the caption itself would be cut off and every
    node's vector would be that of its path alone (real CLIP's 77 BPE tokens hold both).
    """
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip-256"), max_position_embeddings=256)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path) -> ClipEncoder:
    return ClipEncoder.from_pretrained(tiny_model_dir)


@pytest.fixture(params=BACKENDS)
def qdrant(request: pytest.FixtureRequest, tmp_path: Path) -> Qdrant:
    if request.param == "local":
        return Qdrant(path=tmp_path / "qdrant")
    return Qdrant(url=os.environ["QDRANT_URL"])


@pytest.fixture
def scenes() -> Iterator[Scenes]:
    """Six scenes of the shapes world under a fresh folder (tests delete files from it).

    The folder has a short path (``/tmp/xai-XXXXXXXX``), not pytest's ``tmp_path``: the path
    is part of the text LlamaIndex embeds, and behind pytest's 90-character paths the tiny
    CLIP's text vectors hardly depend on the text that follows (a text edited without
    re-embedding would still agree at cosine 0.98).
    """
    root = Path(tempfile.mkdtemp(prefix="xai-"))
    yield Scenes.write(root)
    shutil.rmtree(root, ignore_errors=True)


def _write(
    writer: str, qdrant: Qdrant, collection_name: str, encoder: ClipEncoder, scenes: Scenes
) -> Iterator[Written]:
    with qdrant.open() as client:
        written = WRITERS[writer](client, collection_name, encoder, scenes)
    yield written
    if qdrant.url is not None:  # a shared server: leave nothing behind
        with qdrant.open() as client:
            for name in (collection_name, f"{collection_name}__xai"):
                client.delete_collection(name)


@pytest.fixture(params=list(WRITERS))
def written(
    request: pytest.FixtureRequest,
    qdrant: Qdrant,
    collection_name: str,
    tiny_encoder: ClipEncoder,
    scenes: Scenes,
) -> Iterator[Written]:
    """A collection written by each library (``writers.WRITERS``); a test narrows the
    writers with ``@pytest.mark.parametrize("written", [...], indirect=True)``."""
    yield from _write(request.param, qdrant, collection_name, tiny_encoder, scenes)


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], qdrant: Qdrant, tiny_model_dir: Path
) -> Callable[..., CliRun]:
    """``cli(*args)``: runs ``qdrant-xai`` in-process on the test's Qdrant with the tiny
    CLIP (``--model``), returning exit code, stdout and stderr."""

    def run(*args: str) -> CliRun:
        capsys.readouterr()
        code = main([*args, *qdrant.cli_args(), "--model", str(tiny_model_dir)])
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run
