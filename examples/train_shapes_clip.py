"""Train the bundled shapes-world CLIP (or a SigLIP) from scratch.

Run::

    python examples/train_shapes_clip.py --out qdrant_xai/demo/model [--steps N] [--seed S]
    python examples/train_shapes_clip.py --family siglip --out shapes-siglip --threads 1

The model is a small :class:`~transformers.CLIPModel` trained with the symmetric contrastive
(InfoNCE) loss of CLIP (Radford et al., 2021, https://arxiv.org/abs/2103.00020) on scenes
from :mod:`qdrant_xai.demo.world`, rendered afresh for every batch and fed through the real
processor and tokenizer. To make the model bind colours to shapes, and so localise them,
every batch mixes

* the full captions of its scenes (``"a red circle and a blue square"``),
* one single-object phrase per scene (``"a blue square"``),
* hard negatives: the caption with its colours swapped between objects (``"a blue circle
  and a red square"``), the caption with one shape changed (``"a red circle and a blue
  cross"``) and a phrase that pairs one object's colour with another's shape (``"a red
  square"``).

A text is a positive for every image in the batch that contains all the objects it names;
each positive competes only against the negatives of its row or column (multi-positive
InfoNCE), so a phrase true for two images is never pushed away from either.

At the end the script reloads the saved checkpoint and prints held-out metrics on unseen
scenes: text-to-image Recall@1/5, colour-binding accuracy, and the pointing game
(:func:`qdrant_xai.eval.pointing_game`: does the hottest patch of a heatmap fall on the
object a one-object query names?) for the per-patch decomposition of the image embedding
(Gandelsman et al., ICLR 2024, https://arxiv.org/abs/2310.05916) and, for comparison, for
raw patch-token similarity. The metrics also go into ``TRAINING.md`` in the output folder.

``--family siglip`` trains a :class:`~transformers.SiglipModel` (no projections; texts
padded to ``--context-length``) with SigLIP's sigmoid loss (Zhai et al., ICCV 2023,
https://arxiv.org/abs/2303.15343) instead: each (image, text) pair is its own binary
decision, so a phrase true of several images is simply a positive for each. Texts,
optimiser and evaluation are shared; ``--vision-layers`` etc. size the towers."""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor, CLIPModel, SiglipModel

from qdrant_xai import ClipEncoder
from qdrant_xai.demo.world import (
    COLORS,
    WORLD_WORDS,
    ShapeScene,
    caption_for,
    generate_scenes,
    misbound_phrase,
    recolour,
    reshape_one,
    swap_colours,
)
from qdrant_xai.encoding.families import family_of
from qdrant_xai.eval import pointing_game
from qdrant_xai.testing import build_clip_processor, tiny_clip_config
from qdrant_xai.testing.siglip import build_siglip_processor, tiny_siglip_config, token_ids

Pair = tuple[str, str]
"""A ``(colour, shape)`` pair naming one object."""

# Held-out scenes come from a seed the training stream never uses.
_EVAL_SEED_OFFSET = 1_000_003
# the settings of ShapesTrainingConfig that the command line sets
_OPTIONS = ("steps", "seed", "batch_size", "threads", "eval_scenes", "context_length")
_OPTIONS += ("vision_layers", "vision_hidden_size", "image_size", "patch_size", "text_layers")
# the settings that size both families' towers
_ARCHITECTURE = ("image_size", "patch_size", "context_length")
_ARCHITECTURE += tuple(
    f"{tower}_{size}" for tower in ("vision", "text") for size in ("hidden_size", "layers", "heads")
)


@dataclass(frozen=True)
class ShapesTrainingConfig:
    """Hyper-parameters of the shapes-world CLIP and its training run.

    The defaults are those of the bundled ``qdrant_xai/demo/model``. For ``family="siglip"``
    the embedding dimension is ``vision_hidden_size`` (``projection_dim`` is unused).
    """

    family: str = "clip"
    steps: int = 4000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 150
    seed: int = 0
    threads: int = 2
    scene_size: int = 128
    image_size: int = 64
    patch_size: int = 8
    vision_hidden_size: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden_size: int = 64
    text_layers: int = 3
    text_heads: int = 4
    context_length: int = 24
    projection_dim: int = 64
    eval_scenes: int = 200


