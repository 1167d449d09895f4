"""QdrantXaiRetriever as a drop-in for langchain-qdrant's own retriever, on a collection
langchain-qdrant wrote as its users write one (captions, CSVLoader rows, base64 and path
images): the documents ``QdrantVectorStore.as_retriever()`` returns, field by field, plus
score and explanation; in LCEL chains, batched and async; per-hit failures."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_qdrant import QdrantVectorStore
from langchain_qdrant_xai import QdrantXaiRetriever, describe_documents
from langchain_qdrant_xai.documents import xai_value
from pydantic import ValidationError
from qdrant_client import AsyncQdrantClient, QdrantClient

from qdrant_xai import (
    LAYOUTS,
    ClipEncoder,
    CollectionError,
    FeaturesMissingError,
    SchemaMismatchError,
)
from tests.integration._langchain import (  # noqa: F401 (fixture scene_dir)
    QUERY,
    scene_dir_fixture,
    stored_metadata,
    write_langchain_collection,
)

OTHER_QUERY = "a blue cross"


@pytest.fixture(name="store")
def store_fixture(
    client: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> QdrantVectorStore:
    return write_langchain_collection(client, collection_name, shapes_encoder, scene_dir)


def _ours(store: QdrantVectorStore, encoder: ClipEncoder, **options: Any) -> QdrantXaiRetriever:
    return QdrantXaiRetriever(
        client=store.client, encoder=encoder, collection_name=store.collection_name, **options
    )


def assert_same_documents(ours: list[Document], theirs: list[Document]) -> None:
    """Same ids, order, page_content and stored metadata (with ``_id``,
    ``_collection_name``) as langchain-qdrant's retriever."""
    assert [d.metadata["_id"] for d in ours] == [d.metadata["_id"] for d in theirs]
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.page_content == reference.page_content
        assert stored_metadata(mine) == reference.metadata


def _expected_heatmap(encoder: ClipEncoder, image: Any, query: str) -> np.ndarray:
    contributions = encoder.encode_images([image])[0].contributions
    return contributions @ encoder.embed_texts([query])[0]


