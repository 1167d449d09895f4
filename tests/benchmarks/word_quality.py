"""How faithful each word method is: content word first and true-vs-foil AUC, with intervals.

An item is an image, its true caption, and a *foil caption*: the caption with one content
word swapped so that its phrase is false for the image ("a blue circle" where the circle
is red). For each word method:

* **content word first**: the top-scored word of the true caption, against its image, is a
  content word (the world says which words are);
* **foil AUC**: on the foil caption, ``P(a_true > a_foil)`` over (true content word, foil
  word) pairs, pooled over items (:func:`qdrant_xai.eval.foil_auc`).

Both come with bootstrap 95 % intervals over items, and the AUC is split by item kind
(e.g. colour or shape foils). The item type is world-agnostic: :func:`shapes_foil_items`
builds items from the shapes world; other worlds build the same :class:`FoilItem`.

Run it::

    python -m tests.benchmarks.word_quality --scenes 300 --methods prefix tokens occlusion
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.encoding.words import split_words
from qdrant_xai.eval.foils import Estimate, bootstrap_ratio, foil_auc
from qdrant_xai.explain.base import WordMethod, word_method

__all__ = [
    "FoilItem",
    "WordQuality",
    "evaluate_word_quality",
    "fitting_items",
    "percent",
    "render_word_quality",
    "shapes_foil_items",
]

#: the held-out seed of the quality benchmarks (the bundled model trained on seeds 0..)
WORD_SEED = 4242


@dataclass(frozen=True)
class FoilItem:
    """One image with a true caption and a foil caption (any world).

    Attributes:
        image: what ``ClipEncoder.embed_images`` takes (a PIL image, a path, bytes).
        caption: the true caption.
        caption_content: indices (into ``split_words(caption)``) of its content words.
        foil_caption: the caption with one content word swapped (false for the image).
        foil_index: index (into ``split_words(foil_caption)``) of the swapped word.
        foil_true: indices of the foil caption's other content words (true for the image).
        kind: a label to split results by (e.g. ``"colour"``, ``"shape"``).
    """

    image: Any = field(repr=False)
    caption: str
    caption_content: tuple[int, ...]
    foil_caption: str
    foil_index: int
    foil_true: tuple[int, ...]
    kind: str = ""


@dataclass(frozen=True)
class WordQuality:
    """Faithfulness of one word method (or a baseline) over items.

    Attributes:
        name: the method's name.
        content_first: rate of true captions whose top word is a content word.
        foil_auc: pooled true-vs-foil AUC over the foil captions.
        foil_auc_by_kind: the AUC per item kind.
        items: how many items.
    """

    name: str
    content_first: Estimate
    foil_auc: Estimate
    foil_auc_by_kind: dict[str, Estimate]
    items: int


def evaluate_word_quality(
    encoder: ClipEncoder,
    items: Sequence[FoilItem],
    methods: Sequence[str | WordMethod],
    *,
    baseline: bool = True,
    resamples: int = 2000,
    seed: int = 0,
) -> list[WordQuality]:
    """Content-word-first and foil AUC of each method (and a random baseline) on ``items``."""
    if not items:
        raise ValueError("no items to evaluate")
    targets = encoder.embed_images([item.image for item in items])
    captions = [item.caption for item in items]
    foils = [item.foil_caption for item in items]
    scored: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for method in methods:
        built = word_method(method)
        true_scores = [s for _, s in built.attribute(encoder, captions, targets)]
        foil_scores = [s for _, s in built.attribute(encoder, foils, targets)]
        scored[built.name] = (true_scores, foil_scores)
    if baseline:
        rng = np.random.default_rng(seed)
        scored["random"] = (
            [rng.random(len(split_words(c))) for c in captions],
            [rng.random(len(split_words(f))) for f in foils],
        )
    kinds = sorted({item.kind for item in items})
    rows = []
    for name, (true_scores, foil_scores) in scored.items():
        first = [
            float(int(np.argmax(s)) in item.caption_content) if len(s) else 0.0
            for s, item in zip(true_scores, items, strict=True)
        ]
        by_kind = {}
        for kind in kinds:
            chosen = [k for k, item in enumerate(items) if item.kind == kind]
            by_kind[kind] = foil_auc(
                [foil_scores[k] for k in chosen],
                [items[k].foil_index for k in chosen],
                [items[k].foil_true for k in chosen],
                resamples=resamples,
                seed=seed,
            )
        rows.append(
            WordQuality(
                name=name,
                content_first=bootstrap_ratio(first, resamples=resamples, seed=seed),
                foil_auc=foil_auc(
                    foil_scores,
                    [item.foil_index for item in items],
                    [item.foil_true for item in items],
                    resamples=resamples,
                    seed=seed,
                ),
                foil_auc_by_kind=by_kind,
                items=len(items),
            )
        )
    return rows


def fitting_items(encoder: ClipEncoder, items: Sequence[FoilItem]) -> list[FoilItem]:
    """The items whose true and foil captions fit the model's text context whole (a model
    trained with a short context, e.g. ``shapes-siglip`` on the shapes world's captions,
    cannot read a long clutter caption to its end, so its words past the context have no
    score to rank)."""
    return [
        item
        for item in items
        if all(
            encoder.words_in_context(text) == len(split_words(text))
            for text in (item.caption, item.foil_caption)
        )
    ]


def shapes_foil_items(n_scenes: int, *, seed: int = WORD_SEED) -> list[FoilItem]:
    """Two foil items per shapes-world scene: one colour foil and one shape foil (see
    :func:`tests.benchmarks.pairs.foil_items`, which builds them for any world).

    Each swaps one object's colour (or shape) for one that makes the pair absent from the
    scene; the kind says which, and whether the new word names another object of the
    scene (``"colour, elsewhere"``: "a blue circle" where the circle is red and a square
    is blue) or none (``"colour"``).
    """
    from tests.benchmarks.pairs import foil_items  # pairs builds on this module's FoilItem

    return foil_items("shapes", n_scenes, seed=seed)


def render_word_quality(rows: Sequence[WordQuality], *, setup: str = "") -> list[str]:
    """Markdown lines: one table row per method, intervals in brackets."""
    kinds = sorted({kind for row in rows for kind in row.foil_auc_by_kind})
    lines = [setup, ""] if setup else []
    lines += [
        "| method | content word first | foil AUC | "
        + " | ".join(f"AUC: {kind}" for kind in kinds)
        + " |",
        "|---|---|---|" + "---|" * len(kinds),
    ]
    for row in rows:
        cells = [percent(row.content_first), str(row.foil_auc)]
        cells += [str(row.foil_auc_by_kind[k]) if k in row.foil_auc_by_kind else "-" for k in kinds]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    n_pairs = {kind: 0 for kind in kinds}
    for kind in kinds:
        n_pairs[kind] = rows[0].foil_auc_by_kind[kind].n if rows else 0
    lines += [
        "",
        f"{rows[0].items if rows else 0} items ("
        + ", ".join(f"{kind}: {n}" for kind, n in n_pairs.items())
        + "); bootstrap 95 % intervals over items.",
    ]
    return lines


def percent(estimate: Estimate) -> str:
    """``98.3% [96.0%, 100.0%]``: a rate with its interval."""
    return f"{estimate.value:.1%} [{estimate.low:.1%}, {estimate.high:.1%}]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=300, help="held-out shapes scenes")
    parser.add_argument("--model", default="shapes", help="CLIP checkpoint (default: shapes)")
    parser.add_argument(
        "--methods", nargs="+", default=["prefix", "tokens", "occlusion"], help="word methods"
    )
    args = parser.parse_args(argv)
    encoder = ClipEncoder.from_pretrained(args.model)
    items = shapes_foil_items(args.scenes)
    rows = evaluate_word_quality(encoder, items, args.methods)
    setup = f"Shapes world, {args.scenes} scenes (seed {WORD_SEED}), model {args.model!r}."
    print("\n".join(render_word_quality(rows, setup=setup)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
