"""Everything a report shows from a payload or a query is text, never markup."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Searcher
from qdrant_xai.encoding.words import Word
from qdrant_xai.explain import Explainer, Explanation
from qdrant_xai.explain.grounding import Grounding
from qdrant_xai.explain.rationales import Rationale
from qdrant_xai.render import render_report
from tests.unit.render._photos import HOSTILE_ATTRIBUTE, HOSTILE_SCRIPT

ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
ESCAPED_ATTRIBUTE = "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"


class Page(HTMLParser):
    """The elements, attributes and text of a page, as a browser would parse them."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_inert(page: str, shown: list[str]) -> None:
    """No script, no event handler, no injected image; each of ``shown`` is in the page's
    text, as text."""
    assert HOSTILE_SCRIPT not in page and "<img src=x" not in page
    parsed = Page(page)
    assert not [t for t, _ in parsed.tags if t == "script"]
    assert not [(t, a) for t, attrs in parsed.tags for a in attrs if a.startswith("on")]
    assert not [t for t, attrs in parsed.tags if t == "img" and attrs.get("src") == "x"]
    text = "".join(parsed.text)
    for value in shown:
        assert value in text, value


def test_hostile_captions_render_as_text(
    strips: tuple[QdrantClient, list[Explanation]], shapes_encoder: ClipEncoder
) -> None:
    """Captions indexed from the CSV hold markup; an image query finds and attributes them."""
    client, explanations = strips
    photo = next(e for e in explanations if e.original_image().size == (640, 480))
    query = photo.original_image()
    hits = Searcher(client, shapes_encoder, collection_name="strips").search_texts(query, limit=3)
    texts = Explainer(shapes_encoder, client, collection_name="strips").explain(query, hits)
    assert {e.text for e in texts} >= {
        f"a red circle {HOSTILE_SCRIPT}",
        f"a red circle {HOSTILE_ATTRIBUTE}",
    }
    assert all(e.words_side == "hit" and e.words for e in texts)
    page = render_report([(query, texts)])
    assert_inert(page, [f"a red circle {HOSTILE_SCRIPT}", f"a red circle {HOSTILE_ATTRIBUTE}"])
    # the text between the attributed words is escaped, whatever the word spans cut
    assert "&lt;" in page and "&gt;" in page and "&quot;" in page


def test_hostile_file_names_words_concepts_and_queries_render_as_text(
    strips: tuple[QdrantClient, list[Explanation]],
) -> None:
    _, explanations = strips
    first, second, third = explanations
    # a file name: the payload names a file that is not there (the reason quotes it)
    planted = first.hit.model_copy(
        update={"payload": {**(first.hit.payload or {}), "source": HOSTILE_ATTRIBUTE}}
    )
    named = dataclasses.replace(first, hit=planted, image_source=HOSTILE_ATTRIBUTE)
    # a layout's image source (LangChain, LlamaIndex): no payload `source`
    foreign = second.hit.model_copy(update={"payload": {"metadata": {}}})
    layout = dataclasses.replace(second, hit=foreign, image_source=f"/x/{HOSTILE_SCRIPT[:8]}")
    # grounded words and a rationale's concept
    assert third.grounding is not None
    words = (Word(HOSTILE_SCRIPT, 0, 3), Word(HOSTILE_ATTRIBUTE, 4, 9))
    concept = Rationale(HOSTILE_ATTRIBUTE, 0.3, 0.2, 0.1, 3.0)
    marked = dataclasses.replace(
        third, grounding=Grounding(words, third.grounding.maps), rationales=(concept,)
    )
    query = f"a red circle {HOSTILE_SCRIPT} {HOSTILE_ATTRIBUTE}"
    page = render_report(
        [(query, [named, layout, marked])], title=HOSTILE_SCRIPT, subtitle=HOSTILE_ATTRIBUTE
    )
    assert "no overlay" in page  # the planted file cannot be read
    assert_inert(page, [HOSTILE_SCRIPT, HOSTILE_ATTRIBUTE, query, "<script>"])
    assert ESCAPED_SCRIPT in page and ESCAPED_ATTRIBUTE in page
    # in attributes too (a word's picture is labelled with the word)
    assert f"alt='{ESCAPED_ATTRIBUTE}'" in page
