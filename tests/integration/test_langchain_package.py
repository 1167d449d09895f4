"""The LangChain package front: its public names, pinned, and the extra it names when
langchain-core is missing."""

from __future__ import annotations

import subprocess
import sys

import langchain_qdrant_xai

PUBLIC = [
    "ClipEmbeddings",
    "QdrantXaiRetriever",
    "create_tools",
    "describe_document",
    "describe_documents",
    "documents_html",
    "documents_to_content",
]


def test_all_is_pinned_and_every_name_resolves() -> None:
    assert sorted(langchain_qdrant_xai.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(langchain_qdrant_xai, name) is not None, name


def test_without_langchain_core_the_import_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['langchain_core'] = None  # as if it were not installed\n"
        "try:\n"
        "    import langchain_qdrant_xai\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert 'pip install "qdrant-xai[langchain]"' in result.stdout
    assert "langchain-core" in result.stdout