@dataclass(frozen=True)
class ShapesEvaluation:
    """Held-out metrics of a shapes-world model, all fractions in ``[0, 1]``: ``scenes``
    unseen scenes; text-to-image ``recall_at_1``/``_5`` of full captions (an image is
    correct when it holds every object named); ``binding_accuracy``, how often an image
    scores its caption above the caption with colours swapped between objects; pointing-game
    accuracy over ``queries`` one-object queries of the per-patch decomposition heatmap
    (``pointing_decomposition``) and of raw patch-token similarity (``pointing_raw_patches``:
    the family's ``patch_tokens``; CLIP: ``visual_projection(post_layernorm(.))``).
    """

    scenes: int
    recall_at_1: float
    recall_at_5: float
    binding_accuracy: float
    pointing_decomposition: float
    pointing_raw_patches: float
    queries: int

    def summary(self) -> str:
        """Multi-line human-readable report."""
        return "\n".join(
            [
                f"held-out scenes:                   {self.scenes}",
                f"text->image Recall@1:              {self.recall_at_1:.1%}",
                f"text->image Recall@5:              {self.recall_at_5:.1%}",
                f"colour-binding accuracy:           {self.binding_accuracy:.1%}",
                f"pointing game, decomposition:      {self.pointing_decomposition:.1%}"
                f" ({self.queries} one-object queries)",
                f"pointing game, raw patch tokens:   {self.pointing_raw_patches:.1%}",
            ]
        )


def build_shapes_clip(config: ShapesTrainingConfig, *, words: Sequence[str] | None = None) -> Any:
    """Build the untrained ``(model, processor)`` of ``config.family`` (weights seeded by
    ``config.seed``); a SigLIP starts from the paper's ``t = 10`` and ``b = log(1/15)``, the
    log-odds of a true pair here (~20 of 320 texts; the paper's -10 suits 32k batches)."""
    words = WORLD_WORDS if words is None else words
    sizes = {name: getattr(config, name) for name in _ARCHITECTURE}
    torch.manual_seed(config.seed)
    if config.family == "siglip":
        processor = build_siglip_processor(
            words, image_size=config.image_size, max_length=config.context_length
        )
        model = SiglipModel(tiny_siglip_config(token_ids(processor.tokenizer), **sizes))
        with torch.no_grad():
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-math.log(15.0))
        return model, processor
    processor = build_clip_processor(
        words, image_size=config.image_size, model_max_length=config.context_length
    )
    clip_config = tiny_clip_config(
        processor.tokenizer, projection_dim=config.projection_dim, **sizes
    )
    return CLIPModel(clip_config), processor


def train_shapes_clip(
    config: ShapesTrainingConfig,
    *,
    log_every: int = 100,
    scenes: Iterator[Any] | None = None,
    batch_loss: Callable[..., torch.Tensor] | None = None,
    words: Sequence[str] | None = None,
    init: Path | None = None,
) -> tuple[Any, Any]:
    """Train a shapes-world CLIP or SigLIP from scratch (or go on training ``init``).

    Args:
        config: Model and training hyper-parameters.
        log_every: Print the running loss every this many steps (0: never).
        scenes: Training scenes (default: the shapes world with ``config.seed``); another
            world's trainer (``examples/train_clutter_clip.py``) passes its own.
        batch_loss: ``(model, processor, batch, rng) -> loss`` (default: this world's).
        words: The tokenizer's words (default: the shapes world's).
        init: A checkpoint folder to start from instead of fresh weights (its architecture
            and tokenizer win over ``config``'s).

    Returns:
        The trained model (in eval mode) and its processor.
    """
    torch.set_num_threads(config.threads)
    if init is None:
        model, processor = build_shapes_clip(config, words=words)
    else:
        model, processor = AutoModel.from_pretrained(init), AutoProcessor.from_pretrained(init)
    loss_of = _batch_loss if batch_loss is None else batch_loss
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _learning_rate_factor(step, config)
    )
    if scenes is None:
        scenes = generate_scenes(
            config.steps * config.batch_size, seed=config.seed, size=config.scene_size
        )
    running = 0.0
    started = time.perf_counter()
    for step in range(config.steps):
        batch = [next(scenes) for _ in range(config.batch_size)]
        rng = np.random.default_rng([config.seed, step])
        loss = loss_of(model, processor, batch, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(100.0))
        running += loss.item()
        if log_every and (step + 1) % log_every == 0:
            elapsed = time.perf_counter() - started
            print(
                f"step {step + 1:5d}/{config.steps}  loss {running / log_every:.4f}  "
                f"scale {model.logit_scale.exp().item():5.1f}  {elapsed:6.0f}s",
                flush=True,
            )
            running = 0.0
    model.eval()
    return model, processor


