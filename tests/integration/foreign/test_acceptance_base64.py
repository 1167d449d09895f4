"""Issue 13: raw base64 images (``Chroma.add_images``' layout in LangChain, LlamaIndex's
``ImageNode(image=...)``) are explained, and a broken one is reported without repeating its
base64 (the issue saw 44 k characters of it on the CLI)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qdrant_xai import ClipEncoder, Explainer
from tests.integration.foreign._backends import CliRun, Qdrant
from tests.integration.foreign._checks import (
    MAX_ERROR,
    QUERY,
    add_broken_inline_image,
    check_explained,
    check_failed,
    json_records,
    search_args,
    truncated_base64,
)
from tests.integration.foreign.writers import Written, point_key, query_vector

INLINE_WRITERS = ["langchain-images", "langchain-mixed", "llamaindex-images", "llamaindex-mixed"]


@pytest.mark.slow
@pytest.mark.parametrize("written", INLINE_WRITERS, indirect=True)
def test_broken_base64_image_is_reported_briefly(
    written: Written, qdrant: Qdrant, cli: Callable[..., CliRun], tiny_encoder: ClipEncoder
) -> None:
    b64 = truncated_base64()
    assert len(b64) > 40_000
    with qdrant.open() as client:
        broken = add_broken_inline_image(client, written, tiny_encoder, b64)
    points = {**written.by_id(), broken.id: broken}
    head = b64[:200]

    run = cli(*search_args(written, QUERY, "--json", limit=len(points)))
    records = json_records(run)
    assert set(records) == set(points), run.err or run.out[:2000]
    for point_id, record in records.items():
        if point_id == broken.id:
            check_failed(record, broken)
            assert head not in record["error"]["message"]
        else:
            check_explained(record, points[point_id])
    assert run.code != 0 and len(run.err) < 2000 and head not in run.err, run.err[:3000]

    plain = cli(*search_args(written, QUERY, limit=len(points)))
    assert head not in plain.out + plain.err, (plain.out + plain.err)[:3000]
    assert max(map(len, (plain.out + plain.err).splitlines()), default=0) < MAX_ERROR

    with qdrant.open() as client:
        hits = client.query_points(
            written.collection_name,
            query=query_vector(tiny_encoder, QUERY),
            using=written.using,
            limit=len(points),
        ).points
        explanations = Explainer(
            tiny_encoder,
            client,
            collection_name=written.collection_name,
            image_roots=[written.scenes.root],
        ).explain(QUERY, hits)
    by_id = {point_key(e.id): e for e in explanations}
    failed = by_id[broken.id]
    assert not failed.ok and len(str(failed.error)) < MAX_ERROR and head not in str(failed.error)
    assert all(e.ok for i, e in by_id.items() if i != broken.id)
