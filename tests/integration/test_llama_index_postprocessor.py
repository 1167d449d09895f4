"""The LlamaIndex node postprocessor on indexes LlamaIndex wrote into Qdrant as its users
write them: a VectorStoreIndex of text nodes with metadata, and a
MultiModalVectorStoreIndex of text nodes and image nodes (by path and base64). Explanations
are attached, hidden from the LLM; nodes, order and scores stay as they were."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.indices.multi_modal import MultiModalVectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.vector_stores.qdrant import QdrantVectorStore
from llama_index_qdrant_xai import ClipEmbedding, QdrantXaiNodePostprocessor
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, FeaturesMissingError
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.encoding.words import split_words
from qdrant_xai.storage.indexer import read_captions_csv

# LlamaIndex's QdrantVectorStore creates a payload index, which local Qdrant warns about
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

QUERY = "a red circle"
KEY = "explanation"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Eight scenes and the caption of each, by file name."""
    folder = tmp_path_factory.mktemp("llama-scenes")
    write_scene_folder(folder, 8, seed=5)
    rows = read_captions_csv(folder / "captions.csv")
    return folder, {name: caps[0] for name, caps in rows.items()}


@pytest.fixture(name="embed_model")
def embed_model_fixture(shapes_encoder: ClipEncoder) -> ClipEmbedding:
    return ClipEmbedding(encoder=shapes_encoder)


def text_nodes(captions: dict[str, str]) -> list[TextNode]:
    """A node per caption, its metadata embedded with it (one node keeps a key out of its
    embedding and uses its own template)."""
    nodes = [
        TextNode(text=caption, metadata={"file_name": name, "topic": "shapes"})
        for name, caption in captions.items()
    ]
    nodes[0].excluded_embed_metadata_keys = ["file_name"]
    nodes[0].metadata_template = "{key} = {value}"
    return nodes


def image_nodes(folder: Path, names: list[str]) -> list[ImageNode]:
    """The first half by path, the rest as base64 (how ``ImageNode(image=...)`` holds it)."""
    half = len(names) // 2
    return [
        ImageNode(image_path=str(folder / name), metadata={"file_name": name})
        for name in names[:half]
    ] + [
        ImageNode(
            image=base64.b64encode((folder / name).read_bytes()).decode(),
            metadata={"file_name": name},
        )
        for name in names[half:]
    ]


def assert_same_nodes(explained: list[NodeWithScore], plain: list[NodeWithScore]) -> None:
    """Same ids, order, scores and content; only the explanation key was added."""
    assert [n.node.node_id for n in explained] == [n.node.node_id for n in plain]
    assert [n.score for n in explained] == [n.score for n in plain]
    for mine, reference in zip(explained, plain, strict=True):
        assert KEY in mine.node.metadata and KEY not in reference.node.metadata
        assert {k: v for k, v in mine.node.metadata.items() if k != KEY} == reference.node.metadata
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            assert mine.node.get_content(metadata_mode=mode) == reference.node.get_content(
                metadata_mode=mode
            )
            assert "heatmap" not in mine.node.get_content(metadata_mode=mode)


def _why(hit: NodeWithScore) -> dict[str, Any]:
    return hit.node.metadata[KEY]


def _expected_heatmap(encoder: ClipEncoder, image: Any, query: str) -> np.ndarray:
    contributions = encoder.encode_images([image])[0].contributions
    return contributions @ encoder.embed_texts([query])[0]