def save_shapes_clip(model: Any, processor: Any, output_dir: Path) -> None:
    """Save model (safetensors) and processor with ``save_pretrained``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, safe_serialization=True)
    # Calls with truncation/padding leave that state switched on in the fast tokenizer;
    # saved in tokenizer.json, it would make every later processor call pass max_length.
    processor.tokenizer.backend_tokenizer.no_truncation()
    processor.tokenizer.backend_tokenizer.no_padding()
    processor.save_pretrained(output_dir)
    (output_dir / "model.safetensors").chmod(0o644)  # written private; it ships as package data


def evaluate_shapes_clip(
    model: Any,
    processor: Any,
    *,
    n_scenes: int = 200,
    seed: int = _EVAL_SEED_OFFSET,
    scene_size: int = 128,
) -> ShapesEvaluation:
    """Measure retrieval, binding and pointing on ``n_scenes`` unseen scenes of
    ``scene_size`` pixels (``seed`` must differ from the training seed).

    ``model`` (CLIP or SigLIP) must be loaded with ``attn_implementation="eager"`` (the
    decomposition needs attention probabilities), as ``ClipEncoder.model`` is.
    """
    model.eval()
    scenes = list(generate_scenes(n_scenes, seed=seed, size=scene_size))
    pixel_values = processor(images=[s.image for s in scenes], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tower = family_of(model.config.model_type).run_image_tower(model, pixel_values)
        images = F.normalize(tower.embeds, dim=-1)  # [N, D]
        contributions = tower.contributions  # [N, gh, gw, D]
        raw = F.normalize(tower.patch_tokens, dim=-1)  # [N, gh, gw, D] patch tokens

        captions = _encode_texts(model, processor, [s.caption for s in scenes])  # [N, D]
        scores = captions @ images.T  # [N captions, N images]
        relevant = torch.tensor(
            [[_is_true(_pairs(a), _pairs(b)) for b in scenes] for a in scenes]
        )  # [N captions, N images]
        hits = relevant.gather(1, scores.argsort(dim=1, descending=True))
        recall_1 = hits[:, :1].any(dim=1).float().mean().item()
        recall_5 = hits[:, :5].any(dim=1).float().mean().item()

        swaps = [(i, swap_colours(_pairs(scene))) for i, scene in enumerate(scenes)]
        swapped = {i: caption_for(wrong) for i, wrong in swaps if wrong is not None}
        binding = float("nan")
        if swapped:
            rows = images[list(swapped)]
            right = _encode_texts(model, processor, [scenes[i].caption for i in swapped])
            wrong_scores = (rows * _encode_texts(model, processor, list(swapped.values()))).sum(-1)
            binding = ((rows * right).sum(-1) > wrong_scores).float().mean().item()

        queries = [(i, obj) for i, scene in enumerate(scenes) for obj in scene.objects]
        phrases = _encode_texts(model, processor, [obj.phrase for _, obj in queries])
        decomposition_hits = raw_hits = 0
        for (index, obj), phrase in zip(queries, phrases, strict=True):
            # [gh, gw] maps over the whole scene (square: the centre crop keeps all of it)
            decomposition_hits += pointing_game((contributions[index] @ phrase).numpy(), obj.mask)
            raw_hits += pointing_game((raw[index] @ phrase).numpy(), obj.mask)

    return ShapesEvaluation(
        scenes=n_scenes,
        recall_at_1=recall_1,
        recall_at_5=recall_5,
        binding_accuracy=binding,
        pointing_decomposition=decomposition_hits / len(queries),
        pointing_raw_patches=raw_hits / len(queries),
        queries=len(queries),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: train, save, reload, evaluate, write ``TRAINING.md``."""
    defaults = ShapesTrainingConfig()
    parser = argparse.ArgumentParser(
        prog="python examples/train_shapes_clip.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--family", choices=("clip", "siglip"), default=defaults.family)
    for name in _OPTIONS:  # --steps, --seed, --batch-size, --threads, ...
        parser.add_argument(
            "--" + name.replace("_", "-"), type=int, default=getattr(defaults, name)
        )
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.batch_size < 2:
        parser.error("--steps must be positive and --batch-size at least 2")
    config = ShapesTrainingConfig(**{name: getattr(args, name) for name in ("family", *_OPTIONS)})

    started = time.perf_counter()
    model, processor = train_shapes_clip(config)
    wall_time = time.perf_counter() - started
    save_shapes_clip(model, processor, args.out)
    print(f"saved to {args.out} after {wall_time:.0f}s of training", flush=True)

    # Evaluate what was saved, loaded the way users load it.
    reloaded = ClipEncoder.from_pretrained(args.out)
    evaluation = evaluate_shapes_clip(
        reloaded.model,
        reloaded.processor,
        n_scenes=config.eval_scenes,
        seed=config.seed + _EVAL_SEED_OFFSET,
        scene_size=config.scene_size,
    )
    print(evaluation.summary())
    command = " ".join([parser.prog, *(sys.argv[1:] if argv is None else argv)])
    (args.out / "TRAINING.md").write_text(
        _training_report(config, evaluation, command, wall_time, args.out), encoding="utf-8"
    )
    return 0


