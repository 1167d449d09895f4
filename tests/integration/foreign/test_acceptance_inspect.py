"""Issue 13: ``qdrant-xai inspect COLLECTION`` names the tool that wrote the collection and
shows its vectors, without writing anything."""

from __future__ import annotations

import json
from collections.abc import Callable

from qdrant_xai import ClipEncoder
from qdrant_xai.images.policy import ImageSourcePolicy
from tests.integration.foreign._backends import CliRun, Qdrant
from tests.integration.foreign.writers import Written, collection_names, snapshot

#: how the inspect output may name each writer
WRITER_NAMES = {
    "langchain": ("langchain",),
    "llamaindex": ("llamaindex",),
    "fastembed": ("fastembed", "mcp-server-qdrant"),
}


def test_inspect_names_the_writer_and_touches_nothing(
    written: Written, qdrant: Qdrant, cli: Callable[..., CliRun], tiny_encoder: ClipEncoder
) -> None:
    with qdrant.open() as client:
        before, names = snapshot(client, written.collection_name), collection_names(client)

    run = cli("inspect", written.collection_name, "--image-root", str(written.scenes.root))
    assert run.code == 0, run.err
    text = run.out.lower()
    assert any(name in text for name in WRITER_NAMES[written.library]), run.out
    assert "cosine" in text and str(tiny_encoder.dim) in text and written.using in text, run.out

    from qdrant_xai.storage.detect import inspect_collection

    with qdrant.open() as client:
        report = inspect_collection(
            client,
            written.collection_name,
            encoder=tiny_encoder,
            sources=ImageSourcePolicy.from_roots([written.scenes.root]),
        )
    with qdrant.open() as client:  # a fresh session: queries normalise vectors in memory
        assert snapshot(client, written.collection_name) == before
        assert collection_names(client) == names  # no sidecar made by looking
    as_dict = report.to_dict()
    json.dumps(as_dict)
    assert any(name in str(report).lower() for name in WRITER_NAMES[written.library])
    assert any(name in json.dumps(as_dict).lower() for name in WRITER_NAMES[written.library])
