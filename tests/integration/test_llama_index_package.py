"""The LlamaIndex package front: its public names, pinned; the extra it names when
llama-index-core is missing; ClipEmbedding against the encoder; configuration errors."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import llama_index_qdrant_xai
import numpy as np
import pytest
from llama_index.core.embeddings import MultiModalEmbedding
from llama_index.core.schema import ImageNode
from llama_index_qdrant_xai import ClipEmbedding, QdrantXaiNodePostprocessor
from pydantic import ValidationError
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, SourceNotAllowedError
from qdrant_xai.demo.world import write_scene_folder

PUBLIC = ["ClipEmbedding", "QdrantXaiNodePostprocessor", "explanation_metadata"]


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert sorted(llama_index_qdrant_xai.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(llama_index_qdrant_xai, name) is not None, name


def test_without_llama_index_core_the_import_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['llama_index.core'] = None  # as if it were not installed\n"
        "try:\n"
        "    import llama_index_qdrant_xai\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert 'pip install "qdrant-xai[llamaindex]"' in result.stdout
    assert "llama-index-core" in result.stdout


def test_clip_embedding_gives_the_encoders_vectors(
    shapes_encoder: ClipEncoder, tmp_path: Path
) -> None:
    write_scene_folder(tmp_path / "scenes", 2, seed=2)
    scene = tmp_path / "scenes" / "scene_0001.png"
    embedding = ClipEmbedding(encoder=shapes_encoder, embed_batch_size=2)
    assert isinstance(embedding, MultiModalEmbedding)
    assert embedding.model_name == shapes_encoder.model_id
    texts = ["a red circle", "a blue square", "a green cross"]
    np.testing.assert_allclose(
        embedding.get_text_embedding_batch(texts), shapes_encoder.embed_texts(texts), atol=1e-5
    )
    np.testing.assert_allclose(
        embedding.get_query_embedding(texts[0]), shapes_encoder.embed_texts(texts[:1])[0], atol=1e-5
    )
    expected = shapes_encoder.embed_images([scene])[0]
    encoded = base64.b64encode(scene.read_bytes()).decode()
    for image in (
        str(scene),
        io.BytesIO(scene.read_bytes()),
        "data:image/png;base64," + encoded,
        ImageNode(image=encoded).resolve_image(),  # what a base64 ImageNode hands over
    ):
        np.testing.assert_allclose(embedding.get_image_embedding(image), expected, atol=1e-5)
    assert "encoder" not in embedding.to_dict()  # serialisable, without the model

    fenced = ClipEmbedding(encoder=shapes_encoder, image_roots=[tmp_path / "elsewhere"])
    with pytest.raises(SourceNotAllowedError, match="outside the allowed image roots"):
        fenced.get_image_embedding(str(scene))


def test_configuration_errors_are_clear(shapes_encoder: ClipEncoder) -> None:
    client = QdrantClient(":memory:")
    options = {"client": client, "encoder": shapes_encoder, "collection_name": "docs"}
    with pytest.raises(ValidationError, match="unknown heatmap method 'nope'"):
        QdrantXaiNodePostprocessor(**options, heatmap_method="nope")
    with pytest.raises(ValidationError, match="unknown layout 'llama'"):
        QdrantXaiNodePostprocessor(**options, layout="llama")
    explain = QdrantXaiNodePostprocessor(**options)
    assert explain.postprocess_nodes([], query_str="anything") == []
    serialised = explain.to_dict()
    assert serialised["collection_name"] == "docs" and "client" not in serialised
    client.close()
