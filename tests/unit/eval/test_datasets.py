"""Retrieval evaluation: dataset readers, metrics, the evaluation loop and ``qdrant-xai eval``.

The data is the shapes world written in the formats real datasets come in: a Flickr8k folder
(token file, image folder with the archive's spelling, split files), a Karpathy split JSON and
an ``image,caption`` CSV, all describing the same images and captions.
"""

from __future__ import annotations

import csv
import json
import shutil
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
from qdrant_xai.demo.world import ShapeScene, caption_for, generate_scenes
from qdrant_xai.eval.retrieval import (
    DatasetError,
    EvaluationReport,
    RetrievalDataset,
    average_precision,
    detect_format,
    evaluate,
    read_dataset,
    summarize_ranks,
)

N_IMAGES = 14
SPLITS = {"train": range(0, 3), "dev": range(3, 5), "test": range(5, N_IMAGES)}
SEED = 4242  # held out from the bundled model's training stream


def _captions(scene: ShapeScene) -> list[str]:
    """The scene's caption and, when it differs, the caption naming the objects reversed."""
    pairs = [(o.color, o.shape) for o in scene.objects]
    return list(dict.fromkeys([caption_for(pairs), caption_for(pairs[::-1])]))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shapes world in three formats: Flickr8k layout, Karpathy JSON, CSV."""
    root = tmp_path_factory.mktemp("flickr-shapes")
    images = root / "Flicker8k_Dataset"  # sic, as in the Flickr8k archive
    text = root / "Flickr8k_text"
    images.mkdir()
    text.mkdir()
    names, captions = [], []
    for i, scene in enumerate(generate_scenes(N_IMAGES, seed=SEED)):
        name = f"{1000268201 + i}_{i:04x}shapes.png"
        scene.image.save(images / name)
        names.append(name)
        captions.append(_captions(scene))
    token_lines = [
        f"{n}#{k}\t{c}" for n, cs in zip(names, captions, strict=True) for k, c in enumerate(cs)
    ]
    (text / "Flickr8k.token.txt").write_text("\n".join(token_lines) + "\n")
    for split, rows in SPLITS.items():
        (text / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names[i] for i in rows))
    karpathy = {
        "dataset": "flickr8k",
        "images": [
            {
                "filename": n,
                "imgid": i,
                "split": next(s if s != "dev" else "val" for s, r in SPLITS.items() if i in r),
                "sentences": [{"raw": c, "tokens": c.split()} for c in cs],
            }
            for i, (n, cs) in enumerate(zip(names, captions, strict=True))
        ],
    }
    (root / "dataset_flickr8k.json").write_text(json.dumps(karpathy))
    with (root / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for name, texts in zip(names, captions, strict=True):
            writer.writerows([f"Flicker8k_Dataset/{name}", c] for c in texts)
    return root


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


def _pairs(dataset: RetrievalDataset) -> list[tuple[Path, tuple[str, ...]]]:
    return [(item.path, item.captions) for item in dataset.items]


# -- readers ----------------------------------------------------------------------------


def test_the_three_formats_read_the_same_images_and_captions(world: Path) -> None:
    assert detect_format(world) == "flickr8k"
    assert detect_format(world / "Flickr8k_text" / "Flickr8k.token.txt") == "flickr8k"
    assert detect_format(world / "dataset_flickr8k.json") == "karpathy"
    assert detect_format(world / "captions.csv") == "csv"

    flickr = read_dataset(world, split="all")
    karpathy = read_dataset(world / "dataset_flickr8k.json", split="all")
    table = read_dataset(world / "captions.csv")
    assert flickr.n_images == karpathy.n_images == table.n_images == N_IMAGES
    assert _pairs(flickr) == _pairs(karpathy) == _pairs(table)
    assert flickr.n_captions > N_IMAGES  # two-object scenes have a reordered second caption
    assert all(item.path.is_absolute() and item.path.is_file() for item in flickr.items)
    assert flickr.image_root == (world / "Flicker8k_Dataset").resolve()
    assert (flickr.format, karpathy.format, table.format) == ("flickr8k", "karpathy", "csv")
    assert flickr.name == karpathy.name == "flickr8k"

    # the default split is test when there is one; val and dev name the same split
    test = read_dataset(world)
    assert test.split == "test" and test.n_images == len(SPLITS["test"])
    assert _pairs(test) == _pairs(read_dataset(world / "dataset_flickr8k.json"))
    assert set(test.splits) == {"train", "dev", "test"}
    assert _pairs(read_dataset(world, split="val")) == _pairs(
        read_dataset(world / "dataset_flickr8k.json", split="dev")
    )
    assert table.split is None and read_dataset(world, format="csv").format == "csv"

    limited = read_dataset(world, max_images=3)
    assert _pairs(limited) == _pairs(test)[:3]


def _copy_flickr(world: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "flickr"
    shutil.copytree(world / "Flickr8k_text", copy / "Flickr8k_text")
    (copy / "Flicker8k_Dataset").symlink_to(world / "Flicker8k_Dataset")
    return copy


def test_malformed_flickr8k_inputs_say_what_and_where(world: Path, tmp_path: Path) -> None:
    copy = _copy_flickr(world, tmp_path)
    token = copy / "Flickr8k_text" / "Flickr8k.token.txt"
    good = token.read_text().splitlines()

    token.write_text("\n".join([*good[:2], "a caption without an image name", *good[2:]]))
    with pytest.raises(DatasetError, match="IMAGE#N<TAB>caption") as bad_line:
        read_dataset(copy)
    assert bad_line.value.line == 3 and f"{token}:3:" in str(bad_line.value)

    token.write_text("\n".join([*good, "x.png#first\ta caption"]))
    with pytest.raises(DatasetError) as bad_index:
        read_dataset(copy)
    assert bad_index.value.line == len(good) + 1

    token.write_text("\n".join([*good, "gone_1234.png#0\ta red circle"]))
    with pytest.raises(DatasetError, match=r"1 of \d+ images are missing .*gone_1234\.png"):
        read_dataset(copy, split="all")
    skipped = read_dataset(copy, split="all", skip_missing=True)
    assert skipped.n_images == N_IMAGES and skipped.skipped[0][0] == "gone_1234.png"
    assert read_dataset(copy).n_images == len(SPLITS["test"])  # not in the test split

    token.write_text("\n".join(good))
    with pytest.raises(DatasetError, match=r"unknown split 'holdout'.*test") as unknown:
        read_dataset(copy, split="holdout")
    assert "'all'" in str(unknown.value)

    split_file = copy / "Flickr8k_text" / "Flickr_8k.testImages.txt"
    split_file.write_text(split_file.read_text() + "\nnot_captioned.jpg\n")
    with pytest.raises(DatasetError, match=r"no captions.*not_captioned\.jpg"):
        read_dataset(copy)

    with pytest.raises(DatasetError, match="the image folder given does not exist"):
        read_dataset(token, split="train", images=tmp_path / "nowhere")
    (copy / "Flicker8k_Dataset").unlink()
    with pytest.raises(DatasetError, match=r"cannot find the images.*--images DIR"):
        read_dataset(token, split="train")
    moved = read_dataset(token, split="train", images=world / "Flicker8k_Dataset")
    assert moved.n_images == len(SPLITS["train"])


def test_malformed_karpathy_and_csv_inputs(world: Path, tmp_path: Path) -> None:
    broken = tmp_path / "dataset_broken.json"
    broken.write_text('{"images": [\n{"filename": "a.png",\n')
    with pytest.raises(DatasetError, match="not valid JSON") as not_json:
        read_dataset(broken)
    assert not_json.value.line is not None

    data = json.loads((world / "dataset_flickr8k.json").read_text())
    del data["images"][1]["sentences"]
    broken.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"images\[1\].*'sentences'"):
        read_dataset(broken, images=world / "Flicker8k_Dataset")
    broken.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DatasetError, match="'images' list"):
        read_dataset(broken)

    with pytest.raises(DatasetError, match="has no splits"):
        read_dataset(world / "captions.csv", split="test")
    headless = tmp_path / "captions.csv"
    headless.write_text("file,text\na.png,a red circle\n")
    with pytest.raises(DatasetError, match="'image' and 'caption'"):
        read_dataset(headless, format="csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no retrieval dataset found"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no such file"):
        read_dataset(tmp_path / "absent")


# -- metrics ----------------------------------------------------------------------------


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
    assert main(["eval", str(world), "--max-images", "0", *common]) == 1
    assert "--max-images must be at least 1" in capsys.readouterr().err
