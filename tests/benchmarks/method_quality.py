"""How good and how costly each explanation method is, measured; writes ``docs/explanations.md``.

Quality is measured on the shapes world with the bundled shapes CLIP, where the truth is
known: every object has a pixel mask and a caption phrase ("a red circle"). For each
held-out scene and each object whose colour-shape pair is unique in it, the query is the
object's phrase and the image is the scene:

* heatmap methods: pointing game and energy pointing game against the object's mask, and
  deletion / insertion AUC (RISE) of the query's cosine similarity (see
  :mod:`qdrant_xai.eval.faithfulness`), next to a random map and a centre prior;
* word methods: how often the top word of a scene's caption, scored against its image, is
  a content word (a colour or shape), and ERASER comprehensiveness / sufficiency.

Cost is measured on a CLIP with ViT-B/32's shapes and random weights (realistic sizes; the
maps themselves mean nothing there): milliseconds per hit when the top 10 hits are
explained in one batch, and one hit at a time, measured in one run.

Run it::

    python -m tests.benchmarks.method_quality --out docs/explanations.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qdrant_xai.demo.world import COLORS, SHAPES, ShapeScene, generate_scenes
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.encoding.words import split_words
from qdrant_xai.eval import (
    centre_prior,
    deletion_auc,
    energy_pointing_game,
    insertion_auc,
    pointing_game,
    random_heatmaps,
    word_faithfulness,
)
from qdrant_xai.explain.base import ImageEvidence, heatmap_method, word_method
from tests.benchmarks.harness import timed

__all__ = [
    "HeatmapMethodQuality",
    "MethodCost",
    "WordMethodQuality",
    "evaluate_heatmap_methods",
    "evaluate_word_methods",
    "measure_costs",
    "shapes_queries",
]

HEATMAP_ORDER = (
    "decomposition",
    "patch",
    "debiased",
    "clip-surgery",
    "multiscale",
    "grad-eclip",
    "gae",
    "gae-last",
    "occlusion",
)
WORD_ORDER = ("occlusion", "context", "ig", "tokens")
QUALITY_SEED = 4242  # held out: the bundled model was trained on seeds 0.. of its own stream


@dataclass(frozen=True)
class ShapeQuery:
    """One object of a scene, asked for by its phrase."""

    scene: ShapeScene
    text: str
    mask: np.ndarray


@dataclass(frozen=True)
class HeatmapMethodQuality:
    """Mean scores of one heatmap method (or baseline) over the queries."""

    name: str
    pointing: float
    energy: float
    deletion: float
    insertion: float
    queries: int
    runs_from: str


@dataclass(frozen=True)
class WordMethodQuality:
    """Mean scores of one word method (or the random baseline) over the captions."""

    name: str
    content_first: float
    comprehensiveness: float
    sufficiency: float
    texts: int


@dataclass(frozen=True)
class MethodCost:
    """Cost of one method on a ViT-B/32-sized model."""

    name: str
    kind: str  # "image" or "words"
    passes: str
    ms_per_hit_batched: float
    ms_per_hit_single: float


def shapes_queries(n_scenes: int, *, seed: int = QUALITY_SEED) -> list[ShapeQuery]:
    """One query per object whose colour-shape pair is unique in its scene."""
    queries = []
    for scene in generate_scenes(n_scenes, seed=seed):
        for obj in scene.objects:
            twins = [o for o in scene.objects if (o.color, o.shape) == (obj.color, obj.shape)]
            if len(twins) == 1:
                queries.append(ShapeQuery(scene, f"a {obj.color} {obj.shape}", obj.mask))
    return queries


def _evidence(encoder: ClipEncoder, images: Sequence[object]) -> ImageEvidence:
    features = encoder.encode_images(images, patch_tokens=True, last_layer=True)
    return ImageEvidence(
        embeddings=np.stack([f.embedding for f in features]),
        contributions=np.stack([f.contributions for f in features]),
        patch_tokens=np.stack([f.patch_tokens for f in features if f.patch_tokens is not None]),
        last_layer_inputs=np.stack(
            [f.last_layer_inputs for f in features if f.last_layer_inputs is not None]
        ),
        images=list(images),  # type: ignore[arg-type]
    )


def evaluate_heatmap_methods(
    encoder: ClipEncoder,
    queries: Sequence[ShapeQuery],
    *,
    methods: Sequence[str] = HEATMAP_ORDER,
    baselines: bool = True,
    steps: int = 16,
    seed: int = 0,
) -> list[HeatmapMethodQuality]:
    """Pointing, energy pointing, deletion and insertion AUC of each heatmap method.

    Args:
        encoder: the model (the shapes CLIP for meaningful numbers).
        queries: from :func:`shapes_queries`.
        methods: registered heatmap method names.
        baselines: add a random map and a centre prior.
        steps: deletion/insertion steps per curve.
        seed: of the random baseline.
    """
    images = [q.scene.image for q in queries]
    evidence = _evidence(encoder, images)
    texts = encoder.embed_texts([q.text for q in queries])
    maps: dict[str, np.ndarray] = {}
    runs_from: dict[str, str] = {}
    for name in methods:
        method = heatmap_method(name)
        maps[name] = method.heatmaps(encoder, evidence, texts)
        runs_from[name] = _runs_from(method.requires)
    if baselines:
        maps["random"] = random_heatmaps(len(queries), encoder.grid, seed=seed)
        centre = centre_prior(encoder.grid)
        maps["centre"] = np.repeat(centre[None], len(queries), 0)
        runs_from["random"] = runs_from["centre"] = "-"
    pixels = encoder.pixel_values(images)
    rows = []
    for name, heatmaps in maps.items():
        pointing = [pointing_game(h, q.mask) for h, q in zip(heatmaps, queries, strict=True)]
        energy = [energy_pointing_game(h, q.mask) for h, q in zip(heatmaps, queries, strict=True)]
        deletion = deletion_auc(encoder, pixels, heatmaps, texts, steps=steps)
        insertion = insertion_auc(encoder, pixels, heatmaps, texts, steps=steps)
        rows.append(
            HeatmapMethodQuality(
                name=name,
                pointing=float(np.mean(pointing)),
                energy=float(np.mean(energy)),
                deletion=float(np.mean(deletion)),
                insertion=float(np.mean(insertion)),
                queries=len(queries),
                runs_from=runs_from[name],
            )
        )
    return rows


def _runs_from(requires: tuple[frozenset[str], ...]) -> str:
    """What a hit must have for the method to run without reading its image."""
    if frozenset({"contributions"}) in requires:
        return "stored features (any profile)"
    if frozenset({"patch_tokens"}) in requires:
        return "stored features (full profile or patch tokens)"
    if frozenset({"last_layer_inputs"}) in requires:
        return "stored features (full profile)"
    return "the image"


def evaluate_word_methods(
    encoder: ClipEncoder,
    scenes: Sequence[ShapeScene],
    *,
    methods: Sequence[str] = WORD_ORDER,
    baselines: bool = True,
    seed: int = 0,
) -> list[WordMethodQuality]:
    """Content-word-first rate, comprehensiveness and sufficiency of each word method."""
    captions = [s.caption for s in scenes]
    targets = encoder.embed_images([s.image for s in scenes])
    content = set(COLORS) | set(SHAPES)
    scored: dict[str, list[np.ndarray]] = {}
    for name in methods:
        scored[name] = [s for _, s in word_method(name).attribute(encoder, captions, targets)]
    if baselines:
        rng = np.random.default_rng(seed)
        scored["random"] = [rng.random(len(split_words(c))) for c in captions]
    rows = []
    for name, scores in scored.items():
        first = [
            split_words(c)[int(np.argmax(s))].text in content
            for c, s in zip(captions, scores, strict=True)
        ]
        faith = word_faithfulness(encoder, captions, scores, targets)
        rows.append(
            WordMethodQuality(
                name=name,
                content_first=float(np.mean(first)),
                comprehensiveness=float(faith.comprehensiveness.mean()),
                sufficiency=float(faith.sufficiency.mean()),
                texts=len(captions),
            )
        )
    return rows


def measure_costs(
    encoder: ClipEncoder,
    *,
    hits: int = 10,
    image_methods: Sequence[str] = HEATMAP_ORDER,
    word_methods: Sequence[str] = WORD_ORDER,
    seed: int = 0,
) -> list[MethodCost]:
    """Milliseconds per hit of each method, explaining ``hits`` hits batched vs one by one.

    The hits' stored features (the ``full`` profile) are prepared beforehand, as they would
    come from Qdrant; methods that need pixels get the decoded images.
    """
    rng = np.random.default_rng(seed)
    from PIL import Image

    images = [
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) for _ in range(hits)
    ]
    evidence = _evidence(encoder, images)
    # words the built-in tokenizer keeps whole, so token counts are those of real captions
    query = encoder.embed_texts(["a red circle and a blue square"])[0]
    caption = "a red circle and a blue square and a green cross and a yellow triangle"
    targets = evidence.embeddings
    assert targets is not None
    costs = []
    for name in image_methods:
        method = heatmap_method(name)
        method.heatmaps(encoder, _subset(evidence, 0, 1), query)  # warm-up
        batched = timed(lambda m=method: m.heatmaps(encoder, evidence, query))  # type: ignore[misc]
        single = timed(
            lambda m=method: [  # type: ignore[misc]
                m.heatmaps(encoder, _subset(evidence, i, i + 1), query) for i in range(hits)
            ]
        )
        costs.append(
            MethodCost(name, "image", method.cost, 1000 * batched / hits, 1000 * single / hits)
        )
    for name in word_methods:
        words = word_method(name)
        words.attribute(encoder, [caption], targets[:1])  # warm-up
        batched = timed(lambda w=words: w.attribute(encoder, [caption] * hits, targets))  # type: ignore[misc]
        single = timed(
            lambda w=words: [  # type: ignore[misc]
                w.attribute(encoder, [caption], targets[i : i + 1]) for i in range(hits)
            ]
        )
        costs.append(
            MethodCost(name, "words", words.cost, 1000 * batched / hits, 1000 * single / hits)
        )
    return costs


def _subset(evidence: ImageEvidence, start: int, stop: int) -> ImageEvidence:
    def cut(value: np.ndarray | None) -> np.ndarray | None:
        return None if value is None else value[start:stop]

    return ImageEvidence(
        embeddings=cut(evidence.embeddings),
        contributions=cut(evidence.contributions),
        patch_tokens=cut(evidence.patch_tokens),
        last_layer_inputs=cut(evidence.last_layer_inputs),
        images=None if evidence.images is None else evidence.images[start:stop],
    )


# -- the document -------------------------------------------------------------------------------


def render_markdown(
    image_rows: Sequence[HeatmapMethodQuality],
    word_rows: Sequence[WordMethodQuality],
    costs: Sequence[MethodCost],
    *,
    setup: dict[str, str],
) -> str:
    """The method table of ``docs/explanations.md``."""
    cost_of = {(c.kind, c.name): c for c in costs}
    lines = [
        "# Explanation methods: quality and cost",
        "",
        "Generated by `python -m tests.benchmarks.method_quality --out docs/explanations.md`; "
        "every number below comes from one run of it. Re-run it after changing a method.",
        "",
        "Quality: the bundled shapes CLIP on held-out scenes (ground-truth object masks). "
        'Each query is an object\'s phrase ("a red circle") against its scene. '
        "Pointing game and energy pointing game: higher is better. Deletion AUC: lower is "
        "better; insertion AUC: higher is better (cosine to the query as patches are removed "
        "from / inserted into the image, hottest first). Cost: a CLIP with ViT-B/32's shapes "
        "and random weights, milliseconds per hit when 10 hits are explained in one batch "
        "and one at a time.",
        "",
        f"Setup: {', '.join(f'{k} {v}' for k, v in setup.items())}.",
        "",
        "## Image heatmaps",
        "",
        "| method | pointing game | energy PG | deletion AUC ↓ | insertion AUC ↑ | "
        "runs from | passes | ms/hit batched | ms/hit one by one |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in image_rows:
        cost = cost_of.get(("image", row.name))
        lines.append(
            f"| {row.name} | {row.pointing:.1%} | {row.energy:.1%} | {row.deletion:.4f} | "
            f"{row.insertion:.4f} | {row.runs_from} | " + _cost_cells(cost)
        )
    queries = image_rows[0].queries if image_rows else 0
    lines += [
        "",
        f'{queries} queries. "Runs from": what a hit needs so that the method does not '
        "read its image; without it the explainer reads the image (under `image_roots`). "
        '"Batched": the 10 hits explained in one call, as the explainer does.',
        "",
        "## Word attributions",
        "",
        "| method | content word first | comprehensiveness ↑ | sufficiency ↓ | "
        "passes | ms/hit batched | ms/hit one by one |",
        "|---|---|---|---|---|---|---|",
    ]
    for word_row in word_rows:
        cost = cost_of.get(("words", word_row.name))
        lines.append(
            f"| {word_row.name} | {word_row.content_first:.1%} | "
            f"{word_row.comprehensiveness:.4f} | {word_row.sufficiency:.4f} | " + _cost_cells(cost)
        )
    texts = word_rows[0].texts if word_rows else 0
    lines += [
        "",
        f"{texts} captions, each scored against its own scene. Comprehensiveness and "
        "sufficiency are ERASER's AOPC over bins of 1, 5, 10, 20 and 50 % of the words.",
        "",
    ]
    return "\n".join(lines)


def _cost_cells(cost: MethodCost | None) -> str:
    if cost is None:
        return "(baseline) | - | - |"
    return f"{cost.passes} | {_ms(cost.ms_per_hit_batched)} | {_ms(cost.ms_per_hit_single)} |"


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.method_quality",
        description="Measure every explanation method and write the method table.",
    )
    parser.add_argument("--out", default="docs/explanations.md", help="markdown file to write")
    parser.add_argument("--scenes", type=int, default=120, help="held-out scenes (quality)")
    parser.add_argument("--no-cost", action="store_true", help="skip the ViT-B/32 timings")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    shapes = ClipEncoder.from_pretrained("shapes")
    queries = shapes_queries(args.scenes)
    started = time.perf_counter()
    image_rows = evaluate_heatmap_methods(shapes, queries)
    scenes = list(generate_scenes(args.scenes, seed=QUALITY_SEED))
    word_rows = evaluate_word_methods(shapes, scenes)
    costs: list[MethodCost] = []
    if not args.no_cost:
        from qdrant_xai.testing import build_vit_b32_random

        model, processor = build_vit_b32_random()
        costs = measure_costs(ClipEncoder(model, processor, model_id="vit-b32-random"))
    setup = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "torch threads": str(torch.get_num_threads()),
        "dtype": "float32",
        "scenes": f"{args.scenes} (seed {QUALITY_SEED})",
        "run time": f"{time.perf_counter() - started:.0f} s",
    }
    text = render_markdown(image_rows, word_rows, costs, setup=setup)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
