"""Multimodal RAG with LangChain: retrieve explained images and show them to a chat model.

An LCEL chain: QdrantXaiRetriever (hit images as data URIs, heatmap overlays, word
attributions) -> a HumanMessage with text and image content blocks -> chat model -> string.
Runs offline on the bundled shapes model with a fake chat model from langchain-core; to ask
a real multimodal model, replace ``chat_model`` (e.g. ``ChatOpenAI(model="gpt-4o")`` from
langchain-openai, or ``ChatAnthropic(...)``):

    python examples/langchain_rag.py                 # shapes world, fake model, offline
    python examples/langchain_rag.py --model openai/clip-vit-base-patch32 --images photos/ \
        --query "a dog on a beach" --question "What is the dog doing?"
"""

from __future__ import annotations

import argparse
import tempfile
from operator import itemgetter
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_qdrant_xai import QdrantXaiRetriever, documents_html, documents_to_content
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.demo.world import write_scene_folder

SYSTEM = (
    "Answer the question from the retrieved images only. Each image comes with its "
    "similarity score and an explanation: the query words that drove the match and where "
    "in the image the match is (heatmap peak). Say which image you rely on."
)


def build_messages(inputs: dict[str, Any]) -> list[BaseMessage]:
    """The prompt: instructions, then the question with every hit's image and explanation."""
    content = documents_to_content(inputs["docs"], question=inputs["question"], overlays=True)
    return [SystemMessage(content=SYSTEM), HumanMessage(content=content)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--images", help="folder of images (default: 24 generated scenes)")
    parser.add_argument("--captions", help="CSV with image,caption rows")
    parser.add_argument("--query", default="a red circle", help="what to retrieve")
    parser.add_argument(
        "--question", default="Which image shows a red circle, and where is it in the image?"
    )
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--out", default=None, help="where to write report.html")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="qdrant-xai-rag-"))
    images, captions = args.images, args.captions
    if images is None:
        images = out / "images"
        captions = write_scene_folder(images, 24, seed=1)

    client = QdrantClient(":memory:")  # or QdrantClient(url="http://localhost:6333")
    encoder = ClipEncoder.from_pretrained(args.model)
    Indexer(client, encoder, collection_name="rag").index_folder(
        images, captions=captions, progress=False
    )

    retriever = QdrantXaiRetriever(
        client=client,
        encoder=encoder,
        collection_name="rag",
        k=args.k,
        include_image=True,  # the hit images go to the chat model
        include_overlay=True,  # and their heatmaps, so it can see where the match is
        image_roots=[images],
    )
    chat_model = GenericFakeChatModel(
        messages=iter(
            [
                "(offline fake model) The first image is the best match; its heatmap peaks "
                "on the shape the question names."
            ]
        )
    )
    answer = RunnableLambda(build_messages) | chat_model | StrOutputParser()
    chain = RunnablePassthrough.assign(docs=itemgetter("query") | retriever).assign(answer=answer)
    result = chain.invoke({"query": args.query, "question": args.question})

    messages = build_messages({"docs": result["docs"], "question": args.question})
    blocks = messages[1].content
    n_images = sum(1 for b in blocks if isinstance(b, dict) and b.get("type") == "image")
    print(f"prompt: {len(blocks)} content blocks, {n_images} images; the text blocks:")
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "text":
            print("  " + block["text"])
    print(f"answer: {result['answer']}")

    report = out / "report.html"
    report.write_text(
        documents_html(
            {f"{args.question} (retrieved for: {args.query})": result["docs"]},
            title="qdrant-xai multimodal RAG",
            answer=result["answer"],
        ),
        encoding="utf-8",
    )
    print(f"report: {report}")


if __name__ == "__main__":
    main()
