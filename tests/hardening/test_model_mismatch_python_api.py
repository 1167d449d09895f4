"""Model mismatch through the Python API: caught before any heatmap is drawn.

Collections written by one tiny CLIP (:mod:`tests.hardening._mismatch`) are explained with
another through :class:`~qdrant_xai.Explainer` (qdrant-xai collections intact, with a forged
or no fingerprint; foreign layouts; an offline explainer given hit vectors) and checked by
:func:`~qdrant_xai.check_vectors`. Each attempt must raise :class:`ModelMismatchError` (or
:class:`SchemaMismatchError` for a dimension) while the heatmap method, a counting subclass
of the decomposition, has not been called once; with the right model the same calls draw.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Explainer, ImageSourcePolicy, check_vectors
from tests.hardening._mismatch import (
    COUNTING,
    TEXT,
    CountingDecomposition,
    attempt,
    search_hits,
)

pytestmark = [pytest.mark.hardening, pytest.mark.usefixtures("counting_method")]

TUTORIAL = "qdrant-tutorial"


def test_python_api_catches_every_mismatch_before_drawing(
    mismatch_world: QdrantClient,
    tiny_encoder: ClipEncoder,
    other_encoder: ClipEncoder,
    wide_encoder: ClipEncoder,
    mismatch_scenes: Path,
    figures: Any,
) -> None:
    client, a, other, wide = mismatch_world, tiny_encoder, other_encoder, wide_encoder
    image = mismatch_scenes / "scene_0002.png"
    roots = [mismatch_scenes]

    def explain(
        encoder: ClipEncoder,
        collection: str,
        query: Any,
        hits: list[Any],
        layout: str = "qdrant-xai",
        **kw: Any,
    ) -> Any:
        return Explainer(
            encoder,
            client,
            collection_name=collection,
            layout=layout,
            image_roots=roots,
            heatmap_method=COUNTING,
        ).explain(query, hits, errors="raise", **kw)

    def explain_search(
        encoder: ClipEncoder,
        collection: str,
        query: Any,
        target: str,
        *,
        searched_by: ClipEncoder = a,
        layout: str = "qdrant-xai",
        **kw: Any,
    ) -> Any:
        """Explains with ``encoder`` the ``target`` hits ``searched_by`` finds."""
        hits = search_hits(client, searched_by, collection, query, target, layout)
        return explain(encoder, collection, query, hits, layout=layout, **kw)

    def offline(encoder: ClipEncoder) -> Any:
        """An explainer without a client, given image hits of W's tutorial collection."""
        return Explainer(
            encoder, None, image_roots=roots, layout=TUTORIAL, heatmap_method=COUNTING
        ).explain(
            TEXT, _with_vectors(client, wide, "tutorial_by_w"), hit_kind="image", errors="raise"
        )

    by_a_images = search_hits(client, a, "by_a", TEXT, "image")
    by_a_texts = search_hits(client, a, "by_a", image, "text")
    sources = ImageSourcePolicy.from_roots(roots)
    cases: dict[str, Callable[[], object]] = {
        "image points by another model (same dimension)": lambda: explain(
            other, "by_a", TEXT, by_a_images
        ),
        "text points by another model (same dimension), image query": lambda: explain(
            other, "by_a", image, by_a_texts
        ),
        "image points by a model of another dimension": lambda: explain(
            wide, "by_a", TEXT, by_a_images
        ),
        "text points by a model of another dimension": lambda: explain(
            wide, "by_a", image, by_a_texts
        ),
        "image->image hits by another model": lambda: explain_search(other, "by_a", image, "image"),
        "payload fingerprint forged to this model, features by another": lambda: explain_search(
            other, "forged", TEXT, "image"
        ),
        "image points without fingerprint, features by another model": lambda: explain_search(
            other, "unsigned", TEXT, "image"
        ),
        "text points without fingerprint, vectors by another model": lambda: explain_search(
            other, "unsigned", image, "text"
        ),
        "text->text hits without fingerprint, vectors by another model": lambda: explain_search(
            other, "unsigned", TEXT, "text"
        ),
        "foreign layout (tutorial) image vectors by another model": lambda: explain_search(
            a, "tutorial_by_b", TEXT, "image", searched_by=other, layout=TUTORIAL, hit_kind="image"
        ),
        "foreign layout (tutorial) text vectors by another model": lambda: explain_search(
            a, "tutorial_by_b", image, "text", searched_by=other, layout=TUTORIAL, hit_kind="text"
        ),
        "foreign layout (langchain) vectors by another model": lambda: explain_search(
            a, "langchain_by_b", TEXT, "image", searched_by=other, layout="langchain"
        ),
        "foreign layout (tutorial) vectors of another dimension": lambda: explain_search(
            a, "tutorial_by_w", TEXT, "image", searched_by=wide, layout=TUTORIAL, hit_kind="image"
        ),
        "offline explainer, hit vectors of another dimension": lambda: offline(a),
        "check_vectors: foreign vectors by another model": lambda: check_vectors(
            client, "tutorial_by_b", a, layout=TUTORIAL, sources=sources, sample=4
        ),
        "check_vectors: foreign vectors of another dimension": lambda: check_vectors(
            client, "tutorial_by_w", a, layout=TUTORIAL, sources=sources
        ),
    }
    failures = [f for kind, run in cases.items() if (f := attempt(figures, kind, run))]
    figures.add("mismatch", "Python API kinds tried", len(cases))
    # with the right model the same calls draw their heatmaps (no false alarm, and the
    # counter does count)
    CountingDecomposition.drawn = 0
    explain(a, "by_a", TEXT, by_a_images)
    explain(a, "by_a", image, by_a_texts)
    explain_search(
        other, "tutorial_by_b", TEXT, "image", searched_by=other, layout=TUTORIAL, hit_kind="image"
    )
    explain_search(
        other,
        "langchain_by_b",
        image,
        "text",
        searched_by=other,
        layout="langchain",
        hit_kind="text",
    )
    offline(wide)
    assert CountingDecomposition.drawn == 5
    assert not failures, "\n".join(failures)


def _with_vectors(client: QdrantClient, encoder: ClipEncoder, collection: str) -> list[Any]:
    """Image hits of a tutorial-layout collection carrying their vectors and payloads."""
    query = encoder.embed_texts([TEXT])[0].tolist()
    return client.query_points(
        collection, query=query, using="image", limit=2, with_payload=True, with_vectors=True
    ).points
