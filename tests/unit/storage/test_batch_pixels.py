"""A batch of images is encoded in passes of at most ``ImageLimits.max_batch_pixels``
decoded pixels: memory is bounded per batch, not only per image, and nothing changes."""

from __future__ import annotations

from pathlib import Path

from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.images.load import ImageLimits


def _points(client: QdrantClient) -> dict[str, list[float]]:
    records, _ = client.scroll("c", limit=100, with_vectors=["image"], with_payload=False)
    return {str(r.id): r.vector["image"] for r in records if r.vector}  # type: ignore[index,misc]


def test_a_batch_over_the_pixel_budget_is_encoded_in_several_passes(
    tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    folder = tmp_path / "scenes"
    write_scene_folder(folder, 5, seed=8, size=64)  # 4,096 pixels each
    whole = QdrantClient(":memory:")
    Indexer(whole, tiny_encoder, collection_name="c", batch_size=5).index_folder(
        folder, progress=False
    )
    split = QdrantClient(":memory:")
    indexer = Indexer(
        split,
        tiny_encoder,
        collection_name="c",
        batch_size=5,
        image_limits=ImageLimits(max_batch_pixels=2 * 4096),
    )
    passes: list[int] = []
    encode = indexer._encoder_pass

    def counting(images: list) -> list:  # type: ignore[type-arg]
        passes.append(len(images))
        return encode(images)

    indexer._encoder_pass = counting  # type: ignore[method-assign]
    summary = indexer.index_folder(folder, progress=False)
    assert summary.indexed_images == 5 and not summary.failed
    assert passes == [2, 2, 1]
    expected, got = _points(whole), _points(split)
    assert expected.keys() == got.keys()
    for key, vector in expected.items():
        assert max(abs(a - b) for a, b in zip(vector, got[key], strict=True)) < 1e-5
