"""Ranking metrics: average precision, Recall@K, mAP and median rank, by hand."""

from __future__ import annotations

import pytest

from qdrant_xai.eval.retrieval import average_precision, summarize_ranks


def test_metrics_match_a_ranking_computed_by_hand() -> None:
    # relevant items of one query at ranks 1 and 3 of 2: AP = (1/1 + 2/3) / 2
    assert average_precision([1, 3], 2) == pytest.approx(5 / 6)
    assert average_precision([3, 1], 2) == pytest.approx(5 / 6)  # order of input irrelevant
    assert average_precision([2], 3) == pytest.approx(1 / 6)  # 2 relevant never retrieved
    assert average_precision([], 1) == 0.0

    # four queries, ranks counted up to 10: one misses (rank 11 for the median)
    metrics = summarize_ranks(
        [[1], [3], [], [2, 5]], [1, 1, 1, 2], ks=(1, 5, 10), cap=10, candidates=40
    )
    assert metrics.recall == {1: 0.25, 5: 0.75, 10: 0.75}
    assert metrics.mean_ap == pytest.approx((1 + 1 / 3 + 0 + (1 / 2 + 2 / 5) / 2) / 4)
    assert metrics.median_rank == 2.5  # median of first ranks 1, 2, 3, 11
    assert metrics.misses == 1 and metrics.queries == 4 and metrics.candidates == 40
