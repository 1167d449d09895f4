"""A SigLIP checkpoint folder the project has never seen, through the command line (index,
search --explain, explain, backfill), the LangChain retriever and the MCP server.

The folder is built in the test's tmp dir with an odd geometry (5x5 grid, width 24, 3
heads, seed 11), once with the ``tokenizers`` tokenizer of ``build_tiny_siglip`` and once
as a hub SigLIP ships it (``spiece.model`` read by ``SiglipTokenizer``; skipped without
``sentencepiece``).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from qdrant_client import QdrantClient, models

from qdrant_xai import ClipEncoder
from qdrant_xai.cli import main
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.testing import build_tiny_siglip

torch.set_num_threads(1)

QUERY = "a red circle"
GRID = (5, 5)


@pytest.fixture(
    scope="module",
    params=[
        "tokenizer.json",
        pytest.param(
            "spiece.model",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("sentencepiece") is None,
                reason="the hub SigLIP tokenizer needs sentencepiece: "
                "pip install 'qdrant-xai[siglip]'",
            ),
        ),
    ],
)
def siglip_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_siglip(
        tmp_path_factory.mktemp("unseen-siglip"),
        image_size=40,
        patch_size=8,
        hidden_size=24,
        num_heads=3,
        seed=11,
        spiece=request.param == "spiece.model",
    )


@pytest.fixture(scope="module")
def encoder(siglip_dir: Path) -> ClipEncoder:
    return ClipEncoder.from_pretrained(siglip_dir)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("siglip-scenes")
    write_scene_folder(folder, 6, seed=5, size=64)
    return folder


def _records(out: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in out.strip().splitlines()]


def test_cli_index_search_explain(
    siglip_dir: Path, encoder: ClipEncoder, scenes: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    common = ["--path", str(tmp_path / "q"), "--collection", "s", "--model", str(siglip_dir)]
    index = ["index", str(scenes), "--captions", str(scenes / "captions.csv"), "--no-progress"]
    assert main([*index, *common]) == 0
    assert "indexed 6 images and 6 texts" in capsys.readouterr().out

    assert main(["search", QUERY, "--limit", "3", "--explain", "--json", *common]) == 0
    records = _records(capsys.readouterr().out)
    assert len(records) == 3
    text = encoder.embed_texts([QUERY])[0]
    for record in records:
        assert record["word_method"] == "tokens"  # SigLIP's default (no causal text tower)
        assert [w[0] for w in record["words"]] == QUERY.split()
        heatmap = np.asarray(record["heatmap"])
        assert heatmap.shape == GRID
        image = encoder.encode_images([Path(record["payload"]["source"])])[0]
        assert record["score"] == pytest.approx(float(image.embedding @ text), abs=2e-3)
        np.testing.assert_allclose(heatmap, image.contributions @ text, atol=2e-3)

    # the model recorded in the collection is found again without --model
    where = common[:4]
    point_id = records[0]["id"]
    assert main(["explain", str(point_id), "--text", QUERY, "--json", *where]) == 0
    (single,) = _records(capsys.readouterr().out)
    assert single["id"] == point_id and single["heatmap"] == records[0]["heatmap"]
    assert single["score"] == pytest.approx(records[0]["score"], abs=1e-6)

    image = scenes / "scene_0002.png"
    search = ["search", "--image", str(image), "--hit-kind", "text", "--explain", "--json"]
    assert main([*search, *where]) == 0
    for record in _records(capsys.readouterr().out):
        assert record["hit_kind"] == "text" and record["words"]


def test_cli_backfill_of_a_collection_written_by_langchain(
    siglip_dir: Path, encoder: ClipEncoder, scenes: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """langchain-qdrant's layout (one unnamed vector, page_content + metadata), SigLIP
    vectors: backfilled into the sidecar, then explained from it."""
    path = tmp_path / "q"
    client = QdrantClient(path=str(path))
    client.create_collection(
        "lc", vectors_config=models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
    )
    images = sorted(scenes.glob("*.png"))
    vectors = encoder.embed_images(images)
    client.upsert(
        "lc",
        points=[
            models.PointStruct(
                id=i,
                vector=vectors[i].tolist(),
                payload={"page_content": p.name, "metadata": {"source": str(p)}},
            )
            for i, p in enumerate(images)
        ],
    )
    client.close()
    common = ["--path", str(path), "--collection", "lc", "--model", str(siglip_dir)]
    args = ["backfill", "--layout", "langchain", "--image-root", str(scenes), "--no-progress"]
    assert main([*args, *common]) == 0
    assert "backfilled 6 points; 0 unchanged; 0 skipped" in capsys.readouterr().out
    assert main([*args, *common]) == 0
    assert "backfilled 0 points; 6 unchanged" in capsys.readouterr().out
    search = ["search", QUERY, "--layout", "langchain", "--explain", "--json", "--limit", "2"]
    assert main([*search, *common]) == 0
    for record in _records(capsys.readouterr().out):
        assert np.asarray(record["heatmap"]).shape == GRID
        assert record["word_method"] == "tokens"


def _indexed(encoder: ClipEncoder, scenes: Path, name: str) -> QdrantClient:
    from qdrant_xai import Indexer

    client = QdrantClient(":memory:")
    summary = Indexer(client, encoder, collection_name=name).index_folder(
        scenes, captions=scenes / "captions.csv", progress=False
    )
    assert summary.failed == []
    return client


def test_langchain_retriever_uses_the_models_default_word_method(
    encoder: ClipEncoder, scenes: Path
) -> None:
    pytest.importorskip("langchain_core", reason="needs the langchain extra")
    from langchain_qdrant_xai import QdrantXaiRetriever

    client = _indexed(encoder, scenes, "lc-siglip")
    retriever = QdrantXaiRetriever(client=client, encoder=encoder, collection_name="lc-siglip", k=3)
    docs = retriever.invoke(QUERY)
    assert len(docs) == 3
    for doc in docs:
        why = doc.metadata["explanation"]
        assert why["word_method"] == "tokens" and why["grid"] == list(GRID)
        assert [w for w, _, _ in why["words"]] == QUERY.split()
    client.close()


async def test_mcp_server_loads_the_recorded_siglip_and_explains(
    encoder: ClipEncoder, scenes: Path
) -> None:
    pytest.importorskip("mcp", reason="needs the mcp extra")
    from qdrant_xai_mcp import ServerSettings, create_server

    from tests.integration._mcp import call, hits_of, is_error, text_of

    client = _indexed(encoder, scenes, "mcp-siglip")
    # no encoder and no model named: the server loads the folder recorded in the collection
    settings = ServerSettings(collection_name="mcp-siglip", image_roots=(scenes,))
    server = create_server(settings, client=client)
    hits = hits_of(await call(server, "search_images", {"query": QUERY, "limit": 2}))
    assert len(hits) == 2
    for hit in hits:
        assert hit["status"] == "ok"
        assert (hit["peak"]["rows"], hit["peak"]["cols"]) == GRID
        assert {w["word"] for w in hit["top_words"]} <= set(QUERY.split())
    result = await call(server, "explain_hit", {"point_id": hits[0]["id"], "query_text": QUERY})
    assert not is_error(result), text_of(result)
    assert "tokens" in text_of(result)
    for word in QUERY.split():
        assert f"\n  {word}: " in text_of(result)
    client.close()