def test_text_nodes_in_a_query_engine(
    client: QdrantClient,
    collection_name: str,
    embed_model: ClipEmbedding,
    shapes_encoder: ClipEncoder,
    scenes: tuple[Path, dict[str, str]],
) -> None:
    _, captions = scenes
    nodes = text_nodes(captions)
    store = QdrantVectorStore(client=client, collection_name=collection_name)
    index = VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    explain = QdrantXaiNodePostprocessor(
        client=client, encoder=shapes_encoder, collection_name=collection_name
    )  # no layout given: detected
    plain = index.as_query_engine(llm=MockLLM(), similarity_top_k=4).query(QUERY)
    response = index.as_query_engine(
        llm=MockLLM(), similarity_top_k=4, node_postprocessors=[explain]
    ).query(QUERY)
    assert_same_nodes(response.source_nodes, plain.source_nodes)
    assert str(response) == str(plain)  # MockLLM answers with its prompt: nothing added
    assert "topic: shapes" in str(response) and f"{KEY}:" not in str(response)
    embedded = {n.node_id: n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes}
    for hit in response.source_nodes:
        why = _why(hit)
        assert why["status"] == "ok" and why["error"] is None and why["kind"] == "text"
        # the text LlamaIndex embedded: metadata lines and text (its own template, its
        # excluded keys), whose re-encoding passed the vector check
        assert why["text"] == embedded[hit.node.node_id] and why["words_side"] == "hit"
        # its words in reading order, as far as they reach the model (the metadata lines
        # fill most of the shapes model's 24-token context; the rest is cut off)
        words = [w for w, *_ in why["words"]]
        assert words and words == [w.text for w in split_words(why["text"])][: len(words)]
        assert len(words) <= shapes_encoder.max_text_tokens
        assert why["heatmap"] is None and why["top_words"]

    again = explain.postprocess_nodes(
        index.as_retriever(similarity_top_k=4).retrieve(QUERY), query_str=QUERY
    )
    assert [_why(n) for n in again] == [_why(n) for n in response.source_nodes]


