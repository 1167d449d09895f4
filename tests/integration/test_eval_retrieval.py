"""Retrieval evaluation through Qdrant: sensible metrics, explaining changes no ranking, an
explainer that changes anything is caught, and ``qdrant-xai eval``.

The data is the shapes world written in the formats real datasets come in
(:mod:`tests.unit.eval.flickr_world`); the readers and the ranking metrics are tested
without Qdrant in ``tests/unit/eval``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from qdrant_client import QdrantClient
from qdrant_client.models import PointStruct

from qdrant_xai import ClipEncoder
from qdrant_xai.cli import main
from qdrant_xai.eval.datasets import RetrievalDataset, read_dataset
from qdrant_xai.eval.report import EvaluationReport
from qdrant_xai.eval.retrieval import evaluate
from tests.unit.eval.flickr_world import N_IMAGES, write_flickr_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_flickr_world(tmp_path_factory.mktemp("flickr-shapes"))


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The shapes model is tiny: on a shared 2-core machine one torch thread is several times
    faster than two fighting other jobs for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def memory() -> Iterator[QdrantClient]:
    client = QdrantClient(":memory:")
    yield client
    client.close()


# -- evaluation -------------------------------------------------------------------------


def _reference_ranks(
    encoder: ClipEncoder, dataset: RetrievalDataset
) -> tuple[list[int], list[int]]:
    """Rank of each caption's image, by brute force in numpy, and for each image the best
    and worst possible rank of its first caption (identical captions of other images tie)."""
    items = dataset.items
    images = encoder.embed_images([item.path for item in items]).astype(np.float64)
    owners = [i for i, item in enumerate(items) for _ in item.captions]
    texts = encoder.embed_texts([c for item in items for c in item.captions]).astype(np.float64)
    t2i = texts @ images.T
    text_ranks = [int((row > row[owner]).sum()) + 1 for row, owner in zip(t2i, owners, strict=True)]
    i2t = images @ texts.T
    best, worst = [], []
    for i, row in enumerate(i2t):
        top = max(row[j] for j, owner in enumerate(owners) if owner == i)
        best.append(int((row > top + 1e-6).sum()) + 1)
        worst.append(int((row >= top - 1e-6).sum()))
    return text_ranks, best + worst


def test_evaluate_gives_sensible_metrics_and_explaining_changes_no_ranking(
    client: QdrantClient,
    collection_name: str,
    shapes_encoder: ClipEncoder,
    world: Path,
) -> None:
    dataset = read_dataset(world, split="all")
    report = evaluate(
        client, shapes_encoder, dataset, collection_name=collection_name, explain_top=5
    )
    t2i, i2t = report.metrics["text_to_image"], report.metrics["image_to_text"]
    assert (t2i.queries, i2t.queries) == (dataset.n_captions, N_IMAGES)
    assert (t2i.candidates, i2t.candidates) == (N_IMAGES, dataset.n_captions)
    for m in (t2i, i2t):
        assert 0.0 <= m.recall[1] <= m.recall[5] <= m.recall[10] <= 1.0
        assert 0.0 <= m.mean_ap <= 1.0 and m.median_rank >= 1 and m.misses == 0
    # far above chance (1/14 for R@1 text->image) for the model trained on this world
    assert t2i.recall[1] >= 0.7 and t2i.recall[5] >= 0.9 and i2t.recall[5] >= 0.9

    # the same numbers by brute force outside Qdrant
    text_ranks, bounds = _reference_ranks(shapes_encoder, dataset)
    assert t2i.recall == {k: np.mean(np.array(text_ranks) <= k) for k in (1, 5, 10)}
    assert t2i.mean_ap == pytest.approx(np.mean(1 / np.array(text_ranks)))
    assert t2i.median_rank == np.median(text_ranks)
    best, worst = np.array(bounds[:N_IMAGES]), np.array(bounds[N_IMAGES:])
    for k in (1, 5, 10):
        assert np.mean(worst <= k) <= i2t.recall[k] <= np.mean(best <= k)

    invariance = report.invariance
    assert invariance is not None
    assert invariance.invariant, invariance.line()
    assert invariance.queries_compared == dataset.n_captions + N_IMAGES
    assert invariance.same_ids == invariance.queries_compared
    assert invariance.hits_untouched and invariance.query_vectors_identical
    assert invariance.explained_hits == 5 * invariance.queries_compared
    if invariance.backend_repeatable:  # a server: nothing less than bit for bit
        assert invariance.rankings_identical and invariance.verdict == "identical"
    else:  # embedded: the same search twice differs in the last bits already
        assert invariance.max_score_difference <= 1e-6
    assert report.explained_metrics == report.metrics

    assert report.indexing["indexed_images"] == N_IMAGES
    table = report.format_table()
    assert "Text -> Image" in table and "Search + explanations" in table
    assert "median rank" in table and "Ranking invariance: IDENTICAL" in table


def test_limit_reuse_and_points_of_other_images(
    memory: QdrantClient, shapes_encoder: ClipEncoder, world: Path
) -> None:
    def run(limit: int, reuse: bool = True) -> EvaluationReport:
        dataset = read_dataset(world, split="all", max_images=limit)
        return evaluate(
            memory, shapes_encoder, dataset, collection_name="reuse", explain=False, reuse=reuse
        )

    first = run(4)
    assert first.indexing["indexed_images"] == 4 and first.invariance is None
    assert first.metrics["text_to_image"].candidates == 4
    assert "not checked" in first.format_table()

    again = run(4)
    assert again.indexing["indexed_images"] == again.indexing["indexed_texts"] == 0
    assert again.indexing["unchanged"] == 4
    assert again.to_dict()["metrics"] == first.to_dict()["metrics"]

    more = run(7)
    assert more.indexing["indexed_images"] == 3 and more.indexing["unchanged"] == 4

    # the collection now holds 7 images: a 4-image run ranks only its own points
    fewer = run(4)
    assert fewer.settings["filtered"] == {"text_to_image": True, "image_to_text": True}
    assert fewer.to_dict()["metrics"] == first.to_dict()["metrics"]

    fresh = run(4, reuse=False)
    assert fresh.indexing["indexed_images"] == 4 and fresh.indexing["unchanged"] == 0


@pytest.mark.parametrize(
    "sabotage", ["reorder the hits", "change the collection", "change the model"]
)
def test_an_explainer_that_changes_anything_is_caught(
    memory: QdrantClient,
    shapes_encoder: ClipEncoder,
    world: Path,
    monkeypatch: pytest.MonkeyPatch,
    sabotage: str,
) -> None:
    from qdrant_xai.explain import Explainer

    original = Explainer.explain
    calls = []

    def explain(self: Explainer, query: object, hits: list, **kwargs: object) -> list:
        result = original(self, query, hits, **kwargs)  # type: ignore[arg-type]
        calls.append(1)
        if sabotage == "reorder the hits":
            hits.reverse()
        elif sabotage == "change the collection" and len(calls) == 1:
            (top,) = memory.retrieve("sabotage", ids=[hits[0].id], with_vectors=True)
            assert isinstance(top.vector, dict)
            copy = PointStruct(id=str(uuid.uuid4()), vector=dict(top.vector), payload=top.payload)
            memory.upsert("sabotage", points=[copy])
        elif sabotage == "change the model" and len(calls) == 1:
            projection = self.encoder.model.text_projection.weight
            projection.data[:, :4] *= -1  # undone below: the encoder is shared
        return result

    monkeypatch.setattr(Explainer, "explain", explain)
    dataset = read_dataset(world, split="all", max_images=6)
    try:
        report = evaluate(
            memory,
            shapes_encoder,
            dataset,
            collection_name="sabotage",
            explain_top=3,
            batch_size=2,  # explanations of one chunk of queries run before the next search
        )
    finally:
        if sabotage == "change the model":
            shapes_encoder.model.text_projection.weight.data[:, :4] *= -1
    invariance = report.invariance
    assert invariance is not None and invariance.verdict == "changed"
    assert not invariance.invariant and "CHANGED" in report.format_table()
    if sabotage == "reorder the hits":
        assert not invariance.hits_untouched
    elif sabotage == "change the collection":
        assert invariance.same_ids < invariance.queries_compared
    else:
        assert not invariance.query_vectors_identical


# -- the command ------------------------------------------------------------------------


def test_cli_eval_prints_the_table_and_writes_json(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval" / "result.json"
    common = ["--path", str(tmp_path / "q"), "--model", "shapes", "--no-progress"]
    argv = ["eval", str(world), "--max-images", "5", "--explain-top", "2", "--json", str(out)]
    assert main([*argv, *common]) == 0
    printed = capsys.readouterr().out
    assert "Cross-modal retrieval" in printed and "Search (baseline)" in printed
    assert "R@1    R@5    R@10" in printed and "Ranking invariance: IDENTICAL" in printed
    data = json.loads(out.read_text())
    assert set(data) >= {"dataset", "counts", "metrics", "invariance", "timing", "settings"}
    assert data["dataset"]["split"] == "test" and data["dataset"]["images"] == 5
    assert data["collection"] == "xai_eval_flickr8k"
    assert data["counts"]["image_to_text_queries"] == 5
    assert data["invariance"]["invariant"] is True
    assert set(data["metrics"]["text_to_image"]["recall"]) == {"R@1", "R@5", "R@10"}
    assert data["timing"]["explained_pass_s"] > 0

    # the CSV of the same images, without the explained pass
    assert main(["eval", str(world / "captions.csv"), "--no-explain", *common]) == 0
    printed = capsys.readouterr().out
    assert "not checked" in printed and f"csv, all images): {N_IMAGES} images" in printed

    assert main(["eval", str(world), "--split", "holdout", *common]) == 1
    assert "unknown split 'holdout'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # an argument error, before any work
        main(["eval", str(world), "--max-images", "0", *common])
    assert exited.value.code == 2
    assert "must be a whole number of at least 1" in capsys.readouterr().err
