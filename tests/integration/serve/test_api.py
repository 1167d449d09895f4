"""``qdrant-xai serve``'s JSON API: the same explanations as the CLI and as the Python API,
for its own searches and for a client's own ``query_points``; typed JSON errors; nothing
untrusted can become markup; concurrent users get their own answers."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from qdrant_xai.serve import ExplainService, create_app
from qdrant_xai.serve.app import CONTENT_SECURITY_POLICY

from .conftest import COLLECTION, HOSTILE_CAPTION, HOSTILE_NAME, QUERIES, ServeWorld


@pytest.fixture(scope="module")
def api(service: ExplainService) -> TestClient:
    return TestClient(create_app(service, allowed_hosts=["testserver"]))


def _same_explanations(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> None:
    assert [h["id"] for h in left] == [h["id"] for h in right]
    for a, b in zip(left, right, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
        np.testing.assert_allclose(a["heatmap"], b["heatmap"], atol=1e-5)
        assert [w[0] for w in a["words"]] == [w[0] for w in b["words"]]
        np.testing.assert_allclose(
            [w[1] for w in a["words"]], [w[1] for w in b["words"]], atol=1e-5
        )


@pytest.mark.parametrize("query", QUERIES)
def test_search_answers_what_the_cli_prints(
    api: TestClient, serve_world: ServeWorld, query: str
) -> None:
    response = api.get("/api/search", params={"q": query, "limit": 5, "explain": "true"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["model"] == "shapes" and answer["collection"] == COLLECTION
    assert answer["hit_kind"] == "image" and answer["explained"] is True
    cli = serve_world.cli_json[query]
    _same_explanations(answer["hits"], cli)
    # the same fields as search --json, nothing left out
    assert set(cli[0]) <= set(answer["hits"][0])


def test_explain_takes_the_points_of_a_clients_own_query(
    api: TestClient, service: ExplainService
) -> None:
    query = QUERIES[0]
    vector = service.encoder.embed_texts([query])[0].tolist()
    points = service.client.query_points(COLLECTION, query=vector, using="image", limit=5).points
    sent = [json.loads(p.model_dump_json()) for p in points]
    response = api.post("/api/explain", json={"query": query, "points": sent})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    # the client's ids, scores and order are kept, and explained as the search explains them
    assert [(h["id"], h["score"]) for h in hits] == [(p.id, p.score) for p in points]
    searched = api.get("/api/search", params={"q": query, "limit": 5, "explain": "true"})
    _same_explanations(hits, searched.json()["hits"])


def test_explain_scores_point_ids_as_a_search_would(api: TestClient) -> None:
    searched = api.get("/api/search", params={"q": QUERIES[1], "limit": 3, "explain": "true"})
    wanted = searched.json()["hits"][::-1]
    response = api.post(
        "/api/explain", json={"query": QUERIES[1], "ids": [h["id"] for h in wanted]}
    )
    assert response.status_code == 200
    _same_explanations(response.json()["hits"], wanted)


def test_an_images_captions_are_explained_against_it(api: TestClient) -> None:
    hit = api.get("/api/search", params={"q": QUERIES[0], "limit": 1}).json()["hits"][0]
    answer = api.get(f"/api/points/{hit['id']}/captions")
    assert answer.status_code == 200, answer.text
    (caption,) = answer.json()["captions"]
    assert caption["text"] and caption["explanation"]["words"]
    direct = api.post("/api/explain", json={"query": caption["text"], "ids": [hit["id"]]})
    _same_explanations([caption["explanation"]], direct.json()["hits"])
    missing = api.get("/api/points/123456789/captions")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "PointNotFoundError"


def test_image_upload_searches_texts_with_the_heatmap_on_the_query(
    api: TestClient, serve_world: ServeWorld
) -> None:
    png = (serve_world.images / "scene_0000.png").read_bytes()
    response = api.post(
        "/api/search",
        files={"image": ("query.png", png, "image/png")},
        data={"explain": "true", "pictures": "true", "limit": "3"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["hit_kind"] == "text" and answer["query"] is None
    for hit in answer["hits"]:
        assert hit["heatmap_side"] == "query" and hit["words_side"] == "hit"
        assert hit["picture"]["image"].startswith("data:image/")
    # the same image as base64 through /api/explain gives the same explanations
    ids = [h["id"] for h in answer["hits"]]
    body = {"image": base64.b64encode(png).decode(), "ids": ids, "hit_kind": "text"}
    again = api.post("/api/explain", json=body)
    assert again.status_code == 200, again.text
    _same_explanations(again.json()["hits"], answer["hits"])


def test_pictures_and_the_overlay_png(api: TestClient) -> None:
    params = {
        "q": QUERIES[0],
        "limit": 2,
        "explain": "true",
        "pictures": "true",
        "grounding": "true",
    }
    hit = api.get("/api/search", params=params).json()["hits"][0]
    picture = hit["picture"]
    assert picture["heatmap"].startswith("data:image/png;base64,")
    assert {g["word"] for g in picture["grounding"]} <= {"red", "circle"}
    response = api.get(
        f"/api/points/{hit['id']}/overlay.png", params={"query": QUERIES[0], "size": 100}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert max(image.size) == 100


def test_pictures_are_read_only_through_the_image_roots(
    serve_world: ServeWorld, service: ExplainService
) -> None:
    # the same collection served without --image-root: explained from stored features, but
    # no image file is read, and each hit says why it has no picture
    closed = ExplainService(service.client, service.encoder, collection_name=COLLECTION)
    answer = closed.search(QUERIES[0], limit=2, explain=True, options=_pictures())
    for hit in answer["hits"]:
        assert hit["status"] == "ok" and hit["heatmap"] is not None
        assert hit["picture"]["error"]["type"] == "SourceNotAllowedError"


def _pictures() -> Any:
    from qdrant_xai.serve import ExplainOptions

    return ExplainOptions(pictures=True)


def test_markup_in_payloads_never_becomes_markup(api: TestClient) -> None:
    response = api.get(
        "/api/search", params={"q": "a red circle bold", "limit": 12, "explain": "true"}
    )
    raw = response.text
    answer = response.json()
    sources = [h["payload"].get("source", "") for h in answer["hits"]]
    assert any(s.endswith(HOSTILE_NAME) for s in sources)  # it is in the answer...
    assert "<img" not in raw and "<script" not in raw  # ...never as markup
    assert "\\u003cimg src=x" in raw
    texts = api.post(
        "/api/explain", json={"query": HOSTILE_CAPTION, "ids": [answer["hits"][0]["id"]]}
    )
    assert "<script" not in texts.text and texts.json()["hits"][0]["text"] == HOSTILE_CAPTION
    page = api.get("/")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("request_args", "status", "kind"),
    [
        (("get", "/api/search", {"params": {"q": "x", "limit": 0}}), 422, "RequestError"),
        (
            ("get", "/api/search", {"params": {"q": "x", "explain": "true", "method": "nope"}}),
            400,
            "UnknownMethodError",
        ),
        (("post", "/api/explain", {"json": {"query": "x"}}), 400, "RequestError"),
        (("post", "/api/explain", {"json": {"ids": [1]}}), 400, "RequestError"),
        (
            ("post", "/api/explain", {"json": {"query": "x", "ids": [123456789]}}),
            404,
            "PointNotFoundError",
        ),
        (
            ("post", "/api/explain", {"json": {"query": "x", "ids": ["not-an-id"]}}),
            400,
            "PointIdError",
        ),
        (
            ("post", "/api/explain", {"json": {"query": "x", "points": [{"id": 1}]}}),
            400,
            "RequestError",
        ),
        (
            ("post", "/api/explain", {"json": {"image": "bm90IGFuIGltYWdl", "ids": [1]}}),
            400,
            "ImageLoadError",
        ),
        (
            ("post", "/api/explain", {"json": {"image": "not base64!", "ids": [1]}}),
            400,
            "InlineImageError",
        ),
        (
            ("post", "/api/search", {"files": {"image": ("a.png", b"not an image", "image/png")}}),
            400,
            "ImageLoadError",
        ),
        (
            ("get", "/api/search", {"params": {"q": "x", "collection": "missing"}}),
            404,
            "CollectionError",
        ),
        (
            ("get", "/api/points/1/overlay.png", {"params": {"query": "x", "size": 5000}}),
            422,
            "RequestError",
        ),
    ],
)
def test_errors_are_typed_json(
    api: TestClient, request_args: tuple[str, str, dict[str, Any]], status: int, kind: str
) -> None:
    method, url, kwargs = request_args
    response = getattr(api, method)(url, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind and error["message"]


def test_a_long_untrusted_value_is_quoted_briefly(api: TestClient) -> None:
    response = api.post("/api/explain", json={"query": "x", "ids": ["y" * 5000]})
    assert response.status_code == 400
    assert len(response.json()["error"]["message"]) < 400
    response = api.get("/api/search", params={"q": "x", "explain": "true", "method": "m" * 5000})
    assert response.status_code == 400
    assert len(response.json()["error"]["message"]) < 400


def test_an_oversized_body_is_refused_before_it_is_read(service: ExplainService) -> None:
    from qdrant_xai.images.load import ImageLimits

    small = ExplainService(
        service.client,
        service.encoder,
        collection_name=COLLECTION,
        image_limits=ImageLimits(max_bytes=1000),
    )
    api = TestClient(create_app(small, allowed_hosts=["testserver"]))
    body = {"image": "A" * 2_000_000, "ids": [1]}
    response = api.post("/api/explain", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "InputTooLargeError"


def test_other_hosts_are_refused(service: ExplainService) -> None:
    app = TestClient(create_app(service), base_url="http://127.0.0.1")
    assert app.get("/api/info").status_code == 200
    assert app.get("/api/info", headers={"host": "attacker.example"}).status_code == 400


def test_openapi_and_collections(api: TestClient) -> None:
    spec = api.get("/api/openapi.json").json()
    assert {"/api/search", "/api/explain", "/api/collections"} <= set(spec["paths"])
    collections = api.get("/api/collections").json()
    (ours,) = [c for c in collections if c.get("collection_name") == COLLECTION]
    assert ours["writer"] == "qdrant-xai"


def test_concurrent_users_get_their_own_answers(live_url: str) -> None:
    queries = [QUERIES[i % 2] for i in range(8)]
    params = {"limit": 4, "explain": "true"}

    def ask(query: str) -> dict[str, Any]:
        response = httpx.get(f"{live_url}/api/search", params={"q": query, **params}, timeout=60)
        response.raise_for_status()
        return dict(response.json())

    alone = {q: ask(q) for q in QUERIES}
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, queries))
    for query, answer in zip(queries, answers, strict=True):
        assert answer["query"] == query
        _same_explanations(answer["hits"], alone[query]["hits"])
