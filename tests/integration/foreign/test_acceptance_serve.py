"""Issue 16 on collections other tools wrote: ``qdrant-xai serve``'s JSON API explains the
hits of the user's own search of a LangChain, LlamaIndex or mcp-server-qdrant collection
(sent as the JSON ScoredPoints qdrant-client returns) exactly as the Python explainer does,
draws image hits only from the allowed folder, and changes nothing in the collection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qdrant_xai import ClipEncoder, Explainer
from tests.integration.foreign._backends import Qdrant
from tests.integration.foreign._checks import QUERY
from tests.integration.foreign.writers import Written, point_key, snapshot

pytest.importorskip("fastapi", reason="the serve extra (pip install 'qdrant-xai[serve]')")

from fastapi.testclient import TestClient

from qdrant_xai.serve import ExplainService, create_app


def test_api_explains_a_foreign_collection_as_python_does(
    written: Written, qdrant: Qdrant, tiny_encoder: ClipEncoder
) -> None:
    vector = [float(x) for x in tiny_encoder.embed_texts([QUERY])[0]]
    with qdrant.open() as client:
        before = snapshot(client, written.collection_name)
        hits = client.query_points(
            written.collection_name, query=vector, using=written.using, limit=len(written.points)
        ).points
        roots = [written.scenes.root]
        expected = Explainer(
            tiny_encoder,
            client,
            collection_name=written.collection_name,
            image_roots=roots,
            write_sidecar=False,
        ).explain(QUERY, hits)
        service = ExplainService(
            client,
            tiny_encoder,
            collection_name=written.collection_name,
            image_roots=roots,
            write_sidecar=False,
        )
        api = TestClient(create_app(service, allowed_hosts=["testserver"]))
        sent = [json.loads(hit.model_dump_json()) for hit in hits]
        response = api.post("/api/explain", json={"query": QUERY, "points": sent, "pictures": True})
        after = snapshot(client, written.collection_name)
    assert response.status_code == 200, response.text
    answer = response.json()["hits"]
    assert [(h["id"], h["score"]) for h in answer] == [(hit.id, hit.score) for hit in hits]
    points = written.by_id()
    for got, want in zip(answer, expected, strict=True):
        assert got["status"] == want.status, (got["error"], want.error)
        if not want.ok:
            continue
        assert got["hit_kind"] == points[point_key(want.id)].kind
        if want.heatmap is not None:
            np.testing.assert_allclose(got["heatmap"], want.heatmap, atol=1e-5)
            assert got["picture"]["image"].startswith("data:image/"), got["picture"]
        assert [w[0] for w in got["words"]] == [w.word for w in want.words]
    assert after == before  # nothing written to the user's collection
