"""Backfill qdrant-xai features for an existing collection (Qdrant's multimodal tutorial
layout: vectors "image" and "text" on one point, payload "image" and "caption").

The collection itself is not written to: the features go to its sidecar collection
("tutorial__xai"), keyed by point id and by a hash of each point's vector. A second run
finds every point current and does nothing; after the backfill, hits are explained from the
sidecar without reading any image.

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

    before = client.scroll("tutorial", limit=100, with_payload=True, with_vectors=True)[0]
    # the layout is detected (qdrant-tutorial); pass layout=... to name it yourself
    backfiller = Backfiller(
        client, encoder, collection_name="tutorial", sources=ImageSourcePolicy.from_roots([folder])
    )
    print(backfiller.run(progress=False))
    print(backfiller.run(progress=False))  # nothing left to do
    after = client.scroll("tutorial", limit=100, with_payload=True, with_vectors=True)[0]
    print(f"collection unchanged: {after == before}; sidecar points: "
          f"{client.count('tutorial__xai').count}")  # fmt: skip

    hits = Searcher(client, encoder, collection_name="tutorial").search_images(args.query, limit=3)
    # no image roots: the sidecar's features must suffice
    explainer = Explainer(encoder, client, collection_name="tutorial")
    explanations = explainer.explain(args.query, hits)
    for e in explanations:
        print(f"{e.score:.3f}  {e.hit.payload['caption']!r}  peak {e.peak()}")  # type: ignore[index]
    report = write_report(out / "report.html", [(args.query, explanations)])
    print(f"report: {report}")


if __name__ == "__main__":
    main()