def test_documents_are_langchain_qdrants_plus_score_and_explanation(
    store: QdrantVectorStore, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    theirs = store.as_retriever(search_kwargs={"k": 4}).invoke(QUERY)
    ours = _ours(store, shapes_encoder, image_roots=[scene_dir]).invoke(QUERY)  # k=4, auto
    assert_same_documents(ours, theirs)
    scored = store.similarity_search_with_score(QUERY, k=4)
    assert [xai_value(d.metadata, "score") for d in ours] == pytest.approx(
        [s for _, s in scored], abs=1e-5
    )
    assert [xai_value(d.metadata, "rank") for d in ours] == [0, 1, 2, 3]
    assert all(xai_value(d.metadata, "explanation")["status"] == "ok" for d in ours)


@pytest.mark.slow
def test_every_kind_of_document_is_explained_as_what_it_is(
    store: QdrantVectorStore, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    n = store.client.count(store.collection_name).count
    theirs = store.as_retriever(search_kwargs={"k": n}).invoke(QUERY)
    ours = _ours(
        store, shapes_encoder, image_roots=[scene_dir], k=n, include_image=True, image_max_side=32
    ).invoke(QUERY)
    assert_same_documents(ours, theirs)
    seen = {"caption": 0, "csv": 0, "base64": 0, "path": 0}
    for doc in ours:
        meta = doc.metadata
        why = xai_value(meta, "explanation")
        assert why["status"] == "ok" and why["error"] is None, why
        assert "image_error" not in meta
        image = xai_value(meta, "image")
        assert (image is not None) == (xai_value(meta, "kind") == "image")
        assert image is None or image.startswith("data:image/png;base64,")
        if str(meta.get("source", "")).endswith("captions.csv"):  # a CSVLoader row: text
            seen["csv"] += 1
            assert meta["row"] >= 0 and meta["kind"] == "text"
            assert why["text"] == doc.page_content and why["words_side"] == "hit"
            assert why["heatmap"] is None and why["words"]
        elif meta.get("topic") == "caption":
            seen["caption"] += 1
            assert meta["kind"] == "text" and why["text"] == doc.page_content
        elif "name" in meta:  # base64 page_content; stored "kind" and "score" are kept
            seen["base64"] += 1
            assert (meta["kind"], meta["score"]) == ("photo", 5)
            assert meta["xai_kind"] == "image" and isinstance(meta["xai_score"], float)
            image = base64.b64decode(doc.page_content)
            expected = _expected_heatmap(shapes_encoder, image, QUERY)
            np.testing.assert_allclose(why["heatmap"], expected, atol=1e-4)
            assert why["words_side"] == "query" and [w for w, *_ in why["words"]] == [
                "a",
                "red",
                "circle",
            ]
        else:  # a path, named in metadata.source too
            seen["path"] += 1
            assert meta["kind"] == "image" and doc.page_content == meta["source"]
            expected = _expected_heatmap(shapes_encoder, Path(meta["source"]), QUERY)
            np.testing.assert_allclose(why["heatmap"], expected, atol=1e-4)
    assert (seen["csv"], seen["base64"], seen["path"]) == (10, 4, 4) and seen["caption"] > 0


def test_a_hit_that_cannot_be_explained_says_why_and_the_others_are_explained(
    store: QdrantVectorStore, shapes_encoder: ClipEncoder
) -> None:
    n = store.client.count(store.collection_name).count
    docs = _ours(store, shapes_encoder, k=n).invoke(QUERY)  # no image_roots: paths unread
    failed = [d for d in docs if xai_value(d.metadata, "explanation")["status"] == "failed"]
    assert {d.page_content for d in failed} == {
        d.metadata["source"] for d in docs if d.metadata.get("source", "").endswith(".png")
    }
    for doc in failed:
        error = xai_value(doc.metadata, "explanation")["error"]
        assert error["type"] == "FeaturesMissingError" and "image_root" in error["message"]
        assert len(error["message"]) < 2000
    explained = [d for d in docs if d not in failed]
    assert len(explained) == n - 4
    assert all(xai_value(d.metadata, "explanation")["words"] for d in explained)
    lines = describe_documents(docs).splitlines()
    assert sum("not explained (FeaturesMissingError" in line for line in lines) == 4
    assert all(len(line) < 600 for line in lines)  # base64 contents are never quoted
    with pytest.raises(FeaturesMissingError, match="image_root"):
        _ours(store, shapes_encoder, k=n, errors="raise").invoke(QUERY)


@pytest.mark.slow
def test_in_lcel_chains_batched_and_async(
    store: QdrantVectorStore, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    def format_docs(docs: list[Document]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    theirs = store.as_retriever(search_kwargs={"k": 4})
    ours = _ours(store, shapes_encoder, image_roots=[scene_dir])
    assert (ours | format_docs).invoke(QUERY) == (theirs | format_docs).invoke(QUERY)

    prompts: list[str] = []

    def record(value: Any) -> Any:
        prompts.append(value.to_string())
        return value

    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")
    model = GenericFakeChatModel(messages=iter(["a red circle, top left"] * 2))
    for retriever in (theirs, ours):
        chain = (
            RunnableParallel(
                context=retriever | RunnableLambda(format_docs), question=RunnablePassthrough()
            )
            | prompt
            | RunnableLambda(record)
            | model
            | StrOutputParser()
        )
        assert chain.invoke(QUERY) == "a red circle, top left"
    assert prompts[0] == prompts[1]

    batched = ours.batch([QUERY, OTHER_QUERY])
    for docs, reference in zip(batched, theirs.batch([QUERY, OTHER_QUERY]), strict=True):
        assert_same_documents(docs, reference)
        assert all(xai_value(d.metadata, "explanation")["status"] == "ok" for d in docs)


@pytest.mark.slow
async def test_ainvoke_matches_invoke_on_both_clients(
    tmp_path: Path, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    path = str(tmp_path / "qdrant")
    sync = QdrantClient(path=path)
    store = write_langchain_collection(sync, "docs", shapes_encoder, scene_dir)
    theirs = store.as_retriever(search_kwargs={"k": 6})
    expected = await theirs.ainvoke(QUERY)  # langchain-qdrant runs it in a thread
    ours = _ours(store, shapes_encoder, image_roots=[scene_dir], k=6)
    assert_same_documents(await ours.ainvoke(QUERY), expected)
    sync.close()

    client = AsyncQdrantClient(path=path)
    try:
        only_async = QdrantXaiRetriever(
            async_client=client,
            encoder=shapes_encoder,
            collection_name="docs",
            image_roots=[scene_dir],
            k=6,
        )
        docs = await only_async.ainvoke(QUERY)
        assert_same_documents(docs, expected)
        assert all(xai_value(d.metadata, "explanation")["status"] == "ok" for d in docs)
    finally:
        await client.close()


@pytest.mark.slow
def test_layout_given_or_detected(
    store: QdrantVectorStore, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    detected = _ours(store, shapes_encoder, image_roots=[scene_dir]).invoke(QUERY)
    for layout in ("langchain", LAYOUTS["langchain"], None):
        given = _ours(store, shapes_encoder, image_roots=[scene_dir], layout=layout)
        docs = given.invoke(QUERY)
        assert [(d.page_content, _without_heatmap(d)) for d in docs] == [
            (d.page_content, _without_heatmap(d)) for d in detected
        ]
        for doc, reference in zip(docs, detected, strict=True):  # now read from the sidecar
            heatmap = xai_value(doc.metadata, "explanation")["heatmap"]
            expected = xai_value(reference.metadata, "explanation")["heatmap"]
            assert (heatmap is None) == (expected is None)
            if expected is not None:
                np.testing.assert_allclose(heatmap, expected, atol=2e-3)
    with pytest.raises(ValidationError, match="unknown layout 'langchian'"):
        _ours(store, shapes_encoder, layout="langchian")
    with pytest.raises((CollectionError, SchemaMismatchError), match="'image'"):
        _ours(store, shapes_encoder, layout="qdrant-xai").invoke(QUERY)


def _without_heatmap(document: Document) -> dict[str, Any]:
    meta = dict(document.metadata)
    key = "xai_explanation" if "xai_explanation" in meta else "explanation"
    meta[key] = {k: v for k, v in meta[key].items() if k != "heatmap"}
    return meta


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")
def test_on_a_collection_llama_index_wrote(
    client: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder
) -> None:
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import MetadataMode, TextNode
    from llama_index.vector_stores.qdrant import QdrantVectorStore as LlamaQdrant
    from llama_index_qdrant_xai import ClipEmbedding

    captions = ["a red circle", "a blue square", "a green cross and a red circle"]
    nodes = [TextNode(text=t, metadata={"file_name": f"{i}.txt"}) for i, t in enumerate(captions)]
    store = LlamaQdrant(client=client, collection_name=collection_name)
    VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=ClipEmbedding(encoder=shapes_encoder),
    )
    retriever = QdrantXaiRetriever(
        client=client, encoder=shapes_encoder, collection_name=collection_name
    )  # detected: LlamaIndex's layout
    docs = retriever.invoke(QUERY)
    by_id = {n.node_id: n for n in nodes}
    assert len(docs) == 3
    for doc in docs:
        node = by_id[doc.metadata["_id"]]
        why = doc.metadata["explanation"]
        assert (
            doc.page_content == node.text
            and doc.metadata["file_name"] == node.metadata["file_name"]
        )
        assert doc.metadata["kind"] == "text" and why["status"] == "ok"
        assert why["text"] == node.get_content(metadata_mode=MetadataMode.EMBED)
