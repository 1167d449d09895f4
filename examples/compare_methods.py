"""Explain the same hits with every heatmap method, score them, and compare in one report.

Indexes with the "full" feature profile, so the gradient methods run from stored features
(no image read); only image occlusion reads the images. Each method's maps are scored
with the deletion metric (lower is better: the score falls fast when the hottest patches
go). Runs offline on the bundled shapes model:

    python examples/compare_methods.py
    python examples/compare_methods.py --query "a blue square" --out compare/
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Explainer, Indexer, Searcher, load_image
from qdrant_xai.demo.run import shapes_rationales
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.eval.faithfulness import deletion_auc
from qdrant_xai.explain import HEATMAP_METHODS
from qdrant_xai.render import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="a red circle")
    parser.add_argument("--out", default=None, help="where to write report.html")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="qdrant-xai-methods-"))
    captions = write_scene_folder(out / "images", 24, seed=2)
    client = QdrantClient(":memory:")
    encoder = ClipEncoder.from_pretrained("shapes")
    Indexer(client, encoder, collection_name="methods", profile="full").index_folder(
        captions.parent, captions=captions, progress=False
    )
    hits = Searcher(client, encoder, collection_name="methods").search_images(args.query, limit=3)
    explainer = Explainer(
        encoder,
        client,
        collection_name="methods",
        image_roots=[out / "images"],  # only image occlusion needs to read them
        grounding=True,
        rationales=shapes_rationales(encoder),
    )
    query = encoder.embed_texts([args.query])[0]
    images = [load_image(str(hit.payload["source"])) for hit in hits if hit.payload]
    sections = []
    print(f"{'method':>14}  deletion AUC (lower is better)")
    for method in sorted(HEATMAP_METHODS):
        explanations = explainer.explain(args.query, hits, heatmap_method=method)
        heatmaps = np.stack([e.heatmap for e in explanations if e.heatmap is not None])
        auc = deletion_auc(encoder, images, heatmaps, query, steps=16).mean()
        print(f"{method:>14}  {auc:+.4f}")
        sections.append((f"{args.query}  [{method}: deletion AUC {auc:+.4f}]", explanations))
    report = write_report(out / "report.html", sections, title="qdrant-xai: methods compared")
    print(f"report: {report}")


if __name__ == "__main__":
    main()