@pytest.fixture(name="loop")
def loop_fixture() -> Iterator[asyncio.AbstractEventLoop]:
    """The event loop LlamaIndex's sync multimodal synthesis runs its coroutines on (it
    takes ``asyncio.get_event_loop()`` and, without one, makes one it never closes)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.mark.slow
@pytest.mark.usefixtures("loop")
def test_text_and_image_nodes_of_a_multimodal_index(
    client: QdrantClient,
    collection_name: str,
    embed_model: ClipEmbedding,
    shapes_encoder: ClipEncoder,
    scenes: tuple[Path, dict[str, str]],
) -> None:
    folder, captions = scenes
    texts, images = f"{collection_name}_text", f"{collection_name}_images"
    storage = StorageContext.from_defaults(
        vector_store=QdrantVectorStore(client=client, collection_name=texts),
        image_store=QdrantVectorStore(client=client, collection_name=images),
    )
    index = MultiModalVectorStoreIndex(
        [*text_nodes(captions), *image_nodes(folder, sorted(captions))],
        storage_context=storage,
        embed_model=embed_model,
        image_embed_model=embed_model,
    )
    retriever = index.as_retriever(similarity_top_k=3, image_similarity_top_k=4)
    plain = retriever.retrieve(QUERY)
    explain = QdrantXaiNodePostprocessor(
        client=client,
        encoder=shapes_encoder,
        collection_name=texts,
        image_collection_name=images,
        image_roots=[folder],
    )
    explained = explain.postprocess_nodes(plain, query_str=QUERY)
    assert_same_nodes(explained, plain)
    kinds = [_why(n)["kind"] for n in explained]
    assert kinds.count("text") == 3 and kinds.count("image") == 4
    for hit in explained:
        why = _why(hit)
        assert why["status"] == "ok", why
        if isinstance(hit.node, ImageNode):
            image = hit.node.image_path or base64.b64decode(hit.node.image or "")
            expected = _expected_heatmap(shapes_encoder, image, QUERY)
            np.testing.assert_allclose(why["heatmap"], expected, atol=1e-4)
            assert why["words_side"] == "query" and why["grid"] == [8, 8]
            assert [w for w, *_ in why["words"]] == ["a", "red", "circle"]

    # an image query (image -> image), and in a query engine
    scene = str(folder / sorted(captions)[0])
    by_image = retriever.image_to_image_retrieve(scene)
    bundle = QueryBundle(query_str="", image_path=scene)
    for hit in explain.postprocess_nodes(by_image, bundle):
        assert _why(hit)["status"] == "ok" and _why(hit)["heatmap_side"] == "hit"
    chat = MockFunctionCallingLLM(is_chat_model=True)  # answers with what it was sent
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=chat, multimodal=True, node_postprocessors=[explain]
    )
    response = engine.query(QUERY)
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in plain]
    assert all(_why(n)["status"] == "ok" for n in response.source_nodes)
    prompt = str(response)  # the chat model answers with what it was sent
    assert "file_name: " in prompt and f"{KEY}:" not in prompt and "heatmap" not in prompt


def test_a_node_that_cannot_be_explained_says_why(
    client: QdrantClient,
    collection_name: str,
    embed_model: ClipEmbedding,
    shapes_encoder: ClipEncoder,
    scenes: tuple[Path, dict[str, str]],
) -> None:
    folder, captions = scenes
    names = sorted(captions)[:4]
    store = QdrantVectorStore(client=client, collection_name=collection_name)
    nodes = image_nodes(folder, names)
    for node in nodes:  # a VectorStoreIndex embeds what it is given: the images' vectors
        node.embedding = embed_model.get_image_embedding(node.resolve_image())
    VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    hits = [NodeWithScore(node=node, score=0.5 - i / 10) for i, node in enumerate(nodes)]
    stranger = NodeWithScore(node=TextNode(id_="not-a-point-id", text="elsewhere"), score=0.1)
    explain = QdrantXaiNodePostprocessor(
        client=client, encoder=shapes_encoder, collection_name=collection_name
    )  # no image_roots: the images named by path cannot be read
    explained = explain.postprocess_nodes([*hits, stranger], query_str=QUERY)
    assert [n.score for n in explained] == [n.score for n in [*hits, stranger]]
    statuses = [_why(n)["status"] for n in explained]
    assert statuses == ["failed", "failed", "ok", "ok", "failed"]
    for hit in explained[:2]:
        error = _why(hit)["error"]
        assert error["type"] == "FeaturesMissingError" and "image_root" in error["message"]
    assert _why(explained[-1])["error"]["type"] == "PointIdError"
    assert "not-a-point-id" in _why(explained[-1])["error"]["message"]

    with pytest.raises(ValueError, match="query_str"):
        explain.postprocess_nodes(hits)
    strict = QdrantXaiNodePostprocessor(
        client=client, encoder=shapes_encoder, collection_name=collection_name, errors="raise"
    )
    with pytest.raises(FeaturesMissingError, match="image_root"):
        strict.postprocess_nodes(hits, query_str=QUERY)

    # once explained from the images, the features are in the sidecar: the next
    # explanation needs no image, and the collection itself is left as it was
    before = client.scroll(collection_name, limit=100, with_payload=True, with_vectors=True)[0]
    options: dict[str, Any] = {"client": client, "encoder": shapes_encoder}
    with_roots = QdrantXaiNodePostprocessor(
        **options, collection_name=collection_name, image_roots=[folder]
    )
    first = with_roots.postprocess_nodes(hits, query_str=QUERY)
    assert [_why(n)["status"] for n in first] == ["ok"] * 4
    for without_sidecar in (True, False):
        again = QdrantXaiNodePostprocessor(
            **options, collection_name=collection_name, sidecar=not without_sidecar
        ).postprocess_nodes(hits, query_str=QUERY)
        statuses = [_why(n)["status"] for n in again]
        assert statuses == (["failed", "failed", "ok", "ok"] if without_sidecar else ["ok"] * 4)
    for hit, reference in zip(again, first, strict=True):
        np.testing.assert_allclose(_why(hit)["heatmap"], _why(reference)["heatmap"], atol=2e-3)
    after = client.scroll(collection_name, limit=100, with_payload=True, with_vectors=True)[0]
    assert after == before


async def test_async_postprocessing_matches(
    client: QdrantClient,
    collection_name: str,
    embed_model: ClipEmbedding,
    shapes_encoder: ClipEncoder,
    scenes: tuple[Path, dict[str, str]],
) -> None:
    _, captions = scenes
    store = QdrantVectorStore(client=client, collection_name=collection_name)
    index = VectorStoreIndex(
        text_nodes(captions),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    explain = QdrantXaiNodePostprocessor(
        client=client, encoder=shapes_encoder, collection_name=collection_name, layout="llamaindex"
    )
    nodes = index.as_retriever(similarity_top_k=3).retrieve(QUERY)
    expected = explain.postprocess_nodes(nodes, query_str=QUERY)
    explained = await explain.apostprocess_nodes(nodes, query_str=QUERY)
    assert [(n.node.node_id, n.score, _why(n)) for n in explained] == [
        (n.node.node_id, n.score, _why(n)) for n in expected
    ]
