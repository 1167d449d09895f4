"""The clutter world: deterministic, hard on purpose, with truthful masks, kinds and relations."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from qdrant_xai.demo.clutter import (
    CLUTTER_WORDS,
    QUERY_KINDS,
    Relation,
    generate_clutter_scenes,
    query_kind,
    relation_between,
    relation_caption,
    word_roles,
)
from qdrant_xai.demo.world import COLORS, SHAPES
from qdrant_xai.testing import build_clip_tokenizer


@pytest.fixture(scope="module")
def scenes() -> list:
    return list(generate_clutter_scenes(60, seed=5))


def test_scenes_are_deterministic_and_seeds_differ(scenes: list) -> None:
    again = list(generate_clutter_scenes(3, seed=5))
    for a, b in zip(scenes[:3], again, strict=True):
        assert a.caption == b.caption
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    other = next(generate_clutter_scenes(1, seed=6))
    assert not np.array_equal(np.asarray(other.image), np.asarray(scenes[0].image))


def test_masks_are_visible_disjoint_and_named_once(scenes: list) -> None:
    for scene in scenes:
        assert 2 <= len(scene.objects) <= 5
        pairs = [(o.color, o.shape) for o in scene.objects]
        assert len(set(pairs)) == len(pairs)  # a phrase names exactly one object
        total = np.zeros_like(scene.objects[0].mask, dtype=int)
        for obj in scene.objects:
            assert obj.mask.sum() >= 60
            x0, y0, x1, y1 = obj.box
            assert obj.mask[y0:y1, x0:x1].sum() == obj.mask.sum()
            total += obj.mask
            assert obj.phrase in scene.caption
        assert total.max() <= 1  # visible parts never overlap


def test_the_world_is_hard_most_queries_share_colour_or_shape(scenes: list) -> None:
    kinds = Counter(query_kind(s, o) for s in scenes for o in s.objects)
    assert set(kinds) <= set(QUERY_KINDS)
    assert kinds["easy"] < 0.3 * sum(kinds.values())
    assert kinds["shares colour"] and kinds["shares shape"] and kinds["shares both"]


def test_relations_hold_and_turned_round_do_not(scenes: list) -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for scene in scenes:
        relation = relation_caption(scene, rng)
        if relation is None:
            continue
        checked += 1
        assert relation.holds_in(scene)
        assert not Relation(relation.other, relation.relation, relation.subject).holds_in(scene)
        subject = next(o for o in scene.objects if (o.color, o.shape) == relation.subject)
        other = next(o for o in scene.objects if (o.color, o.shape) == relation.other)
        assert relation_between(scene, subject, other) == relation.relation
    assert checked > 40


def test_word_roles_and_every_word_is_one_token() -> None:
    roles = word_roles("a red circle left of a blue square, a red cross and a green triangle")
    assert [r for _, r in roles][:5] == ["function", "colour", "shape", "relation", "relation"]
    assert {w for w, r in roles if r == "colour"} <= set(COLORS)
    assert {w for w, r in roles if r == "shape"} <= set(SHAPES)
    tokenizer = build_clip_tokenizer(CLUTTER_WORDS)
    for word in CLUTTER_WORDS:
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="n must be"):
        list(generate_clutter_scenes(-1))
    with pytest.raises(ValueError, match="at least 64"):
        list(generate_clutter_scenes(1, size=32))
