"""ClipEmbeddings with langchain-qdrant, over its own collections and a qdrant-xai one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_qdrant import QdrantVectorStore
from langchain_qdrant_xai import ClipEmbeddings
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, Searcher, SourceNotAllowedError
from tests.integration._langchain import (  # noqa: F401 (fixtures captions, indexed, scene_dir)
    QUERY,
    captions_fixture,
    data_uri,
    indexed_fixture,
    scene_dir_fixture,
)


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
    from_path, from_uri = embeddings.embed_image([str(scene), data_uri(scene)])
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
    assert len(embeddings.embed_image([data_uri(scene_dir / "scene_0000.png")])[0]) == 16
