"""Explain the hits of a collection another tool wrote (here: the langchain-qdrant layout).

The collection has one unnamed vector and `page_content`/`metadata` payloads, as
langchain-qdrant's QdrantVectorStore writes them, and no qdrant-xai features. The
explainer first checks that the stored vectors come from our CLIP model, then recomputes
each hit's features from its image, read only from the allowed folder.

    python examples/explain_existing_collection.py --out existing/
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, Explainer, ImageSourcePolicy, Searcher, check_vectors
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.render import write_report
from qdrant_xai.storage.indexer import read_captions_csv


def write_langchain_style_collection(
    client: QdrantClient, encoder: ClipEncoder, folder: Path, captions_csv: Path
) -> None:
    """Stands in for a collection filled months ago by another tool."""
    client.create_collection(
        "products",
        vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE),
    )
    captions = read_captions_csv(captions_csv)
    names = sorted(captions)
    vectors = encoder.embed_images([folder / name for name in names])
    client.upsert(
        "products",
        points=[
            models.PointStruct(
                id=i,
                vector=vector.tolist(),
                payload={
                    "page_content": captions[name][0],
                    "metadata": {"source": str(folder / name)},
                },
            )
            for i, (name, vector) in enumerate(zip(names, vectors, strict=True))
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default="a blue square")
    parser.add_argument("--out", default=None, help="where to write report.html")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="qdrant-xai-existing-"))
    captions = write_scene_folder(out / "images", 16, seed=4)
    client = QdrantClient(":memory:")
    encoder = ClipEncoder.from_pretrained("shapes")
    write_langchain_style_collection(client, encoder, out / "images", captions)

    sources = ImageSourcePolicy.from_roots([out / "images"])
    check = check_vectors(client, "products", encoder, layout="langchain", sources=sources)
    print(f"vector check: {check.checked} points agree (cosine >= {min(check.agreement):.4f})")

    hits = Searcher(client, encoder, collection_name="products", layout="langchain").search_images(
        args.query, limit=3
    )
    explainer = Explainer(
        encoder, client, collection_name="products", layout="langchain", sources=sources
    )
    explanations = explainer.explain(args.query, hits)
    for e in explanations:
        words = ", ".join(f"{w.word} {w.score:+.3f}" for w in e.top_words(2))
        print(f"{e.score:.3f}  {Path(str(e.image_source)).name}  peak {e.peak()}  words: {words}")
    report = write_report(out / "report.html", [(args.query, explanations)])
    print(f"report: {report}")


if __name__ == "__main__":
    main()
