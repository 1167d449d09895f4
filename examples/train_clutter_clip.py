"""Train a small CLIP from scratch on the clutter world (the held-out benchmark models).

Run::

    python examples/train_clutter_clip.py --out tests/benchmarks/models/clutter-4l \\
        --seed 11 --vision-layers 4 --image-size 64 --patch-size 8

The clutter world (:mod:`qdrant_xai.demo.clutter`) crowds two to five shapes that share
colours and shapes, lets them touch and overlap, and lays them on textured clutter. The
explanation benchmark (``tests/benchmarks/method_quality.py``) measures every method on
models trained here with seeds, depths and patch grids of their own, which the methods
were never developed on. Training reuses ``examples/train_shapes_clip.py`` (the same
multi-positive InfoNCE, optimiser and schedule); per scene a batch holds the full caption,
one object's phrase and a true relation ("a red circle left of a blue square"), and as
hard negatives the caption with colours swapped, one shape changed, a phrase binding one
object's colour to another's shape, and the relation turned round.

At the end the script reloads the checkpoint and writes held-out metrics to
``TRAINING.md``: Recall@1/5 of full captions, colour binding, relation accuracy and the
pointing game of the decomposition heatmap split by query kind. ``--family siglip`` trains
a SigLIP with its sigmoid loss instead (see ``examples/train_shapes_clip.py``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import train_shapes_clip as base  # the sibling script; examples/ is on sys.path when run

from qdrant_xai import ClipEncoder
from qdrant_xai.demo.clutter import (
    CLUTTER_WORDS,
    QUERY_KINDS,
    ClutterScene,
    Relation,
    generate_clutter_scenes,
    query_kind,
    relation_caption,
)
from qdrant_xai.demo.world import caption_for, misbound_phrase, recolour, reshape_one, swap_colours
from qdrant_xai.encoding.families import family_of
from qdrant_xai.eval import pointing_game

Claim = list[tuple[str, str]] | Relation
"""A training text: the objects it names (all must be present) or a relation."""

_EVAL_SEED_OFFSET = 2_000_003
# Training renders smaller scenes (cheaper; the model sees 56-64 px anyway); evaluation and
# the benchmark use 128 px scenes, whose masks are finer.
EVAL_SCENE_SIZE = 128
_OPTIONS = (
    "steps",
    "seed",
    "batch_size",
    "threads",
    "eval_scenes",
    "vision_layers",
    "vision_hidden_size",
    "image_size",
    "patch_size",
    "text_layers",
    "scene_size",
    "context_length",
)


def text_of(claim: Claim) -> str:
    """The caption a claim is written as."""
    return claim.text if isinstance(claim, Relation) else caption_for(claim)


def holds(claim: Claim, scene: ClutterScene) -> bool:
    """Whether a claim is true of a scene."""
    if isinstance(claim, Relation):
        return claim.holds_in(scene)
    return set(claim) <= {(obj.color, obj.shape) for obj in scene.objects}


def training_claims(scene: ClutterScene, rng: np.random.Generator) -> list[Claim]:
    """The texts one scene adds to a batch: three true, four almost true."""
    pairs = [(obj.color, obj.shape) for obj in scene.objects]
    claims: list[Claim] = [pairs, [pairs[int(rng.integers(len(pairs)))]]]
    relation = relation_caption(scene, rng)
    if relation is not None:
        claims.append(relation)
        turned = Relation(relation.other, relation.relation, relation.subject)
        claims.append(turned)
    claims.append(swap_colours(pairs) or [recolour(pairs[0], rng)])
    claims.append([misbound_phrase(pairs, rng)])
    claims.append(reshape_one(pairs, rng))
    return claims


def clutter_batch_loss(
    model: Any, processor: Any, batch: Sequence[ClutterScene], rng: np.random.Generator
) -> torch.Tensor:
    """The family's loss (``base.contrastive_loss``) over a batch's claims (module doc)."""
    claims = [claim for scene in batch for claim in training_claims(scene, rng)]
    images = base._encode_images(model, processor, [s.image for s in batch])
    texts = base._encode_texts(model, processor, [text_of(c) for c in claims])
    positive = torch.tensor([[holds(c, s) for c in claims] for s in batch])  # [B, T]
    return base.contrastive_loss(model, images, texts, positive)


def evaluate_clutter_clip(
    model: Any, processor: Any, *, n_scenes: int, seed: int, scene_size: int
) -> dict[str, float]:
    """Held-out Recall@1/5, binding, relation accuracy and pointing by query kind (CLIP or
    SigLIP loaded with eager attention)."""
    scenes = list(generate_clutter_scenes(n_scenes, seed=seed, size=scene_size))
    pixel_values = processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"]
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        tower = family_of(model.config.model_type).run_image_tower(model, pixel_values)
        images, contributions = F.normalize(tower.embeds, dim=-1), tower.contributions
        captions = base._encode_texts(model, processor, [s.caption for s in scenes])
        ranked = (captions @ images.T).argsort(dim=1, descending=True)
        truth = torch.tensor(
            [[holds([(o.color, o.shape) for o in a.objects], b) for b in scenes] for a in scenes]
        )
        found = truth.gather(1, ranked)
        metrics = {
            "recall_at_1": found[:, :1].any(dim=1).float().mean().item(),
            "recall_at_5": found[:, :5].any(dim=1).float().mean().item(),
        }
        swapped = [
            (i, swap_colours([(o.color, o.shape) for o in s.objects])) for i, s in enumerate(scenes)
        ]
        swapped = [(i, wrong) for i, wrong in swapped if wrong is not None]
        wrong = base._encode_texts(model, processor, [caption_for(w) for _, w in swapped])
        rows = [i for i, _ in swapped]
        metrics["binding"] = (
            ((images[rows] * captions[rows]).sum(-1) > (images[rows] * wrong).sum(-1))
            .float()
            .mean()
            .item()
        )
        relations = [
            (i, r) for i, s in enumerate(scenes) if (r := relation_caption(s, rng)) is not None
        ]
        right = base._encode_texts(model, processor, [r.text for _, r in relations])
        turned = base._encode_texts(
            model, processor, [Relation(r.other, r.relation, r.subject).text for _, r in relations]
        )
        rows = [i for i, _ in relations]
        metrics["relations"] = (
            ((images[rows] * right).sum(-1) > (images[rows] * turned).sum(-1)).float().mean().item()
        )
        queries = [(i, obj) for i, s in enumerate(scenes) for obj in s.objects]
        phrases = base._encode_texts(model, processor, [obj.phrase for _, obj in queries])
        by_kind: dict[str, list[bool]] = {kind: [] for kind in QUERY_KINDS}
        for (index, obj), phrase in zip(queries, phrases, strict=True):
            hit = pointing_game((contributions[index] @ phrase).numpy(), obj.mask)
            by_kind[query_kind(scenes[index], obj)].append(bool(hit))
    for kind, hits in by_kind.items():
        metrics[f"pointing {kind}"] = float(np.mean(hits)) if hits else float("nan")
        metrics[f"queries {kind}"] = float(len(hits))
    metrics["pointing"] = float(np.mean([h for hits in by_kind.values() for h in hits]))
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Train, save, reload the way users load a checkpoint, evaluate, write ``TRAINING.md``."""
    defaults = replace(
        base.ShapesTrainingConfig(), context_length=32, steps=1800, batch_size=40, scene_size=96
    )
    parser = argparse.ArgumentParser(
        prog="python examples/train_clutter_clip.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="continue training this checkpoint (a second stage: fresh schedule, new scenes; "
        "its TRAINING.md is kept as a section of the new one)",
    )
    parser.add_argument("--family", choices=("clip", "siglip"), default=defaults.family)
    for name in _OPTIONS:
        parser.add_argument(
            "--" + name.replace("_", "-"), type=int, default=getattr(defaults, name)
        )
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.batch_size < 2:
        parser.error("--steps must be positive and --batch-size at least 2")
    config = replace(defaults, **{name: getattr(args, name) for name in ("family", *_OPTIONS)})
    scenes = generate_clutter_scenes(
        config.steps * config.batch_size, seed=config.seed, size=config.scene_size
    )
    started = time.perf_counter()
    model, processor = base.train_shapes_clip(
        config, scenes=scenes, batch_loss=clutter_batch_loss, words=CLUTTER_WORDS, init=args.init
    )
    earlier = (args.init / "TRAINING.md").read_text(encoding="utf-8") if args.init else ""
    wall_time = time.perf_counter() - started
    base.save_shapes_clip(model, processor, args.out)
    print(f"saved to {args.out} after {wall_time:.0f}s of training", flush=True)

    reloaded = ClipEncoder.from_pretrained(args.out)
    metrics = evaluate_clutter_clip(
        reloaded.model,
        reloaded.processor,
        n_scenes=config.eval_scenes,
        seed=config.seed + _EVAL_SEED_OFFSET,
        scene_size=EVAL_SCENE_SIZE,
    )
    lines = [f"{key:<28} {value:.3f}" for key, value in metrics.items()]
    print("\n".join(lines))
    command = " ".join([parser.prog, *(sys.argv[1:] if argv is None else argv)])
    settings = "\n".join(f"| `{key}` | {value} |" for key, value in asdict(config).items())
    (args.out / "TRAINING.md").write_text(
        f"# clutter-{config.family} ({args.out.name})\n\nA small"
        f" {'SigLIP' if config.family == 'siglip' else 'CLIP'} trained from scratch on the clutter"
        " world (`qdrant_xai.demo.clutter`) by `examples/train_clutter_clip.py`, for the"
        " explanation benchmark: no method was developed on it.\n\n"
        f"## Command\n\n```\n{command}\n```\n\nTraining wall time {wall_time / 60:.1f} min on"
        f" {config.threads} CPU threads ({platform.machine()}, torch {torch.__version__}).\n\n"
        f"## Held-out metrics\n\n{config.eval_scenes} unseen scenes (seed"
        f" {config.seed + _EVAL_SEED_OFFSET}); pointing uses the per-patch decomposition.\n\n"
        "```\n" + "\n".join(lines) + "\n```\n\n## Hyper-parameters\n\n| setting | value |\n"
        f"|---|---|\n{settings}\n"
        + (
            f"\n## Earlier stage ({args.init.name})\n\n"
            + earlier.split("\n", 1)[1].replace("\n#", "\n##")
            if earlier
            else ""
        ),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
