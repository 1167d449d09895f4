"""The LangChain integration: retriever, embeddings, tools, on real Qdrant and bundled models."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_qdrant import QdrantVectorStore
from langchain_qdrant_xai import (
    ClipEmbeddings,
    QdrantXaiRetriever,
    create_tools,
    describe_documents,
    documents_to_content,
)
from PIL import Image
from pydantic import ValidationError
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from qdrant_xai import (
    ClipEncoder,
    CollectionError,
    Explainer,
    ImageLoadError,
    Indexer,
    ModelMismatchError,
    SchemaMismatchError,
    Searcher,
    SourceNotAllowedError,
)
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.storage.indexer import read_captions_csv
from qdrant_xai.testing import build_tiny_clip

QUERY = "a red circle"


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    write_scene_folder(folder, 10, seed=3)
    return folder


@pytest.fixture(scope="module")
def captions(scene_dir: Path) -> dict[str, str]:
    """Caption of each scene, by absolute path (the indexed source)."""
    rows = read_captions_csv(scene_dir / "captions.csv")
    return {str((scene_dir / name).resolve()): caps[0] for name, caps in rows.items()}


def _index(client: QdrantClient, encoder: ClipEncoder, name: str, folder: Path) -> None:
    summary = Indexer(client, encoder, collection_name=name).index_folder(
        folder, captions=folder / "captions.csv", progress=False
    )
    assert summary.failed == []


@pytest.fixture
def indexed(
    client: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> QdrantClient:
    _index(client, shapes_encoder, collection_name, scene_dir)
    return client


def _retriever(client: Any, encoder: ClipEncoder, name: str, **options: Any) -> QdrantXaiRetriever:
    return QdrantXaiRetriever(client=client, encoder=encoder, collection_name=name, **options)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _open(path: str | Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _png(uri: str) -> Image.Image:
    header, _, data = uri.partition(",")
    assert header == "data:image/png;base64"
    image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    assert image.format == "PNG"
    image.load()
    return image


def _summary(docs: list[Document]) -> list[tuple[Any, float, list[Any] | None]]:
    return [
        (
            d.metadata["_id"],
            d.metadata["score"],
            (d.metadata.get("explanation") or {}).get("heatmap"),
        )
        for d in docs
    ]


# -- retriever ---------------------------------------------------------------------------


def test_invoke_keeps_qdrant_order_and_scores_and_explains_every_hit(
    indexed: QdrantClient,
    collection_name: str,
    shapes_encoder: ClipEncoder,
    captions: dict[str, str],
) -> None:
    retriever = _retriever(indexed, shapes_encoder, collection_name, k=5)
    docs = retriever.invoke(QUERY)

    plain = indexed.query_points(
        collection_name,
        query=shapes_encoder.embed_texts([QUERY])[0].tolist(),
        using="image",
        limit=5,
    ).points
    assert [d.metadata["_id"] for d in docs] == [p.id for p in plain]
    assert [d.metadata["score"] for d in docs] == pytest.approx([p.score for p in plain])
    reference = Explainer(shapes_encoder, indexed, collection_name=collection_name).explain(
        QUERY, plain
    )
    for rank, (doc, expected) in enumerate(zip(docs, reference, strict=True)):
        meta = doc.metadata
        assert meta["rank"] == rank and meta["kind"] == "image"
        assert meta["_collection_name"] == collection_name
        assert doc.page_content == captions[meta["source"]] == meta["caption"]
        why = meta["explanation"]
        heatmap = np.asarray(why["heatmap"])
        assert heatmap.shape == (8, 8) and why["grid"] == [8, 8]
        assert expected.heatmap is not None and np.allclose(heatmap, expected.heatmap, atol=1e-5)
        assert why["peak"] == list(np.unravel_index(int(np.argmax(heatmap)), heatmap.shape))
        assert [w for w, _, _ in why["words"]] == ["a", "red", "circle"]
        assert why["top_words"][0][1] == max(s for _, s, _ in why["words"])
        assert why["heatmap_method"] == "decomposition" and why["word_method"] == "occlusion"
        assert why["words_side"] == "query" and why["heatmap_side"] == "hit"
        assert "overlay" not in why and "image" not in meta


def test_per_call_options_and_filters(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    retriever = _retriever(indexed, shapes_encoder, collection_name, k=3, explain=False)
    assert len(retriever.invoke(QUERY)) == 3
    assert len(retriever.invoke(QUERY, k=6)) == 6
    only = str((scene_dir / "scene_0002.png").resolve())
    source_filter = models.Filter(
        must=[models.FieldCondition(key="source", match=models.MatchValue(value=only))]
    )
    filtered = retriever.invoke(QUERY, filter=source_filter)
    assert [d.metadata["source"] for d in filtered] == [only]
    with pytest.raises(TypeError, match="unknown retriever option"):
        retriever.invoke(QUERY, kk=3)


def test_explain_top_n_and_explain_off(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder
) -> None:
    docs = _retriever(indexed, shapes_encoder, collection_name, k=5, explain_top_n=2).invoke(QUERY)
    assert ["explanation" in d.metadata for d in docs] == [True, True, False, False, False]
    full = _retriever(indexed, shapes_encoder, collection_name, k=5).invoke(QUERY)
    assert _summary(docs)[:2] == _summary(full)[:2]
    assert [d.metadata["score"] for d in docs] == [d.metadata["score"] for d in full]
    off = _retriever(indexed, shapes_encoder, collection_name, k=5, explain=False).invoke(QUERY)
    assert not any("explanation" in d.metadata for d in off)
    assert [d.metadata["_id"] for d in off] == [d.metadata["_id"] for d in full]


def test_image_query_by_path_data_uri_and_base64(
    indexed: QdrantClient,
    collection_name: str,
    shapes_encoder: ClipEncoder,
    scene_dir: Path,
    captions: dict[str, str],
) -> None:
    scene = scene_dir / "scene_0001.png"
    retriever = _retriever(
        indexed, shapes_encoder, collection_name, query_type="image", include_overlay=True
    )
    by_path = retriever.invoke(str(scene))
    plain = indexed.query_points(
        collection_name,
        query=shapes_encoder.embed_images([scene])[0].tolist(),
        using="text",
        limit=4,
    ).points
    assert [d.metadata["_id"] for d in by_path] == [p.id for p in plain]
    assert [d.metadata["score"] for d in by_path] == pytest.approx([p.score for p in plain])
    assert all(d.metadata["kind"] == "text" for d in by_path)
    assert [d.page_content for d in by_path] == [p.payload["text"] for p in plain]  # type: ignore[index]
    assert captions[str(scene.resolve())] in [d.page_content for d in by_path]
    for doc in by_path:
        why = doc.metadata["explanation"]
        assert why["heatmap_side"] == "query" and why["words_side"] == "hit"
        assert why["text"] == doc.page_content
        overlay = _png(why["overlay"])  # drawn over the query image
        assert overlay.size == _open(scene).size

    as_uri = retriever.invoke(_data_uri(scene))
    raw = retriever.invoke(base64.b64encode(scene.read_bytes()).decode())
    for other in (as_uri, raw):
        assert [d.metadata["_id"] for d in other] == [d.metadata["_id"] for d in by_path]
        assert [d.metadata["score"] for d in other] == pytest.approx(
            [d.metadata["score"] for d in by_path]
        )
        for a, b in zip(other, by_path, strict=True):
            assert np.allclose(
                a.metadata["explanation"]["heatmap"], b.metadata["explanation"]["heatmap"]
            )


def test_include_image_and_overlay_give_png_data_uris(
    indexed: QdrantClient,
    collection_name: str,
    shapes_encoder: ClipEncoder,
    scene_dir: Path,
    tmp_path: Path,
) -> None:
    retriever = _retriever(
        indexed,
        shapes_encoder,
        collection_name,
        k=3,
        include_image=True,
        include_overlay=True,
        image_roots=[scene_dir],
        image_max_side=64,
    )
    docs = retriever.invoke(QUERY)
    for doc in docs:
        image = _png(doc.metadata["image"])
        original = _open(doc.metadata["source"])
        assert image.size == (64, 64)  # 128 px scenes, shrunk
        expected = np.asarray(original.resize((64, 64), Image.Resampling.LANCZOS), dtype=float)
        assert np.abs(np.asarray(image.convert("RGB"), dtype=float) - expected).mean() < 2.0
        overlay = _png(doc.metadata["explanation"]["overlay"])
        assert overlay.size == (64, 64)
        assert "image_error" not in doc.metadata

    elsewhere = _retriever(
        indexed, shapes_encoder, collection_name, k=2, include_image=True, image_roots=[tmp_path]
    )
    for doc in elsewhere.invoke(QUERY):  # images outside image_roots are not read
        assert "image" not in doc.metadata
        assert "outside the allowed image roots" in doc.metadata["image_error"]
        assert "explanation" in doc.metadata


async def test_ainvoke_on_async_client_matches_invoke(
    tmp_path: Path, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    path = str(tmp_path / "qdrant")
    sync = QdrantClient(path=path)
    _index(sync, shapes_encoder, "scenes", scene_dir)
    options: dict[str, Any] = {"k": 4, "include_overlay": True, "image_roots": [scene_dir]}
    expected = _retriever(sync, shapes_encoder, "scenes", **options).invoke(QUERY)
    expected_texts = _retriever(sync, shapes_encoder, "scenes", query_type="image").invoke(
        str(scene_dir / "scene_0003.png")
    )
    sync.close()

    client = AsyncQdrantClient(path=path)
    try:
        retriever = QdrantXaiRetriever(
            async_client=client, encoder=shapes_encoder, collection_name="scenes", **options
        )
        docs = await retriever.ainvoke(QUERY)
        assert _close(docs, expected)
        assert [d.page_content for d in docs] == [d.page_content for d in expected]
        for a, b in zip(docs, expected, strict=True):
            assert a.metadata["explanation"]["top_words"] == b.metadata["explanation"]["top_words"]
            assert a.metadata["explanation"]["overlay"] == b.metadata["explanation"]["overlay"]
        with pytest.raises(ValueError, match="only an async_client"):
            retriever.invoke(QUERY)
        # without image_roots every feature must come from the async fetch
        stored_only = QdrantXaiRetriever(
            async_client=client, encoder=shapes_encoder, collection_name="scenes", k=4
        )
        assert _close(await stored_only.ainvoke(QUERY), expected)

        by_image = QdrantXaiRetriever(
            async_client=client,
            encoder=shapes_encoder,
            collection_name="scenes",
            query_type="image",
        )
        texts = await by_image.ainvoke(str(scene_dir / "scene_0003.png"))
        assert _close(texts, expected_texts)
        assert [d.page_content for d in texts] == [d.page_content for d in expected_texts]

        missing = QdrantXaiRetriever(
            async_client=client, encoder=shapes_encoder, collection_name="nope"
        )
        with pytest.raises(CollectionError, match="does not exist"):
            await missing.ainvoke(QUERY)
    finally:
        await client.close()


def _close(a: list[Document], b: list[Document]) -> bool:
    assert [d.metadata["_id"] for d in a] == [d.metadata["_id"] for d in b]
    assert [d.metadata["score"] for d in a] == pytest.approx([d.metadata["score"] for d in b])
    for x, y in zip(a, b, strict=True):
        assert np.allclose(
            x.metadata["explanation"]["heatmap"], y.metadata["explanation"]["heatmap"]
        )
    return True


async def test_ainvoke_with_only_a_sync_client_runs_the_sync_path(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder
) -> None:
    retriever = _retriever(indexed, shapes_encoder, collection_name, k=3)
    assert _close(await retriever.ainvoke(QUERY), retriever.invoke(QUERY))


def test_in_an_lcel_chain_with_a_multimodal_prompt(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    retriever = _retriever(
        indexed, shapes_encoder, collection_name, k=2, include_image=True, image_roots=[scene_dir]
    )

    def prompt(inputs: dict[str, Any]) -> list[BaseMessage]:
        content = documents_to_content(inputs["docs"], question=inputs["question"])
        return [HumanMessage(content=content)]

    sent: list[list[BaseMessage]] = []

    def record(messages: list[BaseMessage]) -> list[BaseMessage]:
        sent.append(messages)  # what the chat model receives
        return messages

    model = GenericFakeChatModel(messages=iter(["The red circle is in the first image."]))
    chain = (
        {"docs": retriever, "question": RunnablePassthrough()}
        | RunnableLambda(prompt)
        | RunnableLambda(record)
        | model
        | StrOutputParser()
    )
    answer = chain.invoke(QUERY)
    assert answer == "The red circle is in the first image."

    ((message,),) = sent
    blocks = message.content
    assert isinstance(blocks, list)
    images = [b for b in blocks if isinstance(b, dict) and b["type"] == "image"]
    texts = [b["text"] for b in blocks if isinstance(b, dict) and b["type"] == "text"]
    assert len(images) == 2 and all(b["mime_type"] == "image/png" for b in images)
    assert all(_png("data:image/png;base64," + b["base64"]) for b in images)
    assert texts[0] == f"Question: {QUERY}"
    expected = describe_documents(retriever.invoke(QUERY)).splitlines()
    assert [t for t in texts if t[:2] in ("1.", "2.")] == expected
    assert "matched query words" in expected[0] and "heatmap peak row" in expected[0]


# -- embeddings --------------------------------------------------------------------------


def test_clip_embeddings_with_langchain_qdrant(
    indexed: QdrantClient,
    collection_name: str,
    shapes_encoder: ClipEncoder,
    scene_dir: Path,
    captions: dict[str, str],
) -> None:
    embeddings = ClipEmbeddings(encoder=shapes_encoder, batch_size=3)
    texts = sorted(set(captions.values()))
    vectors = embeddings.embed_documents(texts)
    assert np.allclose(vectors, shapes_encoder.embed_texts(texts), atol=1e-5)
    assert np.allclose(embeddings.embed_query(QUERY), shapes_encoder.embed_texts([QUERY])[0])
    scene = scene_dir / "scene_0004.png"
    from_path, from_uri = embeddings.embed_image([str(scene), _data_uri(scene)])
    assert np.allclose(from_path, shapes_encoder.embed_images([scene])[0], atol=1e-5)
    assert np.allclose(from_uri, from_path, atol=1e-6)

    # a collection of its own, filled and searched through langchain-qdrant
    indexed.create_collection(
        "lc_captions",
        vectors_config=models.VectorParams(
            size=shapes_encoder.dim, distance=models.Distance.COSINE
        ),
    )
    store = QdrantVectorStore(indexed, "lc_captions", embedding=embeddings)
    store.add_texts(texts, metadatas=[{"n": i} for i in range(len(texts))])
    hits = store.similarity_search_with_score(QUERY, k=3)
    expected = np.asarray(vectors) @ np.asarray(embeddings.embed_query(QUERY))
    assert [doc.page_content for doc, _ in hits] == [texts[i] for i in np.argsort(-expected)[:3]]
    assert [s for _, s in hits] == pytest.approx(np.sort(expected)[::-1][:3].tolist(), abs=1e-4)
    by_image = store.similarity_search_with_score_by_vector(from_path, k=3)
    assert captions[str(scene.resolve())] in [doc.page_content for doc, _ in by_image]

    # a qdrant-xai collection read by langchain-qdrant: same hits as the Searcher
    xai = QdrantVectorStore(
        indexed,
        collection_name,
        embedding=embeddings,
        vector_name="text",
        content_payload_key="text",
    )
    found = xai.similarity_search_with_score(QUERY, k=4)
    searched = Searcher(indexed, shapes_encoder, collection_name=collection_name).search_texts(
        QUERY, limit=4
    )
    assert [doc.metadata["_id"] for doc, _ in found] == [h.id for h in searched]
    assert [s for _, s in found] == pytest.approx([h.score for h in searched])


def test_clip_embeddings_from_pretrained_and_image_roots(
    tiny_model_dir: Path, scene_dir: Path, tmp_path: Path
) -> None:
    embeddings = ClipEmbeddings.from_pretrained(
        tiny_model_dir, batch_size=2, image_roots=[tmp_path]
    )
    assert embeddings.batch_size == 2 and len(embeddings.embed_query("a cat")) == 16
    with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots"):
        embeddings.embed_image([str(scene_dir / "scene_0000.png")])
    assert len(embeddings.embed_image([_data_uri(scene_dir / "scene_0000.png")])[0]) == 16


# -- tools -------------------------------------------------------------------------------


def _call(tool: Any, args: dict[str, Any], call_id: str = "call_1") -> ToolMessage:
    message = tool.invoke({"name": tool.name, "args": args, "id": call_id, "type": "tool_call"})
    assert isinstance(message, ToolMessage) and message.tool_call_id == call_id
    return message


def test_tools_answer_with_content_and_artifact(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    retriever = _retriever(indexed, shapes_encoder, collection_name, k=3)
    tools = {t.name: t for t in create_tools(retriever, max_k=4)}
    assert set(tools) == {"search_images_by_text", "search_texts_by_image", "explain_hit"}
    assert all(t.response_format == "content_and_artifact" for t in tools.values())

    message = _call(tools["search_images_by_text"], {"query": QUERY})
    docs = message.artifact
    assert _close(docs, retriever.invoke(QUERY))
    assert message.content == describe_documents(docs)
    first = str(message.content).splitlines()[0]
    assert first.startswith(f"1. {Path(docs[0].metadata['source']).name} (")
    assert f"score {docs[0].metadata['score']:.3f}" in first and "of 8x8" in first
    assert len(_call(tools["search_images_by_text"], {"query": QUERY, "k": 50}).artifact) == 4
    invalid = _call(tools["search_images_by_text"], {"query": QUERY, "k": 0})
    assert invalid.status == "error" and invalid.artifact is None

    scene = scene_dir / "scene_0005.png"
    texts = _call(tools["search_texts_by_image"], {"image": _data_uri(scene), "k": 2})
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
        tools["explain_hit"], {"point_id": hit.metadata["_id"], "image": _data_uri(scene)}
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


# -- configuration errors ----------------------------------------------------------------


def test_configuration_errors_are_clear(
    indexed: QdrantClient,
    collection_name: str,
    shapes_encoder: ClipEncoder,
    tiny_encoder: ClipEncoder,
) -> None:
    with pytest.raises(ValidationError, match="needs a Qdrant client"):
        QdrantXaiRetriever(encoder=shapes_encoder, collection_name=collection_name)
    with pytest.raises(ValidationError, match="pass image_roots"):
        _retriever(indexed, shapes_encoder, collection_name, include_image=True)
    with pytest.raises(ValidationError, match="unknown heatmap method 'nope'"):
        _retriever(indexed, shapes_encoder, collection_name, heatmap_method="nope")
    with pytest.raises(ValidationError, match="Extra inputs"):
        _retriever(indexed, shapes_encoder, collection_name, top_k=3)
    with pytest.raises(CollectionError, match="does not exist"):
        _retriever(indexed, shapes_encoder, "missing").invoke(QUERY)
    with pytest.raises(SchemaMismatchError, match="dimension"):
        _retriever(indexed, tiny_encoder, collection_name).invoke(QUERY)
    by_image = _retriever(indexed, shapes_encoder, collection_name, query_type="image")
    with pytest.raises(ImageLoadError):
        by_image.invoke("no such image.png")
    with pytest.raises(ImageLoadError, match="not an image"):
        by_image.invoke("data:text/plain;base64,aGVsbG8=")
    with pytest.raises(ValueError, match="create_tools needs"):
        create_tools(client=indexed)


def test_points_of_another_model_are_refused(
    client: QdrantClient,
    collection_name: str,
    tiny_encoder: ClipEncoder,
    scene_dir: Path,
    tmp_path: Path,
) -> None:
    _index(client, tiny_encoder, collection_name, scene_dir)
    other = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "other", seed=1))
    with pytest.raises(ModelMismatchError, match="another model"):
        _retriever(client, other, collection_name, explain=False).invoke(QUERY)
