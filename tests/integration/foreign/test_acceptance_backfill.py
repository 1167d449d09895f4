"""Issue 13: backfilling and explaining never touch the source collection. Every point
(vectors and payload) stays byte-identical, the user's search responses stay the same, the
sidecar ``<collection>__xai`` holds the features, and a second explanation reads no image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Explainer
from tests.integration.foreign._backends import CliRun, Qdrant
from tests.integration.foreign._checks import (
    QUERY,
    check_explained,
    delete_image_files,
    json_records,
    search_args,
)
from tests.integration.foreign.writers import (
    Written,
    collection_names,
    library_search,
    point_key,
    query_vector,
    snapshot,
    user_search,
)


def sidecar_ids(client: QdrantClient, collection_name: str) -> set[str]:
    records, _ = client.scroll(f"{collection_name}__xai", limit=1000, with_payload=False)
    return {point_key(r.id) for r in records}


class UserView:
    """The source collection as its user sees it: every point, and the responses of the
    user's searches (a text and an image query, raw and through the library).

    Points are read in a client of their own: qdrant-client's embedded mode returns stored
    cosine vectors as written until a query in the same session normalises them in memory.
    """

    def __init__(self, qdrant: Qdrant, written: Written, encoder: ClipEncoder) -> None:
        self.qdrant, self.written, self.encoder = qdrant, written, encoder
        self.text = query_vector(encoder, QUERY)
        self.image = [float(x) for x in encoder.embed_images([written.scenes.items[-1].image])[0]]
        self.before = self.state()

    def state(self) -> dict[str, Any]:
        n, written = len(self.written.points), self.written
        with self.qdrant.open() as client:
            state: dict[str, Any] = {"points": snapshot(client, written.collection_name)}
        with self.qdrant.open() as client:
            state["text search"] = user_search(client, written, self.text, n)
            state["image search"] = user_search(client, written, self.image, n)
            state["library search"] = library_search(client, written, self.encoder, QUERY, n)
        return state

    def check_unchanged(self, when: str) -> None:
        after = self.state()
        before, now = self.before["points"], after["points"]
        for key in ("params", "points_count"):
            assert getattr(now, key) == getattr(before, key), f"collection {key} changed {when}"
        changed = sorted(i for i, p in before.payloads.items() if now.payloads.get(i) != p)
        assert not changed, f"payloads of {changed} changed {when}: " + "; ".join(
            f"{before.payloads[i][:300]} -> {now.payloads.get(i, '')[:300]}" for i in changed[:2]
        )
        for part, value in self.before.items():
            assert after[part] == value, f"{part} changed {when}"


def _explained(run: CliRun, written: Written) -> dict[str, dict[str, Any]]:
    records = json_records(run)
    assert set(records) == {p.id for p in written.points}, run.err or run.out[:2000]
    points = written.by_id()
    for point_id, record in records.items():
        check_explained(record, points[point_id])
    return records


@pytest.mark.slow
def test_backfill_and_explain_leave_the_source_untouched(
    written: Written, qdrant: Qdrant, cli: Callable[..., CliRun], tiny_encoder: ClipEncoder
) -> None:
    name, root = written.collection_name, str(written.scenes.root)
    images = {p.id for p in written.of_kind("image")}
    view = UserView(qdrant, written, tiny_encoder)

    first = cli(*search_args(written, QUERY, "--json"))  # explaining writes through
    first_records = _explained(first, written)
    view.check_unchanged("after explaining")
    if images:
        with qdrant.open() as client:
            assert images <= sidecar_ids(client, name)

    run = cli("backfill", "--collection", name, "--image-root", root, "--no-progress")
    if images:
        assert run.code == 0, run.out + run.err
    view.check_unchanged("after backfill")
    with qdrant.open() as client:
        assert f"{name}__xai" in collection_names(client) or not images
        if images:
            assert images <= sidecar_ids(client, name) <= {p.id for p in written.points}

    delete_image_files(written)  # from now on, any image read would fail
    second = cli(*search_args(written, QUERY, "--json"))
    second_records = _explained(second, written)
    assert second.code == 0, second.err
    for point_id in images:
        np.testing.assert_allclose(
            second_records[point_id]["heatmap"], first_records[point_id]["heatmap"], atol=2e-3
        )
    with qdrant.open() as client:
        hits = client.query_points(
            name, query=view.text, using=written.using, limit=len(written.points)
        ).points
        explanations = Explainer(
            tiny_encoder, client, collection_name=name, image_roots=[written.scenes.root]
        ).explain(QUERY, hits)
    view.check_unchanged("after the second explanation")
    for e in explanations:
        assert e.ok, e.error
        if point_key(e.id) in images:
            assert e.image is None, f"hit {e.id} was read again: {e.image_source}"
