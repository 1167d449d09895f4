"""Hostile payloads stored in real collections, and every other reader of payloads.

Points of real embedded Qdrant collections are overwritten with hostile payloads and read
back through the explainer, the searcher, the MCP backend, the LangChain retriever and
``recorded_model``; a backfill runs over a collection holding some; and the collection
layouts' readers, ``parse_point_id`` and the MCP/LangChain formatting of hits get random
payloads. Only :class:`~qdrant_xai.QdrantXaiError` subclasses may come out, and what a
reader writes back (the backfill's features) must be valid.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

from qdrant_xai import Backfiller, Explainer, ImageSourcePolicy, PayloadKeys, Searcher
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.layouts import LAYOUTS
from qdrant_xai.storage.schema import parse_point_id, recorded_model
from tests.hardening._fuzz import FAMILY, FuzzWorld, Tally, check_explanations
from tests.hardening._fuzz_strategies import (
    HOSTILE_TEXT,
    JSON,
    PAYLOAD_KEYS,
    deep,
    hostile_payload,
)

pytestmark = pytest.mark.hardening


def test_embedded_collection_with_hostile_payloads(
    fuzz_world: FuzzWorld, figures: Any, fuzz_tally: Tally
) -> None:
    """Points of a real collection overwritten with hostile payloads, read back through the
    explainer, the searcher, the MCP backend, the LangChain retriever and recorded_model."""
    from langchain_qdrant_xai import QdrantXaiRetriever, describe_documents, documents_html
    from qdrant_xai_mcp import ServerSettings
    from qdrant_xai_mcp.server import XaiBackend

    n = figures.count(FAMILY, "embedded collection, overwritten payloads", reduced=40, full=400)
    client = fuzz_world.client
    reads = Counter[str]()

    @settings(max_examples=n)
    @given(
        case=hostile_payload(fuzz_world),
        reader=st.sampled_from(["explainer", "mcp", "langchain", "recorded_model"]),
    )
    def run(case: tuple[models.Record, dict[str, Any]], reader: str) -> None:
        point, payload = case
        features = (point.payload or {}).get(PayloadKeys.FEATURES) or {}
        name = f"fuzz_{features.get('codec', 'fp16')}"  # both collections share point ids
        original = copy.deepcopy(point.payload)
        client.overwrite_payload(name, payload=payload, points=[point.id])
        try:
            kind = "text" if (point.payload or {}).get(PayloadKeys.KIND) == "text" else "image"
            reads[reader] += 1
            if reader == "explainer":
                query: Any = "a red circle" if kind == "image" else fuzz_world.query_image
                searcher = Searcher(client, fuzz_world.encoder, collection_name=name)
                hits = (searcher.search_images if kind == "image" else searcher.search_texts)(
                    query, limit=20
                )
                explainer = Explainer(
                    fuzz_world.encoder,
                    client,
                    collection_name=name,
                    image_roots=[fuzz_world.folder],
                )
                result = fuzz_tally.run(lambda: explainer.explain(query, hits))
                if result is not None:
                    fetched = client.retrieve(name, ids=[h.id for h in hits], with_payload=True)
                    by_id = {str(r.id): r.payload or {} for r in fetched}
                    for e in result:
                        check_explanations(fuzz_world, by_id[str(e.id)], [e], [e.hit])
            elif reader == "mcp":
                backend = XaiBackend(
                    ServerSettings(collection_name=name, image_roots=(fuzz_world.folder,)),
                    client,
                    encoder=fuzz_world.encoder,
                )
                result = fuzz_tally.run(
                    lambda: (
                        backend.search_images("a red circle", limit=3)
                        if kind == "image"
                        else backend.search_texts(
                            image_path=str(fuzz_world.query_image.source), limit=3
                        )
                    )
                )
                if result is not None:
                    json.dumps(result.model_dump(mode="json"))
                    fuzz_tally.run(
                        lambda: backend.explain_hit(str(point.id), query_text="a circle")
                    )
            elif reader == "langchain":
                retriever = QdrantXaiRetriever(
                    client=client,
                    encoder=fuzz_world.encoder,
                    collection_name=name,
                    k=3,
                    image_roots=[fuzz_world.folder],
                )
                docs = fuzz_tally.run(lambda: retriever.invoke("a red circle"))
                if docs is not None:
                    describe_documents(docs)
                    documents_html(docs)
            else:
                found = fuzz_tally.run(lambda: recorded_model(client, name))
                assert found is None or isinstance(found, str)
        finally:
            client.overwrite_payload(name, payload=original or {}, points=[point.id])

    run()
    figures.record(
        FAMILY,
        "embedded collection: reads by reader",
        ", ".join(f"{k} {v}" for k, v in sorted(reads.items())),
    )
    assert not fuzz_tally.other


def test_backfill_over_hostile_payloads(
    fuzz_world: FuzzWorld, figures: Any, fuzz_tally: Tally, tmp_path: Path
) -> None:
    """A backfill over a collection of points without features (as another tool writes
    them), some with hostile payloads: each point is updated, unchanged or reported as failed
    with its reason, the counts add up, and every point it wrote holds valid features."""
    n = figures.count(FAMILY, "backfill runs over hostile payloads", reduced=10, full=100)
    client = fuzz_world.client
    source = "fuzz_fp16"
    points, _ = client.scroll(source, limit=100, with_payload=True, with_vectors=True)
    totals = Counter[str]()

    @settings(max_examples=n)
    @given(
        cases=st.lists(hostile_payload(fuzz_world), min_size=1, max_size=4),
        layout=st.sampled_from(["qdrant-xai", "qdrant-tutorial"]),
    )
    def run(cases: list[tuple[models.Record, dict[str, Any]]], layout: str) -> None:
        name = "fuzz_backfill"
        if client.collection_exists(name):
            client.delete_collection(name)
        client.create_collection(
            name, vectors_config=client.get_collection(source).config.params.vectors
        )
        client.upsert(name, points=[_without_features(p) for p in points])
        for point, payload in cases:
            client.overwrite_payload(name, payload=payload, points=[point.id])
        backfiller = Backfiller(
            client,
            fuzz_world.encoder,
            collection_name=name,
            layout=layout,
            sources=ImageSourcePolicy.from_roots([fuzz_world.folder]),
        )
        summary = fuzz_tally.run(lambda: backfiller.run(progress=False))
        if summary is not None:
            assert summary.updated + summary.unchanged + len(summary.failed) == len(points)
            assert all(reason for _, reason in summary.failed)
            _check_backfilled(fuzz_world, client, name, {str(p.id) for p, _ in cases}, layout)
            totals["updated"] += summary.updated
            totals["unchanged"] += summary.unchanged
            totals["failed"] += len(summary.failed)

    run()
    figures.record(
        FAMILY,
        "backfill: points updated / unchanged / reported failed",
        f"{totals['updated']} / {totals['unchanged']} / {totals['failed']}",
    )
    assert not fuzz_tally.other


def _without_features(point: models.Record) -> models.PointStruct:
    payload = {k: v for k, v in (point.payload or {}).items() if not k.startswith("xai_")}
    return models.PointStruct(id=point.id, vector=point.vector, payload=payload)  # type: ignore[arg-type]


def _check_backfilled(
    world: FuzzWorld, client: QdrantClient, name: str, hostile: set[str], layout: str
) -> None:
    """Every point the backfill was given clean (no features, a readable image or a text)
    now holds valid features of this model (with the layout the points were written in);
    the hostile ones may be left as they were."""
    records, _ = client.scroll(name, limit=100, with_payload=True)
    for record in records:
        if str(record.id) in hostile:
            continue
        payload = record.payload or {}
        if layout != "qdrant-xai" and PayloadKeys.FINGERPRINT not in payload:
            continue  # the tutorial layout looks for the image under "image", not "source"
        assert payload.get(PayloadKeys.FINGERPRINT) == world.fingerprint, "a clean point skipped"
        features = payload.get(PayloadKeys.FEATURES)
        if payload.get(PayloadKeys.KIND) == "image":
            shape: tuple[int, ...] = world.feature_shape
        else:
            shape = (len(payload[PayloadKeys.WORDS]), world.encoder.dim)
        PayloadFeatureCodec().decode(features, fingerprint=world.fingerprint, shape=shape)


# -- readers of single fields ---------------------------------------------------------------


@pytest.mark.slow
def test_payload_readers_of_layouts_ids_and_formatting(
    fuzz_world: FuzzWorld, figures: Any, fuzz_tally: Tally
) -> None:
    """The layouts' readers, point-id parsing of caption ids, the LangChain caption lookup,
    the MCP formatting of unexplained hits: on random payloads."""
    from langchain_qdrant_xai.documents import caption_ids, first_caption
    from qdrant_xai_mcp.results import unexplained_hit, user_payload

    n = figures.count(FAMILY, "layout readers, ids and formatting", reduced=300, full=1500)

    @settings(max_examples=n)
    @given(
        payload=st.one_of(
            st.dictionaries(st.sampled_from(PAYLOAD_KEYS), JSON, max_size=8),
            st.dictionaries(st.text(max_size=8), JSON, max_size=6),
            st.sampled_from(PAYLOAD_KEYS).map(lambda k: {k: deep(400)}),
            st.builds(lambda t: {"_node_content": t}, HOSTILE_TEXT),
        ),
        pid=st.one_of(JSON, st.uuids().map(str), st.sampled_from(["²", "١٢", "٣", " 7 "])),
    )
    def run(payload: dict[str, Any], pid: Any) -> None:
        def read() -> None:
            point = models.ScoredPoint(id=1, version=0, score=0.1, payload=payload)
            for reader in LAYOUTS.values():
                source, text = reader.image_source(payload), reader.text(payload)
                assert source is None or (isinstance(source, str) and source.strip())
                assert text is None or (isinstance(text, str) and text.strip())
                unexplained_hit(point, 0, "image", reader, "a reason")
            json.dumps(user_payload(payload), allow_nan=True)
            caption_ids([point])
            first_caption({PayloadKeys.CAPTION_IDS: [pid]}, {})

        fuzz_tally.run(read)
        parsed = fuzz_tally.run(lambda: parse_point_id(pid))
        if parsed is not None:
            assert (isinstance(parsed, int) and 0 <= parsed < 2**64) or isinstance(parsed, str)

    run()
    assert not fuzz_tally.other
