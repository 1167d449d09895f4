"""Hostile payloads against :meth:`Explainer.explain`, with hits built in memory.

Hits are ``models.ScoredPoint`` objects (what qdrant-client returns) whose payloads are
hostile versions of real points' payloads, explained on every layout with text and image
queries; and real points whose fields disagree with each other (words stored for another
text, crop boxes outside the recorded size). Only :class:`~qdrant_xai.QdrantXaiError`
subclasses may come out; a heatmap is finite, of the model's grid and drawn from features
whose fingerprint and shape matched (:func:`tests.hardening._fuzz.check_explanations`).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qdrant_client import models

from qdrant_xai import Explainer, PayloadKeys
from qdrant_xai.storage.layouts import LAYOUTS
from tests.hardening._fuzz import (
    CODECS,
    FAMILY,
    FuzzWorld,
    Tally,
    check_explanations,
    scored,
)
from tests.hardening._fuzz_strategies import hostile_payload, texts_near

pytestmark = pytest.mark.hardening


@pytest.mark.slow
def test_explainer_handles_hostile_payloads_in_memory(
    fuzz_world: FuzzWorld, figures: Any, fuzz_tally: Tally
) -> None:
    n = figures.count(FAMILY, "explainer, in-memory hits", reduced=300, full=2500)
    explainers = {
        name: Explainer(fuzz_world.encoder, image_roots=[fuzz_world.folder], layout=name)
        for name in LAYOUTS
    }
    overlays = Counter[str]()

    @settings(max_examples=n)
    @given(
        case=hostile_payload(fuzz_world),
        layout=st.sampled_from(sorted(LAYOUTS)) | st.just("qdrant-xai"),
        query=st.sampled_from(["a red circle", "image"]),
        words=st.sampled_from(["occlusion", "tokens"]),
        hit_kind=st.sampled_from([None, "image", "text"]),
        overlay=st.integers(0, 9),
    )
    def run(
        case: tuple[models.Record, dict[str, Any]],
        layout: str,
        query: str,
        words: str,
        hit_kind: Any,
        overlay: int,
    ) -> None:
        point, payload = case
        hits = [scored(point, payload)]
        asked = fuzz_world.query_image if query == "image" else query
        explanations = fuzz_tally.run(
            lambda: explainers[layout].explain(
                asked, hits, word_method=words, hit_kind=hit_kind, errors="raise"
            )
        )
        if explanations is None:
            return
        check_explanations(fuzz_world, payload, explanations, hits)
        e = explanations[0]
        if overlay == 0 and e.heatmap is not None and e.heatmap_side == "hit":
            image = fuzz_tally.run(e.overlay)  # reads the payload's source for stored features
            overlays["drawn" if image is not None else "refused"] += 1

    run()
    figures.record(
        FAMILY,
        "explainer, in-memory hits: overlays drawn / refused",
        f"{overlays['drawn']} / {overlays['refused']}",
    )
    assert not fuzz_tally.other


@st.composite
def inconsistent_payload(draw: st.DrawFn, world: FuzzWorld) -> tuple[models.Record, dict[str, Any]]:
    """A real point whose fields disagree: words and text, crop box and size."""
    codec = draw(st.sampled_from(CODECS))
    point = draw(st.sampled_from([world.images[codec], world.texts[codec]]))
    payload = copy.deepcopy(point.payload or {})
    if payload[PayloadKeys.KIND] == "text":
        words, text = payload[PayloadKeys.WORDS], payload[PayloadKeys.TEXT]
        if draw(st.booleans()):
            payload[PayloadKeys.TEXT] = draw(texts_near(text))
        else:
            shifted = [[w, a + 1, b + 1] for w, a, b in words]
            payload[PayloadKeys.WORDS] = draw(
                st.sampled_from([words[::-1], shifted, [[w.upper(), a, b] for w, a, b in words]])
            )
    else:
        w, h = payload[PayloadKeys.WIDTH], payload[PayloadKeys.HEIGHT]
        box = draw(
            st.lists(st.integers(-2, max(w, h) + 2), min_size=4, max_size=4)
            | st.sampled_from([[0, 0, w + 1, h], [0, 0, w, h + 1], [w, 0, 0, h], [0, 0, 0, 0]])
        )
        payload[PayloadKeys.CROP_BOX] = box
        if draw(st.booleans()):
            payload[draw(st.sampled_from([PayloadKeys.WIDTH, PayloadKeys.HEIGHT]))] = draw(
                st.sampled_from([1, 0, -w, True, float(w), str(w), None])
            )
    return point, payload


def test_explainer_refuses_fields_that_disagree(
    fuzz_world: FuzzWorld, figures: Any, fuzz_tally: Tally
) -> None:
    """Words stored for another text, crop boxes outside the recorded size: refused, never
    attributed to the wrong words or drawn over the wrong region."""
    n = figures.count(FAMILY, "explainer, fields that disagree", reduced=150, full=1000)
    explainer = Explainer(fuzz_world.encoder, image_roots=[fuzz_world.folder])

    @settings(max_examples=n)
    @given(
        case=inconsistent_payload(fuzz_world),
        query=st.sampled_from(["a red circle", "image"]),
        words=st.sampled_from(["tokens", "occlusion"]),
    )
    def run(case: tuple[models.Record, dict[str, Any]], query: str, words: str) -> None:
        point, payload = case
        hits = [scored(point, payload)]
        asked = fuzz_world.query_image if query == "image" else query
        explanations = fuzz_tally.run(
            lambda: explainer.explain(asked, hits, word_method=words, errors="raise")
        )
        if explanations is not None:
            check_explanations(fuzz_world, payload, explanations, hits)

    run()
    assert not fuzz_tally.other
