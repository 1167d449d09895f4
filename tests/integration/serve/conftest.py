"""A shapes collection with hostile names and captions, what the CLI says of it, and
``qdrant-xai serve``'s service and live server over it.

The world is indexed into an embedded Qdrant folder; the CLI's ``search --json`` output is
captured before the service opens the folder (one client per folder).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra (pip install 'qdrant-xai[serve]')")

from qdrant_xai.cli import main as cli_main
from qdrant_xai.connection import open_client
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.serve import ExplainService, create_app
from qdrant_xai.storage.indexer import ImageRecord, Indexer

COLLECTION = "shapes"
#: a file name and a caption that would run script if they were ever parsed as HTML
HOSTILE_NAME = '"><img src=x onerror="window.__pwned=1">.png'
HOSTILE_CAPTION = "<script>window.__pwned=2</script> a red circle <b>bold</b>"
#: the text queries whose CLI output the tests compare with the API's
QUERIES = ("a red circle", "a blue square")


@dataclass
class ServeWorld:
    folder: Path  # the embedded Qdrant folder
    images: Path
    cli_json: dict[str, list[dict[str, Any]]]  # query -> search --explain --json lines


@pytest.fixture(scope="package")
def serve_world(
    tmp_path_factory: pytest.TempPathFactory, shapes_encoder: ClipEncoder
) -> ServeWorld:
    root = tmp_path_factory.mktemp("serve")
    images = root / "images"
    write_scene_folder(images, 12, seed=3)
    shutil.move(images / "scene_0001.png", images / HOSTILE_NAME)
    captions = {
        row.split(",", 1)[0]: row.split(",", 1)[1]
        for row in (images / "captions.csv").read_text().splitlines()[1:]
    }
    records = [
        ImageRecord(str(images / name), (captions[name],))
        for name in sorted(captions)
        if name != "scene_0001.png"
    ]
    records.append(ImageRecord(str(images / HOSTILE_NAME), (HOSTILE_CAPTION,)))
    folder = root / "qdrant"
    client = open_client(path=str(folder))
    try:
        indexer = Indexer(client, shapes_encoder, collection_name=COLLECTION)
        summary = indexer.index(records, progress=False)
        assert not summary.failed
    finally:
        client.close()
    outputs = {}
    for query in QUERIES:
        argv = ["search", query, "--path", str(folder), "--collection", COLLECTION]
        outputs[query] = _json_lines([*argv, "--explain", "--json", "--limit", "5"])
    return ServeWorld(folder, images, outputs)


def _json_lines(argv: list[str]) -> list[dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(argv) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture(scope="package")
def service(serve_world: ServeWorld, shapes_encoder: ClipEncoder) -> Iterator[ExplainService]:
    client = open_client(path=str(serve_world.folder))
    yield ExplainService(
        client, shapes_encoder, collection_name=COLLECTION, image_roots=[serve_world.images]
    )
    client.close()


@pytest.fixture(scope="package")
def live_url(service: ExplainService) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, in a thread."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