def _learning_rate_factor(step: int, config: ShapesTrainingConfig) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _batch_loss(
    model: Any, processor: Any, batch: Sequence[ShapeScene], rng: np.random.Generator
) -> torch.Tensor:
    """The family's loss (:func:`contrastive_loss`) over a batch and its hard negatives."""
    texts: list[list[Pair]] = []
    for scene in batch:  # full captions, in the scene's own order
        texts.append(_pairs(scene))
    for scene in batch:  # one-object phrases
        pairs = _pairs(scene)
        texts.append([pairs[int(rng.integers(len(pairs)))]])
    for scene in batch:  # hard negatives
        pairs = _pairs(scene)
        texts.append(swap_colours(pairs) or [recolour(pairs[0], rng)])
        texts.append([misbound_phrase(pairs, rng)])
        texts.append(reshape_one(pairs, rng))

    images = _encode_images(model, processor, [s.image for s in batch])
    text_embeds = _encode_texts(model, processor, [caption_for(t) for t in texts])
    positive = torch.tensor([[_is_true(t, _pairs(s)) for t in texts] for s in batch])  # [B, T]
    return contrastive_loss(model, images, text_embeds, positive)


def contrastive_loss(
    model: Any, images: torch.Tensor, texts: torch.Tensor, positive: torch.Tensor
) -> torch.Tensor:
    """The loss of ``model``'s family over normalised ``images`` [B, D] and ``texts``
    [T, D], ``positive`` [B, T] saying which text is true of which image: CLIP's
    multi-positive symmetric InfoNCE, or SigLIP's sigmoid loss, the mean over images of
    ``-sum_j log sigmoid(z_ij * (t * x_i . y_j + b))``, ``z_ij = +1`` where ``positive``
    else -1 (Zhai et al. 2023; the paper sums over pairs and divides by the batch size)."""
    logits = model.logit_scale.exp() * images @ texts.T  # [B, T]
    if family_of(model.config.model_type).name == "siglip":
        signs = positive.to(logits.dtype) * 2.0 - 1.0
        return -F.logsigmoid(signs * (logits + model.logit_bias)).sum() / logits.shape[0]
    image_to_text = _multi_positive_nce(logits, positive)
    has_image = positive.any(dim=0)  # texts true of no image only serve as negatives
    text_to_image = _multi_positive_nce(logits.T[has_image], positive.T[has_image])
    return 0.5 * (image_to_text + text_to_image)


