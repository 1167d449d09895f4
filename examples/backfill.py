"""Backfill qdrant-xai features into an existing collection (Qdrant's multimodal tutorial
layout: vectors "image" and "text" on one point, payload "image" and "caption").

Only the payload changes; ids and vectors stay as they were. A second run finds every point
current and does nothing; after the backfill, hits are explained from stored features
without reading any image.

    python examples/backfill.py --out backfilled/
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from qdrant_client import QdrantClient, models

from qdrant_xai import Backfiller, ClipEncoder, Explainer, ImageSourcePolicy, Searcher
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.render import write_report
from qdrant_xai.storage.indexer import read_captions_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="a yellow triangle")
    parser.add_argument("--out", default=None, help="where to write report.html")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="qdrant-xai-backfill-"))
    folder = out / "images"
    captions = read_captions_csv(write_scene_folder(folder, 16, seed=6))
    client = QdrantClient(":memory:")
    encoder = ClipEncoder.from_pretrained("shapes")

    # the tutorial's collection: one point per image with both vectors
    params = models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
    client.create_collection("tutorial", vectors_config={"image": params, "text": params})
    names = sorted(captions)
    images = encoder.embed_images([folder / n for n in names])
    texts = encoder.embed_texts([captions[n][0] for n in names])
    client.upsert(
        "tutorial",
        points=[
            models.PointStruct(
                id=i,
                vector={"image": images[i].tolist(), "text": texts[i].tolist()},
                payload={"image": str(folder / n), "caption": captions[n][0]},
            )
            for i, n in enumerate(names)
        ],
    )

    backfiller = Backfiller(
        client,
        encoder,
        collection_name="tutorial",
        layout="qdrant-tutorial",
        sources=ImageSourcePolicy.from_roots([folder]),
    )
    print(backfiller.run(progress=False))
    print(backfiller.run(progress=False))  # nothing left to do

    hits = Searcher(
        client, encoder, collection_name="tutorial", layout="qdrant-tutorial"
    ).search_images(args.query, limit=3)
    # no image roots: the stored features must suffice
    explainer = Explainer(encoder, client, collection_name="tutorial", layout="qdrant-tutorial")
    explanations = explainer.explain(args.query, hits)
    for e in explanations:
        print(f"{e.score:.3f}  {e.hit.payload['caption']!r}  peak {e.peak()}")  # type: ignore[index]
    report = write_report(out / "report.html", [(args.query, explanations)])
    print(f"report: {report}")


if __name__ == "__main__":
    main()
