"""Quality of every method where the truth is known, on development and held-out pairs.

Small samples of the pairs of ``docs/explanations.md`` (other scene seeds than the table's):
every method beats the baselines on the development pair, and the defaults keep their
documented standing on a held-out model and world.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qdrant_xai import ClipEncoder
from qdrant_xai.testing import build_tiny_siglip
from tests.benchmarks import pairs
from tests.benchmarks.heatmap_quality import HARD
from tests.benchmarks.method_quality import evaluate_pair
from tests.benchmarks.method_tables import (
    BAR_HARD,
    BAR_POINTING,
    DEFAULT_HEATMAP,
    DEFAULT_WORDS,
    HEATMAP_ORDER,
    SIGLIP_GAP,
    WORD_ORDER,
    PairResult,
    render_markdown,
)

pytestmark = pytest.mark.slow

SEED = 777  # not the seed of the committed docs table, not a training stream


@pytest.fixture(scope="module")
def development(shapes_encoder: ClipEncoder) -> PairResult:
    return evaluate_pair(
        "shapes", pairs.MODELS[0], scenes=30, steps=8, seed=SEED, encoder=shapes_encoder
    )


@pytest.fixture(scope="module", params=["clutter-4l", "clutter-8l"])
def held_out(request: pytest.FixtureRequest) -> PairResult:
    model = next(m for m in pairs.MODELS if m.name == request.param)
    return evaluate_pair(
        "clutter",
        model,
        scenes=30,
        steps=8,
        seed=SEED,
        heatmap_methods=(DEFAULT_HEATMAP, "gae", "grad-eclip"),
        word_methods=(DEFAULT_WORDS, "tokens"),
    )


@pytest.mark.parametrize("method", [m for m in HEATMAP_ORDER if m != "patch"])
def test_image_method_beats_random_and_centre_prior(development: PairResult, method: str) -> None:
    row, random, centre = (development.heatmap(m) for m in (method, "random", "centre"))
    assert row and random and centre
    assert row.pointing.mean > max(random.pointing.mean, centre.pointing.mean) + 0.2, row
    assert row.energy.mean > max(random.energy.mean, centre.energy.mean), row
    assert row.deletion.mean < min(random.deletion.mean, centre.deletion.mean), row
    assert row.insertion.mean > random.insertion.mean, row


@pytest.mark.parametrize("method", WORD_ORDER)
def test_word_method_beats_random(development: PairResult, method: str) -> None:
    rows = {r.name: r for r in development.words}
    assert rows[method].content_first.value >= 0.8, rows[method]
    if method == DEFAULT_WORDS:  # 60 foil captions: too few to rank the weaker methods
        assert rows[method].foil_auc.value >= 0.75, rows[method]
    comp, suff = development.eraser[method]
    assert comp > development.eraser["random"][0] and suff < development.eraser["random"][1]


#: what a 30-scene sample must show of issue 15's bar (pointing >= 90 %, PG hard >= 85 %
#: on the 60 scenes of docs/explanations.md): a sample this size is within about 5 points
#: of the table's figure (95 % interval), so the sample bound is 5 points under the bar
SAMPLE_POINTING, SAMPLE_HARD = BAR_POINTING - 0.05, BAR_HARD - 0.05


def test_the_defaults_hold_on_a_held_out_model_and_world(held_out: PairResult) -> None:
    """Issue 15's bar on models and a world no method was developed on (a small sample):
    the default heatmap points at the named object and past same-coloured or same-shaped
    distractors, beats the centre prior, and keeps up with the gradient methods; the
    default words rank content first and separate true words from foils."""
    default, centre = held_out.heatmap(DEFAULT_HEATMAP), held_out.heatmap("centre")
    hard = held_out.heatmap(DEFAULT_HEATMAP, HARD)
    assert default and centre and hard and hard.pointing.n >= 60
    assert default.pointing.mean >= SAMPLE_POINTING, default
    assert hard.pointing.mean >= SAMPLE_HARD, hard
    assert default.pointing.mean > centre.pointing.mean + 0.3, (default, centre)
    for name in ("gae", "grad-eclip"):
        other = held_out.heatmap(name)
        assert other and default.pointing.mean >= other.pointing.mean - 0.05, (default, other)
    words = {r.name: r for r in held_out.words}
    assert words[DEFAULT_WORDS].content_first.value >= 0.9
    assert words[DEFAULT_WORDS].foil_auc.value >= 0.8


def test_the_held_out_siglip_points_within_reach_of_the_clip(development: PairResult) -> None:
    """Issue 18's goal on a small sample: the SigLIP never used while choosing its split
    points at the named object within 5 points of the CLIP trained on the same world (plus
    the sample's 5 points of slack, as above), and well above the centre prior."""
    model = next(m for m in pairs.SIGLIP_MODELS if m.held_out)
    siglip = evaluate_pair(
        "shapes",
        model,
        scenes=30,
        steps=8,
        seed=SEED,
        heatmap_methods=(DEFAULT_HEATMAP,),
        word_methods=("tokens",),
    )
    mine, centre = siglip.heatmap(DEFAULT_HEATMAP), siglip.heatmap("centre")
    clip = development.heatmap(DEFAULT_HEATMAP)
    assert mine and centre and clip
    assert mine.pointing.mean >= clip.pointing.mean - SIGLIP_GAP - 0.05, (mine, clip)
    assert mine.pointing.mean > centre.pointing.mean + 0.3, (mine, centre)


def test_markdown_lists_every_method_and_pair(
    development: PairResult, held_out: PairResult
) -> None:
    text = render_markdown([development, held_out], [], setup={"machine": "test"})
    for name in [*HEATMAP_ORDER, *WORD_ORDER, "random", "centre"]:
        assert f"| {name} |" in text
    assert f"clutter world × {held_out.model.name} (held out)" in text
    assert "shapes world × shapes-clip (development)" in text


def test_a_siglip_pair_has_the_rows_its_family_allows(
    tmp_path: Path, development: PairResult
) -> None:
    """SigLIP pairs skip the CLIP-only methods, use their own default words, and get the
    issue-18 comparison with the CLIP trained on the same world."""
    folder = build_tiny_siglip(tmp_path / "siglip")
    model = pairs.BenchModel("tiny-siglip", str(folder), True, "tiny, random", family="siglip")
    result = evaluate_pair("shapes", model, scenes=3, steps=4, seed=SEED)
    methods = {row.method for row in result.heatmaps}
    assert {DEFAULT_HEATMAP, "random", "centre"} <= methods
    assert not methods & {"grad-eclip", "gae", "gae-last", "debiased", "clip-surgery"}
    words = {row.name for row in result.words}
    assert "tokens" in words and DEFAULT_WORDS not in words
    text = render_markdown([development, result], [], setup={"machine": "test"})
    assert "- shapes × tiny-siglip (held out): pointing " in text
    summary = next(line for line in text.splitlines() if line.startswith("| shapes | tiny-siglip"))
    assert not summary.endswith("| - | - |")  # its own default words fill the word cells
