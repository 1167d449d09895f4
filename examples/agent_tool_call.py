"""An agent loop with qdrant-xai tools: the model reads explanations, the app keeps heatmaps.

``create_tools`` gives ``search_images_by_text``, ``search_texts_by_image`` and
``explain_hit``, each answering with ``content_and_artifact``: the ToolMessage content is a
short text the model reads (scores, words that drove the match, heatmap peak, ids), and
``ToolMessage.artifact`` holds the explained Documents for the application (heatmaps,
overlays), never sent to the model.

Runs offline with a scripted fake tool-calling model from langchain-core. With a real model,
bind the tools and run the same loop (or hand the tools to a LangGraph agent):

    model = ChatOpenAI(model="gpt-4o").bind_tools(tools)

    python examples/agent_tool_call.py                # shapes world, fake model, offline
"""

from __future__ import annotations

import argparse
import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_qdrant_xai import QdrantXaiRetriever, create_tools, documents_html
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.demo.world import write_scene_folder


def scripted_model(
    query: str, image_uri: str, artifacts: list[list[Document]]
) -> GenericFakeChatModel:
    """A fake model that calls the tools as a real one would, one step at a time."""

    def turns() -> Iterator[AIMessage]:
        yield AIMessage(
            content="",
            tool_calls=[{"name": "search_images_by_text", "args": {"query": query}, "id": "c1"}],
        )
        # the model read the top hit's id and caption in the tool's content, and asks how
        # each word of the caption matches that image
        top = artifacts[-1][0]
        explain = {"point_id": top.metadata["_id"], "query": top.metadata["caption"] or query}
        yield AIMessage(
            content="",
            tool_calls=[
                {"name": "explain_hit", "args": explain, "id": "c2"},
                {"name": "search_texts_by_image", "args": {"image": image_uri, "k": 2}, "id": "c3"},
            ],
        )
        yield AIMessage(
            content="(offline fake model) The best match is the first image: the word 'circle' "
            "drove the match most and its heatmap peaks where the circle is."
        )

    return GenericFakeChatModel(messages=turns())


def _short(value: object) -> object:
    text = str(value)
    return text[:40] + "..." if len(text) > 60 else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--query", default="a red circle")
    parser.add_argument("--out", default=None, help="where to write report.html")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="qdrant-xai-agent-"))
    images = out / "images"
    captions = write_scene_folder(images, 24, seed=1)
    client = QdrantClient(":memory:")
    encoder = ClipEncoder.from_pretrained(args.model)
    Indexer(client, encoder, collection_name="agent").index_folder(
        images, captions=captions, progress=False
    )
    retriever = QdrantXaiRetriever(
        client=client,
        encoder=encoder,
        collection_name="agent",
        k=3,
        include_overlay=True,  # in the artifact only: the model sees the text content
        image_roots=[images],
    )
    tools = {tool.name: tool for tool in create_tools(retriever)}

    # an image argument as a model would pass it: a data URI (paths are not read by tools)
    image_uri = "data:image/png;base64," + base64.b64encode(
        (images / "scene_0003.png").read_bytes()
    ).decode("ascii")
    artifacts: list[list[Document]] = []
    model = scripted_model(args.query, image_uri, artifacts)
    messages: list[BaseMessage] = [HumanMessage(f"Find {args.query} and explain the best hit.")]
    sections: dict[str, list[Document]] = {}
    while True:
        reply = model.invoke(messages)
        messages.append(reply)
        if not isinstance(reply, AIMessage) or not reply.tool_calls:
            break
        for call in reply.tool_calls:
            result = tools[call["name"]].invoke({**call, "type": "tool_call"})
            assert isinstance(result, ToolMessage)
            messages.append(result)
            artifacts.append(result.artifact or [])
            shown = {k: _short(v) for k, v in call["args"].items()}
            print(f"tool call {call['name']}({shown})")
            print("  content (what the model reads):")
            for line in str(result.content).splitlines():
                print(f"    {line}")
            print(f"  artifact: {len(artifacts[-1])} Documents with heatmaps")
            sections[f"{call['name']}({shown})"] = artifacts[-1]
    answer = str(messages[-1].content)
    print(f"answer: {answer}")

    report = out / "report.html"
    report.write_text(
        documents_html(sections, title="qdrant-xai agent tools", answer=answer), encoding="utf-8"
    )
    print(f"report: {report}")


if __name__ == "__main__":
    main()
