"""The LangChain retriever on real Qdrant and bundled models: order, scores and explanations
as the core gives them, per-call options, image queries, images in metadata, async, LCEL,
configuration errors."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_qdrant_xai import (
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
    ModelMismatchError,
    SchemaMismatchError,
)
from qdrant_xai.testing import build_tiny_clip
from tests.integration._langchain import (  # noqa: F401 (fixtures captions, indexed, scene_dir)
    QUERY,
    captions_fixture,
    close_documents,
    data_uri,
    decode_png,
    index_scenes,
    indexed_fixture,
    make_retriever,
    open_rgb,
    scene_dir_fixture,
    summary,
)


def test_invoke_keeps_qdrant_order_and_scores_and_explains_every_hit(
    indexed: QdrantClient,
    collection_name: str,
    shapes_encoder: ClipEncoder,
    captions: dict[str, str],
) -> None:
    retriever = make_retriever(indexed, shapes_encoder, collection_name, k=5)
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
        assert why["heatmap_method"] == "decomposition" and why["word_method"] == "prefix"
        assert why["words_side"] == "query" and why["heatmap_side"] == "hit"
        assert "overlay" not in why and "image" not in meta


def test_per_call_options_and_filters(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    retriever = make_retriever(indexed, shapes_encoder, collection_name, k=3, explain=False)
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
    docs = make_retriever(indexed, shapes_encoder, collection_name, k=5, explain_top_n=2).invoke(
        QUERY
    )
    assert ["explanation" in d.metadata for d in docs] == [True, True, False, False, False]
    full = make_retriever(indexed, shapes_encoder, collection_name, k=5).invoke(QUERY)
    assert summary(docs)[:2] == summary(full)[:2]
    assert [d.metadata["score"] for d in docs] == [d.metadata["score"] for d in full]
    off = make_retriever(indexed, shapes_encoder, collection_name, k=5, explain=False).invoke(QUERY)
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
    retriever = make_retriever(
        indexed, shapes_encoder, collection_name, hit_kind="text", include_overlay=True
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
        overlay = decode_png(why["overlay"])  # drawn over the query image
        assert overlay.size == open_rgb(scene).size

    as_uri = retriever.invoke(data_uri(scene))
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
    retriever = make_retriever(
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
        image = decode_png(doc.metadata["image"])
        original = open_rgb(doc.metadata["source"])
        assert image.size == (64, 64)  # 128 px scenes, shrunk
        expected = np.asarray(original.resize((64, 64), Image.Resampling.LANCZOS), dtype=float)
        assert np.abs(np.asarray(image.convert("RGB"), dtype=float) - expected).mean() < 2.0
        overlay = decode_png(doc.metadata["explanation"]["overlay"])
        assert overlay.size == (64, 64)
        assert "image_error" not in doc.metadata

    elsewhere = make_retriever(
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
    index_scenes(sync, shapes_encoder, "scenes", scene_dir)
    options: dict[str, Any] = {"k": 4, "include_overlay": True, "image_roots": [scene_dir]}
    expected = make_retriever(sync, shapes_encoder, "scenes", **options).invoke(QUERY)
    expected_texts = make_retriever(sync, shapes_encoder, "scenes", hit_kind="text").invoke(
        str(scene_dir / "scene_0003.png")
    )
    sync.close()

    client = AsyncQdrantClient(path=path)
    try:
        retriever = QdrantXaiRetriever(
            async_client=client, encoder=shapes_encoder, collection_name="scenes", **options
        )
        docs = await retriever.ainvoke(QUERY)
        assert close_documents(docs, expected)
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
        assert close_documents(await stored_only.ainvoke(QUERY), expected)

        by_image = QdrantXaiRetriever(
            async_client=client,
            encoder=shapes_encoder,
            collection_name="scenes",
            hit_kind="text",
        )
        texts = await by_image.ainvoke(str(scene_dir / "scene_0003.png"))
        assert close_documents(texts, expected_texts)
        assert [d.page_content for d in texts] == [d.page_content for d in expected_texts]

        missing = QdrantXaiRetriever(
            async_client=client, encoder=shapes_encoder, collection_name="nope"
        )
        with pytest.raises(CollectionError, match="does not exist"):
            await missing.ainvoke(QUERY)
    finally:
        await client.close()


async def test_ainvoke_with_only_a_sync_client_runs_the_sync_path(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder
) -> None:
    retriever = make_retriever(indexed, shapes_encoder, collection_name, k=3)
    assert close_documents(await retriever.ainvoke(QUERY), retriever.invoke(QUERY))


def test_in_an_lcel_chain_with_a_multimodal_prompt(
    indexed: QdrantClient, collection_name: str, shapes_encoder: ClipEncoder, scene_dir: Path
) -> None:
    retriever = make_retriever(
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
    assert all(decode_png("data:image/png;base64," + b["base64"]) for b in images)
    assert texts[0] == f"Question: {QUERY}"
    expected = describe_documents(retriever.invoke(QUERY)).splitlines()
    assert [t for t in texts if t[:2] in ("1.", "2.")] == expected
    assert "matched query words" in expected[0] and "heatmap peak row" in expected[0]


def test_configuration_errors_are_clear(
    indexed: QdrantClient,
    collection_name: str,
    shapes_encoder: ClipEncoder,
    tiny_encoder: ClipEncoder,
) -> None:
    with pytest.raises(ValidationError, match="needs a Qdrant client"):
        QdrantXaiRetriever(encoder=shapes_encoder, collection_name=collection_name)
    with pytest.raises(ValidationError, match="pass image_roots"):
        make_retriever(indexed, shapes_encoder, collection_name, include_image=True)
    with pytest.raises(ValidationError, match="unknown heatmap method 'nope'"):
        make_retriever(indexed, shapes_encoder, collection_name, heatmap_method="nope")
    with pytest.raises(ValidationError, match="Extra inputs"):
        make_retriever(indexed, shapes_encoder, collection_name, top_k=3)
    with pytest.raises(CollectionError, match="does not exist"):
        make_retriever(indexed, shapes_encoder, "missing").invoke(QUERY)
    with pytest.raises(SchemaMismatchError, match="dimension"):
        make_retriever(indexed, tiny_encoder, collection_name).invoke(QUERY)
    by_image = make_retriever(indexed, shapes_encoder, collection_name, hit_kind="text")
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
    index_scenes(client, tiny_encoder, collection_name, scene_dir)
    other = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "other", seed=1))
    with pytest.raises(ModelMismatchError, match="another model"):
        make_retriever(client, other, collection_name, explain=False).invoke(QUERY)