def _multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """InfoNCE where each positive competes only against its row's negatives: the mean over
    ``positive`` (``[R, C]``, a positive in every row) of ``-log(e^pos / (e^pos + sum e^neg))``
    for scaled similarities ``logits`` ``[R, C]``."""
    negatives = logits.masked_fill(positive, float("-inf"))
    negative_lse = torch.logsumexp(negatives, dim=1, keepdim=True)  # [R, 1]
    return F.softplus(negative_lse - logits)[positive].mean()


def _encode_images(model: Any, processor: Any, images: list[Any]) -> torch.Tensor:
    """Normalised image embeddings, shape ``[len(images), D]``."""
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    return F.normalize(family_of(model.config.model_type).image_embeds(model, pixel_values), dim=-1)


def _encode_texts(model: Any, processor: Any, texts: list[str]) -> torch.Tensor:
    """Normalised text embeddings, shape ``[len(texts), D]``, padded as the family is."""
    family = family_of(model.config.model_type)
    tokens = processor.tokenizer(
        texts, padding=family.padding, truncation=True, return_tensors="pt"
    )
    embeds = family.text_embeds(model, tokens["input_ids"], tokens.get("attention_mask"))
    return F.normalize(embeds, dim=-1)


def _pairs(scene: ShapeScene) -> list[Pair]:
    return [(obj.color, obj.shape) for obj in scene.objects]


def _is_true(named: Sequence[Pair], scene_pairs: Sequence[Pair]) -> bool:
    """A text is true of a scene when the scene holds every object it names."""
    return set(named) <= set(scene_pairs)


def _training_report(
    config: ShapesTrainingConfig,
    evaluation: ShapesEvaluation,
    command: str,
    wall_time: float,
    out: Path,
) -> str:
    weights = out / "model.safetensors"
    size_mb = weights.stat().st_size / 1e6 if weights.exists() else float("nan")
    settings = "\n".join(f"| `{key}` | {value} |" for key, value in asdict(config).items())
    model = {"clip": "CLIP", "siglip": "SigLIP (sigmoid loss)"}[config.family]
    return f"""# shapes-{config.family}

A small {model} trained from scratch on the synthetic shapes world (`qdrant_xai.demo.world`)
by `examples/train_shapes_clip.py`. It knows {len(COLORS)} colours and the shapes circle,
square, triangle and cross, and is trained to bind colours to shapes so that per-patch
explanations point at the object a query names (the metrics below say how well). Useful
for tests and demos without downloading a model.

## Command

```
{command}
```

Seed {config.seed}; training wall time {wall_time / 60:.1f} min on {config.threads} CPU
threads ({platform.processor() or platform.machine()}, torch {torch.__version__});
`model.safetensors` is {size_mb:.1f} MB (fp32).

## Held-out metrics

{config.eval_scenes} unseen scenes (seed {config.seed + _EVAL_SEED_OFFSET}):

```
{evaluation.summary()}
```

Recall counts an image as correct when it contains every object the caption names.
Binding accuracy compares a scene's caption with the caption whose colours are swapped
between objects. The pointing game (`qdrant_xai.eval.pointing_game`) asks, for every object
of every scene, whether the argmax patch of the heatmap for the query `"a <colour> <shape>"`
overlaps the object's mask; the decomposition heatmap is the family's patch contributions
(`qdrant_xai.encoding.families`) dotted with the normalised text embedding, the raw one its
patch tokens (CLIP: `visual_projection(post_layernorm(.))`; SigLIP: the pooling head on each
token alone), normalised, dotted with it.

## Hyper-parameters

| setting | value |
|---|---|
{settings}
"""


if __name__ == "__main__":
    raise SystemExit(main())
