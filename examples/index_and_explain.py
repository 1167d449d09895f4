"""Index a folder of images with captions, search it by text, and explain every hit.

Runs offline on the bundled shapes model; pass a hub id or a folder of your own to use a
real CLIP:

    python examples/index_and_explain.py                       # shapes world, offline
    python examples/index_and_explain.py --model openai/clip-vit-base-patch32 \
        --images photos/ --query "a dog on a beach"
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Explainer, Indexer, Searcher
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.render import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--images", help="folder of images (default: 24 generated scenes)")
    parser.add_argument("--captions", help="CSV with image,caption rows")
    parser.add_argument("--query", default="a red circle")
    parser.add_argument("--out", default=None, help="where to write report.html")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="qdrant-xai-example-"))
    images, captions = args.images, args.captions
    if images is None:
        images = out / "images"
        captions = write_scene_folder(images, 24, seed=1)

    client = QdrantClient(":memory:")  # or QdrantClient(url="http://localhost:6333")
    encoder = ClipEncoder.from_pretrained(args.model)

    summary = Indexer(client, encoder, collection_name="example").index_folder(
        images, captions=captions, progress=False
    )
    print(summary)

    hits = Searcher(client, encoder, collection_name="example").search_images(args.query, limit=3)
    explanations = Explainer(encoder, client, collection_name="example").explain(args.query, hits)
    for e in explanations:
        words = ", ".join(f"{w.word} {w.score:+.3f}" for w in e.top_words(3))
        print(f"{e.score:.3f}  {Path(e.payload['source']).name}  peak {e.peak()}  words: {words}")

    report = write_report(out / "report.html", [(args.query, explanations)])
    print(f"report: {report}")


if __name__ == "__main__":
    main()
