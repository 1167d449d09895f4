"""LlamaIndex integration of qdrant-xai: explanations for nodes retrieved from Qdrant, and
CLIP embeddings.

    from llama_index_qdrant_xai import ClipEmbedding, QdrantXaiNodePostprocessor

    embed_model = ClipEmbedding.from_pretrained()   # texts and images, one CLIP space
    index = VectorStoreIndex(nodes, storage_context=storage, embed_model=embed_model)
    explain = QdrantXaiNodePostprocessor(client=client, encoder=embed_model.encoder,
                                         collection_name="docs", image_roots=["photos/"])
    response = index.as_query_engine(node_postprocessors=[explain]).query("a red car")
    response.source_nodes[0].node.metadata["explanation"]   # words, heatmap, peak, status

The package: :mod:`~llama_index_qdrant_xai.postprocessor` (the node postprocessor, over the
core's explainer) and :mod:`~llama_index_qdrant_xai.embeddings`.

Install with the ``llamaindex`` extra (``pip install "qdrant-xai[llamaindex]"``); only
``llama-index-core`` is required (LlamaIndex's ``QdrantVectorStore`` comes with
``llama-index-vector-stores-qdrant``).
"""

try:
    import llama_index.core
except ImportError as exc:  # the one requirement of the extra
    raise ImportError(
        "llama_index_qdrant_xai needs llama-index-core, which the llamaindex extra installs: "
        'pip install "qdrant-xai[llamaindex]"'
    ) from exc

from llama_index_qdrant_xai.embeddings import ClipEmbedding
from llama_index_qdrant_xai.postprocessor import QdrantXaiNodePostprocessor, explanation_metadata

__all__ = ["ClipEmbedding", "QdrantXaiNodePostprocessor", "explanation_metadata"]
