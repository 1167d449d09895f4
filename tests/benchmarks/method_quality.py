"""How good and how costly each explanation method is, measured; writes ``docs/explanations.md``.

Quality is measured on every (world, model) pair of :mod:`tests.benchmarks.pairs`: two
worlds (the plain shapes world the methods were developed on, and the clutter world built
to be hard) and three models (the bundled shapes CLIP the methods were tuned on, and two
CLIPs trained on the clutter world with their own seeds, depths and patch grids, never used
in development). For every object of every scene the query is the object's phrase
("a red circle") and the truth its visible pixel mask:

* heatmap methods: pointing game (overall, per query kind, and "PG hard": queries whose
  scene holds a distractor sharing the target's colour or shape), energy pointing game, and
  deletion / insertion AUC (RISE) of the query's cosine, next to a random map and a centre
  prior (see :mod:`tests.benchmarks.heatmap_quality`);
* word methods: how often the top word of a scene's caption is a content word, the
  true-vs-foil AUC of captions with one content word swapped for a foil (see
  :mod:`tests.benchmarks.word_quality`), and ERASER comprehensiveness / sufficiency.

Every figure carries a percentile-bootstrap 95 % interval over queries (captions).
Cost is measured on a CLIP with ViT-B/32's shapes and random weights (realistic sizes; the
maps themselves mean nothing there): milliseconds per hit when the top 10 hits are
explained in one batch, and one hit at a time, measured in one run.

Run it::

    python -m tests.benchmarks.method_quality --out docs/explanations.md
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.encoding.words import split_words
from qdrant_xai.eval import (
    centre_prior,
    random_heatmaps,
    word_faithfulness,
)
from qdrant_xai.explain.base import HeatmapMethod, ImageEvidence, heatmap_method, word_method
from tests.benchmarks.harness import timed
from tests.benchmarks.heatmap_quality import (
    _evidence,
    item_scores,
    summarise,
)
from tests.benchmarks.method_tables import (
    HEATMAP_ORDER,
    RELIED,
    WORD_ORDER,
    MethodCost,
    PairResult,
    render_markdown,
)
from tests.benchmarks.pairs import (
    MODELS,
    QUALITY_SEED,
    SIGLIP_MODELS,
    WORLDS,
    BenchModel,
    foil_items,
    heatmap_items,
    relies_on_target,
)
from tests.benchmarks.word_quality import evaluate_word_quality, fitting_items

__all__ = [
    "HEATMAP_ORDER",
    "WORD_ORDER",
    "MethodCost",
    "PairResult",
    "evaluate_pair",
    "measure_costs",
    "render_markdown",
]


def evaluate_pair(
    world: str,
    model: BenchModel,
    *,
    scenes: int,
    heatmap_methods: Sequence[str] = HEATMAP_ORDER,
    word_methods: Sequence[str] = WORD_ORDER,
    steps: int = 16,
    seed: int = QUALITY_SEED,
    encoder: ClipEncoder | None = None,
) -> PairResult:
    """Every heatmap and word method (and the baselines) on ``scenes`` scenes of a pair."""
    encoder = encoder or ClipEncoder.from_pretrained(model.source)
    # a method that cannot explain this model's family (CLIP-only replays, prefix on a
    # bidirectional text tower) has no row
    family = encoder.family.name
    heatmap_methods = [m for m in heatmap_methods if family in heatmap_method(m).families]
    word_methods = [m for m in word_methods if family in word_method(m).families]
    items = heatmap_items(world, scenes, seed=seed)
    methods = [*heatmap_methods, _RandomMap(), _CentrePrior()]
    scores = item_scores(encoder, items, methods=methods, steps=steps)
    heatmaps = summarise(scores, [item.kind for item in items])
    relied = relies_on_target(encoder, items)
    chosen = np.flatnonzero(relied & np.array([item.kind != "easy" for item in items]))
    if chosen.size:
        subset = {m: {k: v[chosen] for k, v in per.items()} for m, per in scores.items()}
        heatmaps += [
            replace(row, kind=RELIED)
            for row in summarise(subset, [RELIED] * chosen.size)
            if row.kind == RELIED
        ]
    runs_from = {name: _runs_from(heatmap_method(name).requires) for name in heatmap_methods}
    foils = fitting_items(encoder, foil_items(world, scenes, seed=seed))
    words = evaluate_word_quality(encoder, foils, word_methods)
    eraser = _eraser(encoder, foils[::2], word_methods)  # one item per scene: its caption
    return PairResult(world, model, heatmaps, words, eraser, runs_from)


class _RandomMap(HeatmapMethod):
    """Baseline: uniform random maps (seeded per call)."""

    name = "random"
    requires = (frozenset({"embeddings"}),)

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        return random_heatmaps(len(evidence.embeddings), encoder.grid, seed=0)  # type: ignore[arg-type]


class _CentrePrior(HeatmapMethod):
    """Baseline: the same centred Gaussian for every image."""

    name = "centre"
    requires = (frozenset({"embeddings"}),)

    def heatmaps(
        self, encoder: ClipEncoder, evidence: ImageEvidence, queries: np.ndarray
    ) -> np.ndarray:
        n = len(evidence.embeddings)  # type: ignore[arg-type]
        return np.repeat(centre_prior(encoder.grid)[None], n, 0)


def _eraser(
    encoder: ClipEncoder, items: Sequence[object], methods: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """ERASER comprehensiveness and sufficiency of each word method on true captions."""
    captions = [item.caption for item in items]  # type: ignore[attr-defined]
    targets = encoder.embed_images([item.image for item in items])  # type: ignore[attr-defined]
    out = {}
    for name in methods:
        scores = [s for _, s in word_method(name).attribute(encoder, captions, targets)]
        faith = word_faithfulness(encoder, captions, scores, targets)
        out[name] = (float(faith.comprehensiveness.mean()), float(faith.sufficiency.mean()))
    rng = np.random.default_rng(0)
    scores = [rng.random(len(split_words(c))) for c in captions]
    faith = word_faithfulness(encoder, captions, scores, targets)
    out["random"] = (float(faith.comprehensiveness.mean()), float(faith.sufficiency.mean()))
    return out


def _runs_from(requires: tuple[frozenset[str], ...]) -> str:
    """What a hit must have for the method to run without reading its image."""
    if frozenset({"contributions"}) in requires:
        return "stored features (any profile)"
    if frozenset({"patch_tokens"}) in requires:
        return "stored features (full profile or patch tokens)"
    if frozenset({"last_layer_inputs"}) in requires:
        return "stored features (full profile)"
    return "the image"


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.method_quality",
        description="Measure every explanation method on every (world, model) pair and write "
        "the method tables.",
    )
    parser.add_argument("--out", default="docs/explanations.md", help="markdown file to write")
    parser.add_argument("--scenes", type=int, default=100, help="scenes per world (quality)")
    parser.add_argument("--no-cost", action="store_true", help="skip the ViT-B/32 timings")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--models", nargs="+", default=[m.name for m in (*MODELS, *SIGLIP_MODELS)])
    parser.add_argument("--worlds", nargs="+", default=list(WORLDS))
    parser.add_argument(
        "--save", default=None, help="pickle the pair results here instead of writing markdown"
    )
    parser.add_argument(
        "--merge", nargs="+", default=(), help="render pickled pair results (in this order)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    started = time.perf_counter()
    results = []
    merged_scenes: set[int] = set()  # the scene count each saved run measured with
    for saved in args.merge:  # pairs measured by separate runs (e.g. one process per model)
        with open(saved, "rb") as handle:
            saved_run = pickle.load(handle)
        # a model's label (held out or not, what it is) is the registry's, not the pickle's
        registry = {m.name: m for m in (*MODELS, *SIGLIP_MODELS)}
        results += [
            replace(r, model=registry.get(r.model.name, r.model)) for r in saved_run["results"]
        ]
        merged_scenes.add(saved_run["scenes"])
    chosen = [m for m in (*MODELS, *SIGLIP_MODELS) if m.name in args.models]
    for model in [m for m in chosen if not args.merge]:
        encoder = ClipEncoder.from_pretrained(model.source)
        for world in args.worlds:
            print(f"{world} × {model.name} ...", flush=True)
            results.append(evaluate_pair(world, model, scenes=args.scenes, encoder=encoder))
    if args.save:
        with open(args.save, "wb") as handle:
            pickle.dump({"scenes": args.scenes, "results": results}, handle)
        return 0
    costs: list[MethodCost] = []
    if not args.no_cost:
        from qdrant_xai.testing import build_vit_b32_random

        vit, processor = build_vit_b32_random()
        vit_encoder = ClipEncoder(vit, processor, model_id="vit-b32-random")
        slow = ("occlusion", "decompx")  # ~50 forwards per hit: timed on 2 hits
        costs = measure_costs(
            vit_encoder, image_methods=[m for m in HEATMAP_ORDER if m not in slow]
        )
        costs += measure_costs(vit_encoder, hits=2, image_methods=slow, word_methods=())
    setup = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "torch threads": str(torch.get_num_threads()),
        "dtype": "float32",
        "scenes": f"{'/'.join(map(str, sorted(merged_scenes))) if args.merge else args.scenes} "
        f"per world (seed {QUALITY_SEED})",
        "run time": f"{time.perf_counter() - started:.0f} s",
    }
    if args.merge:  # the pairs ran in other processes: this run only rendered them
        setup["torch threads"] = "1 per process, one process per model (--save, then --merge)"
        setup["run time"] = f"{time.perf_counter() - started:.0f} s (rendering and costs only)"
    text = render_markdown(results, costs, setup=setup)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
