"""Issue 13: ``qdrant-xai search ... --explain --json`` without ``--layout`` explains every
hit it can and reports each one it cannot with a reason; no text document is read as an
image; LlamaIndex text hits pass the vector check."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.foreign._backends import CliRun, Qdrant
from tests.integration.foreign._checks import (
    QUERY,
    check_explained,
    check_failed,
    json_records,
    search_args,
    spoil,
)
from tests.integration.foreign.writers import Written


@pytest.mark.parametrize("query_kind", ["text", "image"])
def test_search_explains_every_hit_without_layout(
    written: Written, cli: Callable[..., CliRun], query_kind: str
) -> None:
    query = QUERY if query_kind == "text" else f"--image={written.scenes.items[0].image}"
    run = cli(*search_args(written, query, "--json"))
    records = json_records(run)
    assert set(records) == {p.id for p in written.points}, run.err or run.out[:2000]
    points = written.by_id()
    for point_id, record in records.items():
        check_explained(record, points[point_id])
    assert run.code == 0, run.err


def test_search_reports_each_hit_it_cannot_explain(
    written: Written, qdrant: Qdrant, cli: Callable[..., CliRun]
) -> None:
    with qdrant.open() as client:
        spoiled = spoil(client, written)
    run = cli(*search_args(written, QUERY, "--json"))
    records = json_records(run)
    assert set(records) == {p.id for p in written.points}, run.err or run.out[:2000]
    points = written.by_id()
    for point_id, record in records.items():
        if point_id in spoiled:
            check_failed(record, points[point_id])
            assert spoiled[point_id] in record["error"]["message"], record["error"]
        else:
            check_explained(record, points[point_id])
    assert run.code != 0, "a hit failed: the exit code must say so"
    assert len(run.err) < 2000, run.err[:3000]
