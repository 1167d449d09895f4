"""The LangChain agent tools (create_tools) on real Qdrant: content for the model, explained
Documents as the artifact, errors as tool messages, async."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import ToolMessage
from langchain_qdrant_xai import create_tools, describe_documents
from langchain_qdrant_xai.documents import xai_value
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder
from tests.integration._langchain import (  # noqa: F401 (fixtures indexed, scene_dir)
    QUERY,
    close_documents,
    data_uri,
    indexed_fixture,
    make_retriever,
    scene_dir_fixture,
    stored_metadata,
    write_langchain_collection,
)


def _call(tool: Any, args: dict[str, Any], call_id: str = "call_1") -> ToolMessage:
    message = tool.invoke({"name": tool.name, "args": args, "id": call_id, "type": "tool_call"})
    assert isinstance(message, ToolMessage) and message.tool_call_id == call_id
    return message


def test_tools_answer_with_content_and_artifact(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    retriever = make_retriever(indexed, shapes_encoder, collection_name, k=3)
    tools = {t.name: t for t in create_tools(retriever, max_k=4)}
    assert set(tools) == {"search_images_by_text", "search_texts_by_image", "explain_hit"}
    assert all(t.response_format == "content_and_artifact" for t in tools.values())

    message = _call(tools["search_images_by_text"], {"query": QUERY})
    docs = message.artifact
    assert close_documents(docs, retriever.invoke(QUERY))
    assert message.content == describe_documents(docs)
    first = str(message.content).splitlines()[0]
    assert first.startswith(f"1. {Path(docs[0].metadata['source']).name} (")
    assert f"score {docs[0].metadata['score']:.3f}" in first and "of 8x8" in first
    assert len(_call(tools["search_images_by_text"], {"query": QUERY, "k": 50}).artifact) == 4
    invalid = _call(tools["search_images_by_text"], {"query": QUERY, "k": 0})
    assert invalid.status == "error" and invalid.artifact is None

    scene = scene_dir / "scene_0005.png"
    texts = _call(tools["search_texts_by_image"], {"image": data_uri(scene), "k": 2})
    assert [d.metadata["kind"] for d in texts.artifact] == ["text", "text"]
    assert str(texts.content).startswith('1. "')
    refused = _call(tools["search_texts_by_image"], {"image": str(scene)})
    assert refused.status == "error" and refused.artifact is None
    assert "data URI" in str(refused.content)

    hit = docs[1]
    explained = _call(tools["explain_hit"], {"point_id": hit.metadata["_id"], "query": QUERY})
    (doc,) = explained.artifact
    assert doc.metadata["score"] == pytest.approx(hit.metadata["score"], abs=1e-5)
    assert np.allclose(
        doc.metadata["explanation"]["heatmap"], hit.metadata["explanation"]["heatmap"], atol=1e-5
    )
    assert str(explained.content).startswith("1. ")

    by_image = _call(
        tools["explain_hit"], {"point_id": hit.metadata["_id"], "image": data_uri(scene)}
    )
    (image_doc,) = by_image.artifact
    expected = float(
        shapes_encoder.embed_images([scene])[0]
        @ shapes_encoder.embed_images([hit.metadata["source"]])[0]
    )
    assert image_doc.metadata["score"] == pytest.approx(expected, abs=1e-4)
    assert image_doc.metadata["explanation"]["heatmap_side"] == "hit"

    for bad in (
        {"point_id": hit.metadata["_id"]},
        {"point_id": "not-an-id", "query": QUERY},
        {"point_id": "00000000-0000-0000-0000-000000000000", "query": QUERY},
    ):
        error = _call(tools["explain_hit"], bad)
        assert error.status == "error" and error.artifact is None


async def test_tools_run_async(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder
) -> None:
    tools = {
        t.name: t
        for t in create_tools(
            client=indexed, encoder=shapes_encoder, collection_name=collection_name, k=2
        )
    }
    tool = tools["search_images_by_text"]
    message = await tool.ainvoke(
        {"name": tool.name, "args": {"query": QUERY}, "id": "call_9", "type": "tool_call"}
    )
    assert isinstance(message, ToolMessage) and len(message.artifact) == 2
    point = message.artifact[0].metadata["_id"]
    explain = tools["explain_hit"]
    explained = await explain.ainvoke(
        {
            "name": explain.name,
            "args": {"point_id": point, "query": QUERY},
            "id": "c",
            "type": "tool_call",
        }
    )
    assert explained.artifact[0].metadata["_id"] == point


def test_tools_on_a_collection_langchain_qdrant_wrote(
    client: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    store = write_langchain_collection(client, collection_name, shapes_encoder, scene_dir)
    n = client.count(collection_name).count
    tools = {
        t.name: t
        for t in create_tools(
            client=client, encoder=shapes_encoder, collection_name=collection_name, k=n
        )
    }  # no layout given, no image_roots: the image paths cannot be read
    message = _call(tools["search_images_by_text"], {"query": QUERY})
    docs = message.artifact
    theirs = store.as_retriever(search_kwargs={"k": n}).invoke(QUERY)
    assert [d.metadata["_id"] for d in docs] == [d.metadata["_id"] for d in theirs]
    assert [stored_metadata(d) for d in docs] == [d.metadata for d in theirs]
    lines = str(message.content).splitlines()
    assert len(lines) == n and all(len(line) < 600 for line in lines)
    statuses = [xai_value(d.metadata, "explanation")["status"] for d in docs]
    assert statuses.count("failed") == 4  # the four images named by path
    for line, status in zip(lines, statuses, strict=True):
        assert ("not explained (FeaturesMissingError" in line) == (status == "failed")

    row = next(d for d in docs if str(d.metadata.get("source")).endswith("captions.csv"))
    explained = _call(tools["explain_hit"], {"point_id": row.metadata["_id"], "query": QUERY})
    (doc,) = explained.artifact
    assert doc.page_content == row.page_content and stored_metadata(doc) == {**stored_metadata(row)}
    why = doc.metadata["explanation"]
    assert doc.metadata["kind"] == "text" and why["status"] == "ok"
    assert why["text"] == row.page_content and why["words_side"] == "hit"
    assert doc.metadata["score"] == pytest.approx(row.metadata["score"], abs=1e-5)
