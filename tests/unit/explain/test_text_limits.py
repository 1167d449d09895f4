"""Bounded work per text: an over-long query is refused before any model work, a hit's long
text is explained from its head, and what the model never saw is reported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Explainer, Indexer, InputTooLargeError, Searcher, TextLimits
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.encoding.words import split_words

COLLECTION = "limits"


def _words(n: int) -> str:
    vocabulary = ["red", "blue", "circle", "square", "green", "cross", "small", "left"]
    return " ".join(vocabulary[i % len(vocabulary)] for i in range(n))


@pytest.fixture
def scenes(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    captions = write_scene_folder(images, 3, seed=5)
    with captions.open("a", encoding="utf-8") as out:  # one caption far past any context
        out.write(f"scene_0000.png,{_words(3000)}\n")
    return images, captions


@pytest.fixture
def client(tiny_encoder: ClipEncoder, scenes: tuple[Path, Path]) -> Iterator[QdrantClient]:
    qdrant = QdrantClient(":memory:")
    images, captions = scenes
    Indexer(qdrant, tiny_encoder, collection_name=COLLECTION).index_folder(
        images, captions=captions, progress=False
    )
    yield qdrant
    qdrant.close()


class _NoModel:
    """Fails the test if the encoder is asked for any text work."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self.encoder = encoder

    def __getattr__(self, name: str) -> Any:
        if name in ("embed_texts", "encode_texts", "words_in_context"):
            raise AssertionError(f"model work ({name}) before the query was checked")
        return getattr(self.encoder, name)


def test_searcher_refuses_a_long_query_before_any_work(
    tiny_encoder: ClipEncoder, client: QdrantClient
) -> None:
    searcher = Searcher(
        client,
        _NoModel(tiny_encoder),  # type: ignore[arg-type]
        collection_name=COLLECTION,
        text_limits=TextLimits(max_chars=100),
    )
    query = "x" * 101
    for call in (
        lambda: searcher.search_images(query),
        lambda: searcher.score_points(query, [1]),
    ):
        with pytest.raises(InputTooLargeError) as raised:
            call()
        error = raised.value
        assert (error.setting, error.limit, error.size) == ("TextLimits.max_chars", 100, 101)
        assert "TextLimits.max_chars" in str(error) and query not in str(error)


def test_default_limits_refuse_a_megabyte_query(
    tiny_encoder: ClipEncoder, client: QdrantClient
) -> None:
    explainer = Explainer(_NoModel(tiny_encoder), client, collection_name=COLLECTION)  # type: ignore[arg-type]
    hits = Searcher(client, tiny_encoder, collection_name=COLLECTION).search_images("a red")
    with pytest.raises(InputTooLargeError, match=r"TextLimits\.max_chars"):
        explainer.explain("red " * 250_000, hits)
    searcher = Searcher(client, _NoModel(tiny_encoder), collection_name=COLLECTION)  # type: ignore[arg-type]
    with pytest.raises(InputTooLargeError, match=r"TextLimits\.max_words"):
        searcher.search_images("a " * 30_000)


def test_words_past_the_context_of_a_query_are_reported(
    tiny_encoder: ClipEncoder, client: QdrantClient
) -> None:
    query = _words(3 * tiny_encoder.max_text_tokens)
    hits = Searcher(client, tiny_encoder, collection_name=COLLECTION).search_images(query, limit=2)
    for explanation in Explainer(tiny_encoder, client, collection_name=COLLECTION).explain(
        query, hits
    ):
        seen = tiny_encoder.words_in_context(query)
        assert len(explanation.words) == seen
        assert explanation.words_left_out == len(split_words(query)) - seen > 0
        assert explanation.chars_left_out == 0
        note = explanation.left_out_note()
        assert note is not None and f"{explanation.words_left_out:,} words of the query" in note
        data = explanation.to_dict()
        assert data["words_left_out"] == explanation.words_left_out
        assert data["chars_left_out"] == 0
    short = Explainer(tiny_encoder, client, collection_name=COLLECTION).explain("a red", hits)
    assert short[0].words_left_out == 0 and short[0].left_out_note() is None


@pytest.mark.parametrize("word_method", ["occlusion", "tokens", "context", "prefix"])
def test_a_long_hit_text_is_explained_from_its_head(
    tiny_encoder: ClipEncoder,
    client: QdrantClient,
    scenes: tuple[Path, Path],
    word_method: str,
) -> None:
    image = scenes[0] / "scene_0000.png"
    hits = Searcher(client, tiny_encoder, collection_name=COLLECTION).search_texts(image, limit=20)
    (long,) = [h for h in hits if len((h.payload or {}).get("text", "")) > 1000]
    full = long.payload["text"]  # type: ignore[index]
    explainer = Explainer(
        tiny_encoder,
        client,
        collection_name=COLLECTION,
        text_limits=TextLimits(max_chars=500),
        word_method=word_method,
    )
    (explanation,) = explainer.explain(image, [long])
    assert explanation.ok, explanation.error
    assert explanation.text == full[:500]
    assert explanation.chars_left_out == len(full) - 500
    assert explanation.words_left_out == len(split_words(full[:500])) - len(explanation.words)
    assert 0 < len(explanation.words) <= tiny_encoder.max_text_tokens
    note = explanation.left_out_note()
    assert note is not None and "hit's text" in note and "TextLimits.max_chars" in note
    # the default limit reads the whole text: only the words past the context are left out
    (whole,) = Explainer(tiny_encoder, client, collection_name=COLLECTION).explain(image, [long])
    assert whole.text == full and whole.chars_left_out == 0
    assert whole.words_left_out == 3000 - len(whole.words)
