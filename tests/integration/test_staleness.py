"""Nothing stale passes as current: an image file overwritten in place and an edited caption
are re-indexed, and the replaced caption point is removed (issue 14)."""

from __future__ import annotations

import shutil
from pathlib import Path

from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder, Indexer
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.storage.schema import PayloadKeys, image_point_id


def _texts(client: QdrantClient) -> set[str]:
    records, _ = client.scroll(
        "c",
        limit=100,
        scroll_filter=models.Filter(
            must=[
                models.FieldCondition(key=PayloadKeys.KIND, match=models.MatchValue(value="text"))
            ]
        ),
        with_payload=[PayloadKeys.TEXT],
    )
    return {str((r.payload or {})[PayloadKeys.TEXT]) for r in records}


def test_an_overwritten_image_and_an_edited_caption_are_reindexed(
    tiny_encoder: ClipEncoder, tmp_path: Path
) -> None:
    folder, other = tmp_path / "scenes", tmp_path / "other"
    csv = write_scene_folder(folder, 3, seed=21, size=64)
    write_scene_folder(other, 3, seed=99, size=64)
    client = QdrantClient(":memory:")
    indexer = Indexer(client, tiny_encoder, collection_name="c")
    first = indexer.index_folder(folder, captions=csv, progress=False)
    assert (first.indexed_images, first.unchanged) == (3, 0)
    assert indexer.index_folder(folder, captions=csv, progress=False).unchanged == 3
    photo = folder / "scene_0001.png"
    point = image_point_id(str(photo.resolve()))
    (before,) = client.retrieve("c", [point], with_vectors=["image"])
    # another picture of the same size under the same name
    shutil.copyfile(other / "scene_0001.png", photo)
    lines = csv.read_text(encoding="utf-8").splitlines()
    old_caption = lines[1].split(",", 1)[1].strip('"')
    lines[1] = f"{lines[1].split(',', 1)[0]},a caption the user edited"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    again = indexer.index_folder(folder, captions=csv, progress=False)
    assert (again.indexed_images, again.unchanged) == (2, 1)  # a new picture, a new caption
    (after,) = client.retrieve("c", [point], with_vectors=["image"])
    assert after.vector != before.vector
    texts = _texts(client)
    assert "a caption the user edited" in texts and old_caption not in texts
    assert len(texts) == 3
