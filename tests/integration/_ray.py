"""What the Ray tests (``test_ray_index``, ``test_ray_backfill``) compare: the points of a
collection, and two collections' points as equal within float tolerance."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.schema import PayloadKeys


def snapshot(path: Path, collection_name: str = "c") -> dict[str, Any]:
    """The points of a collection in an embedded folder (opened and closed again)."""
    with closing(QdrantClient(path=str(path))) as client:
        return points_of(client, collection_name)


def points_of(client: QdrantClient, collection_name: str) -> dict[str, Any]:
    """Every point of a collection, with payload and vectors, by ``str(id)``."""
    points, offset = [], None
    while True:
        page, offset = client.scroll(
            collection_name, limit=256, offset=offset, with_payload=True, with_vectors=True
        )
        points += page
        if offset is None:
            return {str(p.id): p for p in points}


def assert_same_payload(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Equal payloads, the feature maps (:attr:`PayloadKeys.HEAVY`) decoded and equal
    within float tolerance."""
    codec = PayloadFeatureCodec()
    light = {k: v for k, v in ours.items() if k not in PayloadKeys.HEAVY}
    assert light == {k: v for k, v in theirs.items() if k not in PayloadKeys.HEAVY}
    for key in PayloadKeys.HEAVY:
        assert (key in ours) == (key in theirs)
        if key in ours:
            np.testing.assert_allclose(
                codec.decode(ours[key]), codec.decode(theirs[key]), atol=2e-3
            )


def assert_same_points(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """The same ids, vectors within float tolerance and payloads (:func:`assert_same_payload`)."""
    assert set(ours) == set(theirs)
    for point_id, point in ours.items():
        other = theirs[point_id]
        if isinstance(point.vector, dict):
            assert set(point.vector) == set(other.vector)
            for name, vector in point.vector.items():
                np.testing.assert_allclose(vector, other.vector[name], atol=1e-5)
        else:
            np.testing.assert_allclose(point.vector, other.vector, atol=1e-5)
        assert_same_payload(point.payload, other.payload)
