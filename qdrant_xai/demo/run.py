"""The offline demo: index a synthetic shapes world, search it both ways, explain every hit.

``qdrant-xai demo`` generates coloured shapes with captions, loads the small CLIP that the
project trained on that world (``ClipEncoder.from_pretrained("shapes")``, made by
``examples/train_shapes_clip.py``), indexes everything into embedded Qdrant, runs
text→image and image→text queries, and writes an HTML report. Because the world is
synthetic the demo knows where each shape is, and prints whether each top hit's heatmap
peak lands on the shape the query names.

With ``--model openai/clip-vit-base-patch32 --images DIR`` it runs on real photos instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.errors import QdrantXaiError
from qdrant_xai.eval.faithfulness import pointing_game
from qdrant_xai.explain import Explainer, Explanation, RationaleScorer
from qdrant_xai.images.load import iter_image_files, load_image
from qdrant_xai.render import write_report
from qdrant_xai.search import Searcher
from qdrant_xai.storage.indexer import Indexer, IndexSummary, read_captions_csv
from qdrant_xai.storage.schema import PayloadKeys

__all__ = ["DemoResult", "run_demo", "shapes_rationales"]

DEMO_COLLECTION = "demo"
DEMO_SEED = 7
DEFAULT_QUERIES = ("a red circle", "a blue square", "a yellow triangle", "a green cross")


@dataclass
class DemoResult:
    """What the demo produced.

    Attributes:
        report: path of the HTML report.
        overlay: path of a PNG with the first query's top hits above their heatmaps.
        summary: the indexing summary.
        synthetic: whether the demo ran on the generated shapes world.
        explanations: ``query -> explanations`` for each text query.
        on_target: ``query -> whether the top hit's heatmap peak lies on the named shape``,
            ``None`` when the top hit does not contain that shape (synthetic world only).
    """

    report: Path
    overlay: Path | None
    summary: IndexSummary
    synthetic: bool = True
    explanations: dict[str, list[Explanation]] = field(default_factory=dict)
    on_target: dict[str, bool | None] = field(default_factory=dict)


def run_demo(
    out_dir: str | os.PathLike[str] = "qdrant-xai-demo",
    *,
    model: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    captions: str | os.PathLike[str] | None = None,
    queries: Sequence[str] | None = None,
    n_images: int = 48,
    limit: int = 4,
    progress: bool = True,
) -> DemoResult:
    """Runs the demo end to end and returns where its outputs are.

    Args:
        out_dir: folder for the images, the embedded Qdrant data and the report.
        model: CLIP checkpoint; defaults to the bundled shapes model.
        images: a folder of your own images (then ``model`` should be a real CLIP).
        captions: CSV (``image,caption``) for ``images``.
        queries: text queries to run; by default shape queries for the synthetic world,
            or the first captions of ``captions`` for your own images.
        n_images: size of the synthetic world (ignored with ``images``).
        limit: hits per query.
    """
    from qdrant_client import QdrantClient

    from qdrant_xai.demo.world import generate_scenes, write_scene_folder

    if queries is None:
        queries = DEFAULT_QUERIES if images is None else _first_captions(captions, 3)
    if not queries:
        raise QdrantXaiError("no queries: pass queries=[...] (CLI: --query TEXT) or --captions CSV")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    synthetic = images is None
    if synthetic:
        image_dir = out / "images"
        captions = write_scene_folder(image_dir, n_images, seed=DEMO_SEED)
        scenes = {
            f"scene_{i:04d}.png": scene
            for i, scene in enumerate(generate_scenes(n_images, seed=DEMO_SEED))
        }
    else:
        image_dir = Path(images)  # type: ignore[arg-type]
        scenes = {}
    encoder = ClipEncoder.from_pretrained(model or "shapes")
    client = QdrantClient(path=str(out / "qdrant_data"))
    try:
        if client.collection_exists(DEMO_COLLECTION):
            client.delete_collection(DEMO_COLLECTION)
        summary = Indexer(client, encoder, collection_name=DEMO_COLLECTION).index_folder(
            image_dir, captions=captions, progress=progress
        )
        searcher = Searcher(client, encoder, collection_name=DEMO_COLLECTION)
        explainer = Explainer(
            encoder,
            client,
            collection_name=DEMO_COLLECTION,
            grounding=True,
            rationales=shapes_rationales(encoder) if synthetic else True,
        )
        result = DemoResult(
            report=out / "report.html", overlay=None, summary=summary, synthetic=synthetic
        )
        sections: list[tuple[object, list[Explanation]]] = []
        for query in queries:
            explanations = explainer.explain(query, searcher.search_images(query, limit=limit))
            result.explanations[query] = explanations
            sections.append((query, explanations))
            if synthetic and explanations:
                result.on_target[query] = _on_target(query, explanations[0], scenes)
        # image→text needs captions in the collection; query with the first two images
        image_queries = list(iter_image_files(image_dir))[:2] if captions is not None else []
        for path in image_queries:
            loaded = load_image(path)
            hits = searcher.search_texts(loaded, limit=limit)
            sections.append((loaded.image, explainer.explain(loaded, hits)))
        first = next(iter(result.explanations.values()), [])
        if first and first[0].heatmap is not None:
            result.overlay = out / "top_hits_overlay.png"
            _overlay_strip(first).save(result.overlay)
        write_report(
            result.report,
            sections,  # type: ignore[arg-type]
            title="qdrant-xai demo",
            subtitle=f"collection '{DEMO_COLLECTION}' · "
            f"{summary.indexed_images} images, {summary.indexed_texts} captions",
            model=encoder.model_id,
        )
        return result
    finally:
        client.close()


def shapes_rationales(encoder: ClipEncoder) -> RationaleScorer:
    """Rationales for the shapes world: the other objects that explain a match.

    The shapes model only knows captions like "a red circle and a blue square", so the
    ECOR prompt becomes "{query} and {concept}" over every colour-shape phrase.
    """
    from qdrant_xai.demo.world import COLORS, SHAPES

    return RationaleScorer(
        encoder,
        [f"a {color} {shape}" for color in COLORS for shape in SHAPES],
        template="{query} and {concept}",
        query_template="{query}",
        concept_template="{concept}",
    )


def _first_captions(captions: str | os.PathLike[str] | None, n: int) -> list[str]:
    if captions is None:
        return []
    rows = read_captions_csv(captions).values()
    return [texts[0] for texts in rows if texts and texts[0].strip()][:n]


def _on_target(query: str, top: Explanation, scenes: Mapping[str, Any]) -> bool | None:
    """Whether the top hit's heatmap peak is on the queried shape (None: no such shape)."""
    scene = scenes.get(Path(str(top.payload.get(PayloadKeys.SOURCE, ""))).name)
    words = query.split()
    if scene is None or top.heatmap is None or top.crop_box is None or len(words) < 2:
        return None
    color, shape = words[-2], words[-1]
    for obj in scene.objects:
        if obj.color == color and obj.shape == shape:
            return pointing_game(top.heatmap, obj.mask, crop_box=top.crop_box)
    return None


def _overlay_strip(explanations: Sequence[Explanation], size: int = 200) -> Any:
    """The first hits (top row) above their heatmap overlays (bottom row), upscaled."""
    from PIL import Image

    shown = [e for e in explanations if e.heatmap is not None and e.image_source][:3]
    gap = 8
    canvas = Image.new("RGB", (len(shown) * (size + gap) - gap, 2 * size + gap), "white")
    for column, explanation in enumerate(shown):
        original = load_image(str(explanation.image_source)).image
        overlay = explanation.overlay(original)
        scale = size / max(original.size)
        dims = (round(original.width * scale), round(original.height * scale))
        x = column * (size + gap)
        canvas.paste(original.resize(dims, Image.Resampling.LANCZOS), (x, 0))
        canvas.paste(overlay.resize(dims, Image.Resampling.LANCZOS), (x, size + gap))
    return canvas
