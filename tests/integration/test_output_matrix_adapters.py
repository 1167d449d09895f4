"""The output matrix through the Python API and the adapters (issue 14): ``Explainer.explain``
(``to_dict`` as JSON), the LangChain retriever (real ``Document``s, and ``documents_html``),
the LangChain tools (tool calls as an agent makes them), the LlamaIndex postprocessor (real
``NodeWithScore``s) and the MCP server (the MCP SDK's client session), for every (query
kind, hit kind) pair on a qdrant-xai collection and on collections langchain-qdrant wrote;
hits, order and scores checked against the plain Qdrant search (see :mod:`._matrix`).

Where an adapter offers no search for a pair (the retriever, the tools and the MCP server
search texts by image and images by text; MCP has no text-to-text search), each hit of the
plain search is explained through the adapter's explain entry point instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_qdrant", reason="writes collections with langchain-qdrant")
pytest.importorskip("llama_index.core", reason="needs the llamaindex extra")
pytest.importorskip("mcp", reason="needs the mcp extra")

from langchain_core.documents import Document
from langchain_core.messages import ToolMessage
from langchain_qdrant_xai import QdrantXaiRetriever, create_tools
from langchain_qdrant_xai.formatting import documents_html
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode
from llama_index_qdrant_xai import QdrantXaiNodePostprocessor
from mcp.types import ImageContent
from qdrant_client import QdrantClient
from qdrant_xai_mcp import ServerSettings, create_server

from qdrant_xai import ClipEncoder, Explainer
from qdrant_xai.images.policy import ImageSourcePolicy
from tests.integration._matrix import (
    LIMIT,
    TEXT_QUERY,
    UNROOTED,
    Case,
    Page,
    World,
    assert_record,
    assert_same_hits,
    build_world,
    cases,
    markup_shown,
    plain_hits,
)
from tests.integration._mcp import connect, dump, hits_of, is_error, text_of
from tests.integration.foreign._base import point_key

Plain = list[tuple[str, float]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: ClipEncoder) -> World:
    return build_world(tmp_path_factory.mktemp("matrix-adapters"), tiny_encoder)


@pytest.fixture(scope="module")
def qdrant(world: World) -> Iterator[QdrantClient]:
    with world.open() as client:
        yield client


@pytest.fixture
def plain(case: Case, world: World, qdrant: QdrantClient, tiny_encoder: ClipEncoder) -> Plain:
    return plain_hits(qdrant, tiny_encoder, world, case)


def searched(case: Case) -> bool:
    """Whether the adapters search this pair: texts by image, images by text, and on a
    collection with one vector for both kinds (LangChain's) any pair."""
    return case.query_kind != case.hit_kind or case.collection == "langchain"


# -- Python ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("text", "path", "base64"))
def test_explainer_to_dict(
    case: Case, world: World, qdrant: QdrantClient, tiny_encoder: ClipEncoder, plain: Plain
) -> None:
    """``Explainer.explain`` on the plain search's hits (image queries as a ``Path`` and as
    the file's bytes): every hit explained, its dict JSON-serialisable."""
    query = world.query_input(case)
    hits = qdrant.query_points(
        case.collection_name(),
        query=(
            tiny_encoder.embed_texts([query])
            if isinstance(query, str)
            else tiny_encoder.embed_images([query])
        )[0].tolist(),
        using=case.using(),
        limit=LIMIT,
    ).points
    explainer = Explainer(
        tiny_encoder,
        qdrant,
        collection_name=case.collection_name(),
        sources=ImageSourcePolicy.from_roots([world.root]),
        write_sidecar=False,
    )
    explanations = explainer.explain(query, hits, hit_kind=case.hit_kind)
    records = [json.loads(json.dumps(e.to_dict(), allow_nan=False)) for e in explanations]
    assert_same_hits([(r["id"], r["score"]) for r in records], plain)
    for rank, record in enumerate(records):
        assert record["rank"] == rank and record["hit_kind"] == case.hit_kind
        assert_record(record, case)


# -- LangChain ------------------------------------------------------------------------------


def retriever(
    case: Case, world: World, qdrant: QdrantClient, encoder: ClipEncoder, **options: Any
) -> Any:
    return QdrantXaiRetriever(
        client=qdrant,
        encoder=encoder,
        collection_name=case.collection_name(),
        hit_kind="image" if case.query_kind == "text" else "text",
        k=LIMIT,
        image_roots=[world.root],
        write_sidecar=False,
        **options,
    )


def assert_documents(docs: list[Document], case: Case, plain: Plain) -> None:
    """Real Documents, in the plain search's order with its scores, each with the
    documented metadata and an explanation of the case's pair."""
    assert all(type(d) is Document for d in docs)
    assert_same_hits([(d.metadata["_id"], d.metadata["score"]) for d in docs], plain)
    for rank, doc in enumerate(docs):
        meta = doc.metadata
        assert meta["_collection_name"] == case.collection_name()
        assert meta["rank"] == rank and meta["kind"] == case.hit_kind
        why = meta["explanation"]
        assert_record(why, case)
        assert why["grid"] == (list(np.shape(why["heatmap"])) if case.heatmap else None)
        assert (why["peak"] is not None) == case.heatmap
        assert len(why["top_words"]) == min(3, len(why["words"]))


@pytest.mark.parametrize("case", cases("text", "path", "base64"))
def test_langchain_retriever(
    case: Case, world: World, qdrant: QdrantClient, tiny_encoder: ClipEncoder, plain: Plain
) -> None:
    """Documents with the overlay and the hit image as data URIs, and their HTML page."""
    search = retriever(case, world, qdrant, tiny_encoder, include_overlay=True, include_image=True)
    query = world.query(case)
    if searched(case):
        docs = search.invoke(query)
    else:
        docs = search.explain_points([i for i, _ in plain], query, query_kind=case.query_kind)
    assert_documents(docs, case, plain)
    for doc in docs:
        assert "image_error" not in doc.metadata, doc.metadata["image_error"]
        overlay = doc.metadata["explanation"].get("overlay")
        assert (overlay is not None) == case.heatmap
        assert overlay is None or overlay.startswith("data:image/png;base64,")
        image = doc.metadata.get("image")
        assert (image is not None) == (case.hit_kind == "image")
    page = Page(documents_html({query[:40]: docs}))
    assert page.hits == len(docs)
    assert page.alts.count("heatmap") == (len(docs) if case.heatmap else 0)
    assert page.alts.count("hit") == (len(docs) if case.hit_kind == "image" else 0)
    page.assert_escaped()
    markup = markup_shown(case)
    assert markup is None or page.shows(markup)


def tool_call(tool: Any, args: dict[str, Any]) -> ToolMessage:
    """A tool called as an agent calls it: a ``ToolCall``, answered with a ``ToolMessage``
    whose artifact is the Documents."""
    message = tool.invoke({"name": tool.name, "args": args, "id": "call_1", "type": "tool_call"})
    assert isinstance(message, ToolMessage)
    assert message.status == "success", message.content
    return message


def assert_lines(content: str, case: Case, docs: list[Document]) -> None:
    """One line per hit, in order, each saying why: the words and the peak of the pair."""
    lines = content.splitlines()
    assert len(lines) == len(docs)
    for line, doc in zip(lines, docs, strict=True):
        assert line.endswith(f"; id {doc.metadata['_id']}") and "not explained" not in line
        why = line.split(" score ", 1)[1]
        assert ("peak" in why) == case.heatmap
        assert ("word" in why) == case.words


@pytest.mark.parametrize("case", cases("text", "path", "base64"))
def test_langchain_tools(
    case: Case, world: World, qdrant: QdrantClient, tiny_encoder: ClipEncoder, plain: Plain
) -> None:
    tools = {t.name: t for t in create_tools(retriever(case, world, qdrant, tiny_encoder))}
    query = world.query(case)
    ask = {"query": query} if case.query_kind == "text" else {"image": query}
    if searched(case):
        name = "search_images_by_text" if case.query_kind == "text" else "search_texts_by_image"
        arg = "query" if case.query_kind == "text" else "image"
        message = tool_call(tools[name], {arg: query, "k": LIMIT})
        docs = message.artifact
        assert_documents(docs, case, plain)
        assert_lines(str(message.content), case, docs)
        explained = plain[:1]
    else:  # the best and the worst hit, explained one by one
        explained = [plain[0], plain[-1]]
    for point, score in explained:
        message = tool_call(tools["explain_hit"], {"point_id": point, **ask})
        (doc,) = message.artifact
        assert_same_hits([(doc.metadata["_id"], doc.metadata["score"])], [(point, score)])
        assert doc.metadata["kind"] == case.hit_kind
        assert_record(doc.metadata["explanation"], case)
        assert_lines(str(message.content), case, [doc])


# -- LlamaIndex -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("text", "path"))
def test_llama_index_postprocessor(
    case: Case, world: World, qdrant: QdrantClient, tiny_encoder: ClipEncoder, plain: Plain
) -> None:
    """Nodes of the plain search's hits (their ids the point ids, as LlamaIndex's store
    makes them) come back in order with their scores and an explanation hidden from the
    LLM; an image query is the bundle's ``image_path`` (it takes no base64)."""
    node_type = ImageNode if case.hit_kind == "image" else TextNode
    nodes = [NodeWithScore(node=node_type(id_=i), score=s) for i, s in plain]
    postprocessor = QdrantXaiNodePostprocessor(
        client=qdrant,
        encoder=tiny_encoder,
        collection_name=case.collection_name(),
        image_roots=[world.root],
        write_sidecar=False,
    )
    if case.query_kind == "text":
        bundle = QueryBundle(query_str=world.query(case))
    else:
        bundle = QueryBundle(query_str="", image_path=world.query(case))
    out = postprocessor.postprocess_nodes(nodes, query_bundle=bundle)
    assert all(type(n) is NodeWithScore and type(n.node) is node_type for n in out)
    assert_same_hits([(n.node.node_id, n.score) for n in out], plain)
    for hit in out:
        why = hit.node.metadata["explanation"]
        assert why["kind"] == case.hit_kind
        assert_record(why, case)
        assert "explanation" in hit.node.excluded_llm_metadata_keys
        json.dumps(why, allow_nan=False)


# -- MCP --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(world: World, qdrant: QdrantClient, tiny_encoder: ClipEncoder) -> Any:
    return create_server(
        ServerSettings(image_roots=(world.root,)), client=qdrant, encoder=tiny_encoder
    )


def mcp_query(case: Case, world: World, prefix: str) -> dict[str, str]:
    """The query arguments of an MCP tool: ``query`` / ``query_text`` for a text, else
    ``<prefix>path`` or ``<prefix>base64``."""
    if case.query_kind == "text":
        return {"query" if not prefix else "query_text": world.query(case)}
    return {f"{prefix}{case.form}": world.query(case)}


@pytest.mark.parametrize("case", cases("text", "path", "base64"))
async def test_mcp_tools(case: Case, world: World, server: Any, plain: Plain) -> None:
    name = case.collection_name()
    async with connect(server) as client:
        explained = [plain[0], plain[-1]]  # the best and the worst hit
        if case.query_kind != case.hit_kind:  # the pairs MCP searches
            tool = "search_images" if case.query_kind == "text" else "search_texts"
            query = mcp_query(case, world, "" if case.query_kind == "text" else "image_")
            result = await client.call_tool(
                tool, {**query, "collection_name": name, "limit": LIMIT}
            )
            hits = hits_of(result)
            assert [h["rank"] for h in hits] == list(range(1, len(plain) + 1))
            assert [str(h["id"]) for h in hits] == [i for i, _ in plain]
            assert [h["score"] for h in hits] == pytest.approx([s for _, s in plain], abs=1e-4)
            for hit in hits:
                assert hit["status"] == "ok" and hit.get("error") is None, hit
                assert hit["kind"] == case.hit_kind
                assert (hit.get("peak") is not None) == case.heatmap
                assert hit.get("peakOn", hit.get("peak_on")) == (
                    None if not case.heatmap else f"{case.heatmap_side} image"
                )
                assert ("word" in hit["why"]) == case.words
            explained = plain[:1]
        for point, score in explained:
            query = mcp_query(case, world, "query_image_")
            result = await client.call_tool(
                "explain_hit", {"point_id": point, "collection_name": name, **query}
            )
            assert not is_error(result), text_of(result)
            text = text_of(result)
            assert f"Point {point} ({case.hit_kind} hit" in text
            assert f"cosine score {score:.4f}" in text
            assert ("Heatmap" in text) == case.heatmap
            assert ("Word attributions" in text) == case.words
            images = [c for c in result.content if isinstance(c, ImageContent)]
            assert len(images) == int(case.heatmap)
            assert all(dump(c)["mimeType"] == "image/png" for c in images)


# -- a typed reason -------------------------------------------------------------------------


async def test_hits_whose_images_may_not_be_read_come_with_a_typed_reason(
    qdrant: QdrantClient, tiny_encoder: ClipEncoder
) -> None:
    """LangChain image hits with no image roots, through each adapter: the inline images are
    explained, those named by path come with ``FeaturesMissingError`` and what to allow."""
    case = Case("langchain", "text", "image")
    vector = tiny_encoder.embed_texts([TEXT_QUERY])[0].tolist()
    hits = qdrant.query_points(UNROOTED, query=vector, limit=LIMIT).points
    named = {
        point_key(h.id) for h in hits if str((h.payload or {})["page_content"]).endswith(".png")
    }
    assert 0 < len(named) < len(hits)

    def check(key: Any, why: dict[str, Any]) -> None:
        if point_key(key) not in named:
            assert_record(why, case)
            return
        assert why["status"] == "failed"
        assert why["error"]["type"] == "FeaturesMissingError"
        assert "image_roots" in why["error"]["message"]

    explainer = Explainer(tiny_encoder, qdrant, collection_name=UNROOTED, write_sidecar=False)
    for e in explainer.explain(TEXT_QUERY, hits):
        check(e.id, json.loads(json.dumps(e.to_dict())))
    docs = QdrantXaiRetriever(
        client=qdrant,
        encoder=tiny_encoder,
        collection_name=UNROOTED,
        k=LIMIT,
        write_sidecar=False,
    ).invoke(TEXT_QUERY)
    assert [point_key(d.metadata["_id"]) for d in docs] == [point_key(h.id) for h in hits]
    for doc in docs:
        check(doc.metadata["_id"], doc.metadata["explanation"])
    nodes = [NodeWithScore(node=ImageNode(id_=point_key(h.id)), score=h.score) for h in hits]
    postprocessor = QdrantXaiNodePostprocessor(
        client=qdrant, encoder=tiny_encoder, collection_name=UNROOTED, write_sidecar=False
    )
    for node in postprocessor.postprocess_nodes(nodes, query_str=TEXT_QUERY):
        check(node.node.node_id, node.node.metadata["explanation"])
    unrooted = create_server(ServerSettings(), client=qdrant, encoder=tiny_encoder)
    async with connect(unrooted) as client:
        result = await client.call_tool(
            "search_images", {"query": TEXT_QUERY, "collection_name": UNROOTED, "limit": LIMIT}
        )
    found = hits_of(result)
    assert [point_key(h["id"]) for h in found] == [point_key(h.id) for h in hits]
    for hit in found:
        if point_key(hit["id"]) in named:
            assert hit["status"] == "failed" and hit["error"]["type"] == "FeaturesMissingError"
        else:
            assert hit["status"] == "ok" and hit.get("peak") is not None
