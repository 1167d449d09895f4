"""Agent tools: search a Qdrant collection (its layout detected, as the retriever does) and
explain hits, text for the model and explained documents as the tool message's artifact."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field
from qdrant_client import AsyncQdrantClient, QdrantClient

from langchain_qdrant_xai.formatting import describe_documents
from langchain_qdrant_xai.retriever import QdrantXaiRetriever, QueryKind
from qdrant_xai import ClipEncoder, QdrantXaiError

__all__ = ["create_tools"]

_Result = tuple[str, list[Document]]

_IMAGE_ARG = (
    "the image as a data URI (data:image/png;base64,...) or raw base64; a file path only "
    "when its folder is allowed"
)


class _TextSearch(BaseModel):
    query: str = Field(description="what to look for, in words, e.g. 'a red car on a street'")
    k: int | None = Field(default=None, ge=1, description="how many images to return")


class _ImageSearch(BaseModel):
    image: str = Field(description=_IMAGE_ARG)
    k: int | None = Field(default=None, ge=1, description="how many texts to return")


class _ExplainHit(BaseModel):
    point_id: str = Field(description="the id of a hit, as given in a search result")
    query: str | None = Field(default=None, description="the text query to explain it for")
    image: str | None = Field(
        default=None, description="or an image query instead of text: " + _IMAGE_ARG
    )


def create_tools(
    retriever: QdrantXaiRetriever | None = None,
    *,
    client: QdrantClient | None = None,
    async_client: AsyncQdrantClient | None = None,
    encoder: ClipEncoder | None = None,
    collection_name: str | None = None,
    query_image_roots: Sequence[str | os.PathLike[str]] | None = None,
    max_k: int = 20,
    **options: Any,
) -> list[BaseTool]:
    """Tools ``search_images_by_text``, ``search_texts_by_image`` and ``explain_hit``.

    Setup::

        from langchain_qdrant_xai import QdrantXaiRetriever, create_tools
        tools = create_tools(QdrantXaiRetriever(client=client, encoder=encoder,
                                                collection_name="photos"))
        # or: create_tools(client=client, encoder=encoder, collection_name="photos", k=5)
        model_with_tools = chat_model.bind_tools(tools)

    Use::

        message = tools[0].invoke({"name": "search_images_by_text", "args": {"query": "a red car"},
                                   "id": "call_1", "type": "tool_call"})
        message.content   # "1. car.jpg score 0.312: matched query words red (+0.08), ..."
        message.artifact  # the Documents, with heatmaps under metadata["explanation"]

    Every tool answers with ``response_format="content_and_artifact"``: the content is a
    short text the model can read (one line per hit: score, the words that drove the match,
    where the heatmap peaks, the id for ``explain_hit``); the artifact is the list of
    :class:`~langchain_core.documents.Document` the retriever returns. A hit that cannot be
    explained is listed with its reason (``not explained (FeaturesMissingError: ...)``) and
    the others explained. Bad input and qdrant-xai errors come back as an error message for
    the model to act on.

    Image arguments come from the model, so they are data URIs or base64; paths are read
    only under ``query_image_roots`` (default: the retriever's ``query_image_roots`` if it
    set them, else its ``image_roots``).

    Args:
        retriever: the retriever to base the tools on (its ``hit_kind`` is ignored:
            each tool searches in its own direction).
        client, async_client, encoder, collection_name: build a retriever instead.
        query_image_roots: folders image arguments may name files in.
        max_k: the most hits a tool returns, whatever ``k`` the model asks for.
        **options: further :class:`QdrantXaiRetriever` fields when building one.
    """
    if retriever is None:
        if encoder is None or collection_name is None:
            raise ValueError(
                "create_tools needs a QdrantXaiRetriever, or encoder=, collection_name= and "
                "client= (or async_client=)"
            )
        retriever = QdrantXaiRetriever(
            client=client,
            async_client=async_client,
            encoder=encoder,
            collection_name=collection_name,
            **options,
        )
    elif client or async_client or encoder or collection_name or options:
        raise ValueError("pass either a retriever or the settings to build one, not both")
    if max_k < 1:
        raise ValueError("max_k must be at least 1")
    roots: list[str | Path] = [
        os.fspath(r)
        for r in (
            query_image_roots
            if query_image_roots is not None
            else (
                retriever.query_image_roots
                if retriever.query_image_roots is not None
                else retriever.image_roots
            )
        )
    ]
    fields = {name: getattr(retriever, name) for name in type(retriever).model_fields}
    by_text = QdrantXaiRetriever(**{**fields, "hit_kind": "image", "query_image_roots": roots})
    by_image = QdrantXaiRetriever(**{**fields, "hit_kind": "text", "query_image_roots": roots})

    def limit(k: int | None) -> dict[str, Any]:
        return {} if k is None else {"k": min(k, max_k)}

    def search_images(query: str, k: int | None = None) -> _Result:
        return _answer(lambda: by_text.invoke(query, **limit(k)))

    async def asearch_images(query: str, k: int | None = None) -> _Result:
        return await _aanswer(lambda: by_text.ainvoke(query, **limit(k)))

    def search_texts(image: str, k: int | None = None) -> _Result:
        return _answer(lambda: by_image.invoke(image, **limit(k)))

    async def asearch_texts(image: str, k: int | None = None) -> _Result:
        return await _aanswer(lambda: by_image.ainvoke(image, **limit(k)))

    def explain(point_id: str, query: str | None = None, image: str | None = None) -> _Result:
        text, kind = _explain_query(query, image)
        return _answer(lambda: by_text.explain_points([point_id], text, query_kind=kind))

    async def aexplain(
        point_id: str, query: str | None = None, image: str | None = None
    ) -> _Result:
        text, kind = _explain_query(query, image)
        return await _aanswer(lambda: by_text.aexplain_points([point_id], text, query_kind=kind))

    common: dict[str, Any] = {
        "response_format": "content_and_artifact",
        "handle_tool_error": True,
        "handle_validation_error": True,
    }
    return [
        StructuredTool.from_function(
            func=search_images,
            coroutine=asearch_images,
            name="search_images_by_text",
            description=(
                "Search the image collection with a text description. Returns the best "
                "matching images, best first: each with its similarity score, the query words "
                "that drove the match (attribution scores), where in the image the match is "
                "(heatmap peak on the patch grid), and its id for explain_hit."
            ),
            args_schema=_TextSearch,
            **common,
        ),
        StructuredTool.from_function(
            func=search_texts,
            coroutine=asearch_texts,
            name="search_texts_by_image",
            description=(
                "Find the texts (captions) that best match an image. Returns texts, best "
                "first: each with its similarity score, the words of the text that drove the "
                "match, where in the given image the match is, and its id."
            ),
            args_schema=_ImageSearch,
            **common,
        ),
        StructuredTool.from_function(
            func=explain,
            coroutine=aexplain,
            name="explain_hit",
            description=(
                "Explain why one item of the collection (a point id from a search result) "
                "matches a text query, or an image: its similarity score, the words that "
                "drove the match and where the heatmap peaks."
            ),
            args_schema=_ExplainHit,
            **common,
        ),
    ]


def _explain_query(query: str | None, image: str | None) -> tuple[str, QueryKind]:
    """The query of ``explain_hit`` and its kind (exactly one is given)."""
    if (query is None) == (image is None):
        raise ToolException("give exactly one of 'query' (text) or 'image'")
    return (query, "text") if query is not None else (image or "", "image")


def _answer(run: Callable[[], list[Document]]) -> _Result:
    try:
        documents = run()
    except (QdrantXaiError, ValueError) as exc:
        raise ToolException(str(exc)) from exc
    return describe_documents(documents), documents


async def _aanswer(run: Callable[[], Awaitable[list[Document]]]) -> _Result:
    try:
        documents = await run()
    except (QdrantXaiError, ValueError) as exc:
        raise ToolException(str(exc)) from exc
    return describe_documents(documents), documents
