"""Nothing stale passes as current, the model side (issue 14): a model whose inner weights
changed (a merged LoRA keeps the projections) and points written with the projection-only
key of earlier releases are re-encoded by ``index`` and ``backfill`` and refused or checked
per hit when explaining; an image file overwritten after indexing fails its hit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from qdrant_client import QdrantClient, models
from transformers import CLIPModel

from qdrant_xai import (
    Backfiller,
    ClipEncoder,
    Explainer,
    FeaturesMissingError,
    Indexer,
    ModelMismatchError,
    Searcher,
    StaleFeaturesError,
)
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.explain.results import hit_image
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.render import write_report
from qdrant_xai.storage.schema import PayloadKeys, image_point_id

pytestmark = pytest.mark.slow


def merged_lora(source: Path, target: Path, *, scale: float = 0.2, seed: int = 1) -> Path:
    """A copy of a saved CLIP with a rank-4 update merged into every attention query and
    value matrix of both towers (what merging a LoRA does); projections untouched."""
    model = CLIPModel.from_pretrained(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if name.endswith(("q_proj.weight", "v_proj.weight")):
                b = torch.randn(weight.shape[0], 4, generator=generator)
                a = torch.randn(4, weight.shape[1], generator=generator)
                weight.add_(scale * (b @ a) / 4)
    model.save_pretrained(target)
    for file in source.iterdir():  # the processor files
        if file.name not in ("config.json", "model.safetensors"):
            shutil.copyfile(file, target / file.name)
    return target


def set_legacy_keys(client: QdrantClient, collection_name: str, encoder: ClipEncoder) -> int:
    """Rewrites every point's key to this model's legacy key, as a release before key
    version 2 wrote it; returns the number of points."""
    records, _ = client.scroll(collection_name, limit=1000, with_payload=False)
    legacy = encoder.fingerprint.legacy_key
    assert legacy is not None
    client.set_payload(
        collection_name,
        payload={PayloadKeys.FINGERPRINT: legacy},
        points=[r.id for r in records],
        wait=True,
    )
    return len(records)


def _keys(client: QdrantClient, collection_name: str) -> set[str]:
    records, _ = client.scroll(collection_name, limit=1000, with_payload=[PayloadKeys.FINGERPRINT])
    return {str((r.payload or {}).get(PayloadKeys.FINGERPRINT)) for r in records}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[QdrantClient, Path, Path]]:
    folder = tmp_path / "scenes"
    csv = write_scene_folder(folder, 4, seed=5, size=64)
    client = QdrantClient(":memory:")
    yield client, folder, csv
    client.close()


def test_points_with_the_legacy_key_are_reindexed_and_backfilled(
    world: tuple[QdrantClient, Path, Path], tiny_encoder: ClipEncoder
) -> None:
    client, folder, csv = world
    indexer = Indexer(client, tiny_encoder, collection_name="c")
    first = indexer.index_folder(folder, captions=csv, progress=False)
    assert first.failed == [] and first.indexed_images == 4
    set_legacy_keys(client, "c", tiny_encoder)
    again = indexer.index_folder(folder, captions=csv, progress=False)
    assert (again.indexed_images, again.unchanged) == (4, 0)  # never "unchanged"
    assert _keys(client, "c") == {tiny_encoder.fingerprint.key}

    points = set_legacy_keys(client, "c", tiny_encoder)
    backfill = Backfiller(
        client,
        tiny_encoder,
        collection_name="c",
        sources=ImageSourcePolicy.from_roots([folder]),
    ).run(progress=False)
    assert (backfill.updated, backfill.unchanged, backfill.failed) == (points, 0, [])
    assert _keys(client, "c") == {tiny_encoder.fingerprint.key}


def test_legacy_points_are_explained_after_their_vectors_are_checked(
    world: tuple[QdrantClient, Path, Path], tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    client, folder, csv = world
    Indexer(client, tiny_encoder, collection_name="c").index_folder(
        folder, captions=csv, progress=False
    )
    set_legacy_keys(client, "c", tiny_encoder)
    searcher = Searcher(client, tiny_encoder, collection_name="c")
    image_hits = searcher.search_images("a red circle", limit=4)
    text_hits = searcher.search_texts(folder / "scene_0001.png", limit=4)
    # the same model: explained, from the re-encoded image and text (not refused)
    readable = Explainer(tiny_encoder, client, collection_name="c", image_roots=[folder])
    for query, hits in (("a red circle", image_hits), (folder / "scene_0001.png", text_hits)):
        explained = readable.explain(query, hits)
        assert [e.error for e in explained] == [None] * len(hits)
    # images that cannot be read cannot be checked: refused per hit, saying why
    blind = Explainer(tiny_encoder, client, collection_name="c")
    for e in blind.explain("a red circle", image_hits):
        assert isinstance(e.error, FeaturesMissingError)
        assert "earlier model fingerprint" in str(e.error)
    # a changed backbone keeps the legacy key (same projections) but not the vectors
    changed = ClipEncoder.from_pretrained(merged_lora(_saved(tiny_encoder), tmp_path / "lora"))
    assert changed.fingerprint.legacy_key == tiny_encoder.fingerprint.legacy_key
    other = Explainer(changed, client, collection_name="c", image_roots=[folder])
    for e in other.explain("a red circle", image_hits):
        assert isinstance(e.error, ModelMismatchError), e.error


def _saved(encoder: ClipEncoder) -> Path:
    return Path(encoder.model_id)


def test_a_model_with_changed_inner_weights_is_never_taken_as_the_same(
    world: tuple[QdrantClient, Path, Path], tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    client, folder, csv = world
    Indexer(client, tiny_encoder, collection_name="c").index_folder(
        folder, captions=csv, progress=False
    )
    Indexer(client, tiny_encoder, collection_name="d").index_folder(
        folder, captions=csv, progress=False
    )
    changed = ClipEncoder.from_pretrained(merged_lora(_saved(tiny_encoder), tmp_path / "lora"))
    assert changed.fingerprint.key != tiny_encoder.fingerprint.key
    # explaining the first model's points with it: refused per hit
    hits = Searcher(client, tiny_encoder, collection_name="c").search_images("a circle", limit=4)
    explained = Explainer(changed, client, collection_name="c").explain("a circle", hits)
    assert hits and all(isinstance(e.error, ModelMismatchError) for e in explained)
    # backfill: never "unchanged"; the points whose vectors moved are refused, not written
    policy = ImageSourcePolicy.from_roots([folder])
    summary = Backfiller(client, changed, collection_name="c", sources=policy).run(progress=False)
    assert summary.unchanged == 0 and summary.updated + len(summary.failed) == len(
        client.scroll("c", limit=100)[0]
    )
    assert all("does not come from" in reason for _, reason in summary.failed)
    # a smaller change keeps the image vectors within agreement: backfill rewrites them
    slight = ClipEncoder.from_pretrained(
        merged_lora(_saved(tiny_encoder), tmp_path / "slight", scale=0.05)
    )
    rewritten = Backfiller(client, slight, collection_name="d", sources=policy).run(progress=False)
    assert rewritten.unchanged == 0 and rewritten.updated >= 4
    # indexing re-encodes every point
    again = Indexer(client, changed, collection_name="c").index_folder(
        folder, captions=csv, progress=False
    )
    assert (again.indexed_images, again.unchanged) == (4, 0)
    assert _keys(client, "c") == {changed.fingerprint.key}


def test_an_overwritten_image_fails_its_hit_where_the_image_is_read(
    world: tuple[QdrantClient, Path, Path], tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    client, folder, csv = world
    Indexer(client, tiny_encoder, collection_name="c").index_folder(
        folder, captions=csv, progress=False
    )
    other = tmp_path / "other"
    write_scene_folder(other, 4, seed=77, size=64)
    photo = folder / "scene_0002.png"
    shutil.copyfile(other / "scene_0002.png", photo)  # another picture, same size
    stale_id = image_point_id(str(photo.resolve()))
    hits = Searcher(client, tiny_encoder, collection_name="c").search_images("a shape", limit=4)
    assert stale_id in {str(h.id) for h in hits}
    explainer = Explainer(
        tiny_encoder,
        client,
        collection_name="c",
        image_roots=[folder],
        heatmap_method="occlusion",  # reads every hit's image
    )
    for e in explainer.explain("a shape", hits):
        if str(e.id) == stale_id:
            assert isinstance(e.error, StaleFeaturesError)
            assert "changed since it was indexed" in str(e.error)
            assert "qdrant-xai index" in str(e.error)
        else:
            assert e.error is None and e.heatmap is not None
    # backfill does not pair the old picture's vector with the new picture's features
    summary = Backfiller(
        client, tiny_encoder, collection_name="c", sources=ImageSourcePolicy.from_roots([folder])
    ).run(progress=False)
    assert summary.updated == 0 and [pid for pid, _ in summary.failed] == [stale_id]
    assert "changed since it was indexed" in summary.failed[0][1]
    # re-indexing makes it current again
    Indexer(client, tiny_encoder, collection_name="c").index_folder(
        folder, captions=csv, progress=False
    )
    assert all(e.error is None for e in explainer.explain("a shape", hits))


def test_a_report_never_draws_the_old_heatmap_over_an_overwritten_image(
    world: tuple[QdrantClient, Path, Path], tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    """Hits explained from stored features read their image only to draw it: that read is
    checked too, in the report, in Explanation.original_image and in the adapters' helper."""
    client, folder, csv = world
    Indexer(client, tiny_encoder, collection_name="c").index_folder(
        folder, captions=csv, progress=False
    )
    other = tmp_path / "other"
    write_scene_folder(other, 4, seed=77, size=64)
    photo = folder / "scene_0001.png"
    shutil.copyfile(other / "scene_0001.png", photo)
    stale_id = image_point_id(str(photo.resolve()))
    hits = Searcher(client, tiny_encoder, collection_name="c").search_images("a shape", limit=4)
    for roots in ([folder], []):  # under a policy, and reading the collection's own paths
        explainer = Explainer(tiny_encoder, client, collection_name="c", image_roots=roots)
        explanations = explainer.explain("a shape", hits)
        assert all(e.ok for e in explanations)  # stored features: no image read yet
        for e in explanations:
            if str(e.id) == stale_id:
                with pytest.raises(StaleFeaturesError, match="changed since it was indexed"):
                    e.original_image()
            else:
                assert e.original_image().size == (64, 64)
        report = write_report(tmp_path / "r.html", [("a shape", explanations)])
        text = report.read_text(encoding="utf-8")
        assert text.count("changed since it was indexed") == 1
        assert text.count("class='hit'") == len(hits)
    stale = next(h for h in hits if str(h.id) == stale_id)
    with pytest.raises(StaleFeaturesError):
        hit_image(
            ImageSourcePolicy.from_roots([folder]), str(photo), stale.payload or {}, what="hit"
        )


def test_a_missing_point_payload_key_is_left_alone(
    world: tuple[QdrantClient, Path, Path], tiny_encoder: ClipEncoder
) -> None:
    """Points without a content hash (written before it existed) are not refused."""
    client, folder, csv = world
    Indexer(client, tiny_encoder, collection_name="c").index_folder(
        folder, captions=csv, progress=False
    )
    records, _ = client.scroll(
        "c",
        limit=100,
        scroll_filter=models.Filter(
            must=[
                models.FieldCondition(key=PayloadKeys.KIND, match=models.MatchValue(value="image"))
            ]
        ),
    )
    client.delete_payload("c", keys=[PayloadKeys.CONTENT], points=[r.id for r in records])
    hits = Searcher(client, tiny_encoder, collection_name="c").search_images("a shape", limit=4)
    explainer = Explainer(
        tiny_encoder, client, collection_name="c", image_roots=[folder], heatmap_method="occlusion"
    )
    assert all(e.error is None for e in explainer.explain("a shape", hits))
