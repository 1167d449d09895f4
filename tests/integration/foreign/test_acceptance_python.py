"""Issue 13, from Python: ``Explainer(encoder, client, collection_name=...)`` detects the
layout and returns one explanation per hit of the user's own search; a hit it cannot
explain carries its reason (``ok`` false, ``error`` set) and the others are explained."""

from __future__ import annotations

import pytest

from qdrant_xai import ClipEncoder, Explainer, QdrantXaiError
from tests.integration.foreign._backends import Qdrant
from tests.integration.foreign._checks import MAX_ERROR, QUERY, spoil
from tests.integration.foreign.writers import Written, point_key


@pytest.mark.parametrize("query_kind", ["text", "image"])
def test_explainer_detects_the_layout_and_reports_per_hit(
    written: Written, qdrant: Qdrant, tiny_encoder: ClipEncoder, query_kind: str
) -> None:
    query_image = written.scenes.items[-1].image
    vector = (
        tiny_encoder.embed_texts([QUERY])[0]
        if query_kind == "text"
        else tiny_encoder.embed_images([query_image])[0]
    )
    with qdrant.open() as client:
        spoiled = spoil(client, written)
        hits = client.query_points(  # the user's own search, as their library sends it
            written.collection_name,
            query=[float(x) for x in vector],
            using=written.using,
            limit=len(written.points),
        ).points
        explainer = Explainer(
            tiny_encoder,
            client,
            collection_name=written.collection_name,
            image_roots=[written.scenes.root],
        )
        query = QUERY if query_kind == "text" else query_image
        explanations = explainer.explain(query, hits)
        with pytest.raises(QdrantXaiError):
            explainer.explain(query, hits, errors="raise")
    assert [e.id for e in explanations] == [h.id for h in hits]
    assert {point_key(h.id) for h in hits} == {p.id for p in written.points}
    points = written.by_id()
    for e in explanations:
        point = points[point_key(e.id)]
        if point.id in spoiled:
            assert not e.ok and e.status == "failed", e
            assert isinstance(e.error, QdrantXaiError), e.error
            assert len(str(e.error)) < MAX_ERROR and spoiled[point.id] in str(e.error)
            assert e.heatmap is None and e.words == ()
            with pytest.raises(QdrantXaiError):
                e.raise_for_status()
            continue
        assert e.ok and e.status == "ok", f"{point}: {e.error!r}"
        assert e.hit_kind == point.kind, point
        if point.kind == "image":
            assert e.heatmap is not None and e.heatmap_side == "hit"
        else:
            assert e.heatmap_side != "hit" and e.words
