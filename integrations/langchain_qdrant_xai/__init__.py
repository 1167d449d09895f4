"""LangChain integration of qdrant-xai: an explaining retriever, CLIP embeddings, agent tools.

    from qdrant_client import QdrantClient
    from qdrant_xai import ClipEncoder
    from langchain_qdrant_xai import QdrantXaiRetriever, create_tools

    retriever = QdrantXaiRetriever(client=QdrantClient(path="./qdrant_data"),
                                   encoder=ClipEncoder.from_pretrained(),
                                   collection_name="photos", image_roots=["photos/"])
    docs = retriever.invoke("a red car")   # metadata["explanation"]: top words, heatmap, peak
    tools = create_tools(retriever)        # search_images_by_text, search_texts_by_image,
                                           # explain_hit (content_and_artifact)

The retriever detects how the collection was written (qdrant-xai, langchain-qdrant,
LlamaIndex, FastEmbed; ``layout=`` to say it): on a collection langchain-qdrant wrote it
returns the Documents ``QdrantVectorStore.as_retriever()`` returns, plus score and
explanation.

The package: :mod:`~langchain_qdrant_xai.retriever` (the retriever, over the core's
searcher and explainer), :mod:`~langchain_qdrant_xai.collection` (what it works with once
the layout is known), :mod:`~langchain_qdrant_xai.documents` (hits and explanations as
Documents), :mod:`~langchain_qdrant_xai.embeddings`, :mod:`~langchain_qdrant_xai.tools`,
:mod:`~langchain_qdrant_xai.formatting` (documents as text, chat content and HTML).

Install with the ``langchain`` extra (``pip install "qdrant-xai[langchain]"``); only
``langchain-core`` is required.
"""

try:
    import langchain_core
except ImportError as exc:  # the one requirement of the extra
    raise ImportError(
        "langchain_qdrant_xai needs langchain-core, which the langchain extra installs: "
        'pip install "qdrant-xai[langchain]"'
    ) from exc

from langchain_qdrant_xai.embeddings import ClipEmbeddings
from langchain_qdrant_xai.formatting import (
    describe_document,
    describe_documents,
    documents_html,
    documents_to_content,
)
from langchain_qdrant_xai.retriever import QdrantXaiRetriever
from langchain_qdrant_xai.tools import create_tools

__all__ = [
    "ClipEmbeddings",
    "QdrantXaiRetriever",
    "create_tools",
    "describe_document",
    "describe_documents",
    "documents_html",
    "documents_to_content",
]
