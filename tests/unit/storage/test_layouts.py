"""CollectionLayout: the text each writer embedded, and images only where they are images.

LlamaIndex payloads are made by LlamaIndex itself (``node_to_metadata_dict``, what its
``QdrantVectorStore`` writes), LangChain payloads by langchain-qdrant's own
``_build_payloads``, and the text a LlamaIndex node embedded is compared with LlamaIndex's
``get_content(metadata_mode=MetadataMode.EMBED)``.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_qdrant import QdrantVectorStore
from llama_index.core.schema import Document, ImageNode, MetadataMode, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from PIL import Image
from qdrant_client import QdrantClient, models

from qdrant_xai.errors import CollectionError
from qdrant_xai.images.policy import ImageSourcePolicy
from qdrant_xai.storage.layouts import (
    LAYOUTS,
    CollectionLayout,
    custom_layout,
    layout_named,
    payload_value,
)
from qdrant_xai.storage.nodes import embedded_text

LLAMA = LAYOUTS["llamaindex"]
LANGCHAIN = LAYOUTS["langchain"]


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 120, 240)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _payload(node: Any) -> dict[str, Any]:
    """What LlamaIndex's QdrantVectorStore stores for ``node``."""
    return node_to_metadata_dict(node, remove_text=False, flat_metadata=False)


def _langchain(texts: list[str], metadatas: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """What langchain-qdrant's QdrantVectorStore stores for ``add_texts(texts, metadatas)``."""
    return QdrantVectorStore._build_payloads(texts, metadatas, "page_content", "metadata")


NODES = {
    "default templates": TextNode(
        text="a red circle and a blue square",
        metadata={"file_path": "/data/notes/shapes.txt", "file_name": "shapes.txt", "page": 3},
    ),
    "custom templates": TextNode(
        text="two green triangles",
        metadata={"file_path": "/data/p.png", "shapes": 2, "batch": "2024-05"},
        metadata_template="{key}=>{value}",
        metadata_separator=" | ",
        text_template="Context: {metadata_str}\n---\n{content}",
        excluded_embed_metadata_keys=["batch"],
    ),
    "excluded keys": Document(
        text="the whole file",
        metadata={"file_path": "/x/a.txt", "file_name": "a.txt", "creation_date": "2024-01-02"},
        excluded_embed_metadata_keys=["file_name", "creation_date"],
    ),
    "all keys excluded": TextNode(
        text="only the text", metadata={"a": 1}, excluded_embed_metadata_keys=["a"]
    ),
    "no metadata": TextNode(text="no metadata at all"),
    "odd values": TextNode(
        text="values", metadata={"n": None, "f": 1.5, "t": True, "l": ["x", 2], "d": {"k": "v"}}
    ),
    "braces in values": TextNode(text="{content} stays", metadata={"code": "{x} and {{y}}"}),
    "empty text": TextNode(text="", metadata={"title": "a title only"}),
}


@pytest.mark.parametrize("name", list(NODES))
def test_llamaindex_text_is_what_llamaindex_embedded(name: str) -> None:
    node = NODES[name]
    payload = _payload(node)
    expected = node.get_content(metadata_mode=MetadataMode.EMBED)
    if not expected.strip():
        assert LLAMA.text(payload) is None  # nothing to explain
        return
    assert LLAMA.text(payload) == expected
    bare = node.get_content(metadata_mode=MetadataMode.NONE)
    assert LLAMA.display_text(payload) == (bare or expected)
    assert LLAMA.kind_of(payload) == "text"


def test_the_old_metadata_seperator_spelling_is_read() -> None:
    payload = _payload(NODES["custom templates"])
    content = json.loads(payload["_node_content"])
    content["metadata_seperator"] = content.pop("metadata_separator")
    old = {**payload, "_node_content": json.dumps(content)}
    node = metadata_dict_to_node(old)  # LlamaIndex reads the old spelling too
    assert " | " in LLAMA.text(old)  # type: ignore[operator]
    assert LLAMA.text(old) == node.get_content(metadata_mode=MetadataMode.EMBED)


@pytest.mark.parametrize(
    "template",
    [
        "{key.__class__.__mro__}: {value}",
        "{key[0]}",
        "{value:>99999999}",
        "{missing}",
        "{",
        "{0}",
    ],
)
def test_hostile_or_broken_templates_give_the_bare_text(template: str) -> None:
    node = {"text": "plain", "metadata": {"k": "v"}, "metadata_template": template}
    assert embedded_text(node) == "plain"
    huge = {"text": "plain", "metadata": {"k": "v"}, "text_template": "{content:>9999999}"}
    assert embedded_text(huge) == "plain"


def test_llamaindex_image_nodes_are_images_and_their_text_is_not_embedded(tmp_path: Path) -> None:
    b64 = _png()
    inline = _payload(ImageNode(image=b64, text="a caption", metadata={"file_name": "x.png"}))
    assert LLAMA.image_entry(inline) == ("_node_content.image", b64)
    assert LLAMA.text(inline) is None and LLAMA.kind_of(inline, default="text") == "image"
    by_path = _payload(ImageNode(image_path="/data/images/cat.jpg"))
    assert LLAMA.image_source(by_path) == "/data/images/cat.jpg"
    by_url = _payload(ImageNode(image_url="https://cdn.example.org/cat"))
    assert LLAMA.image_source(by_url) == "https://cdn.example.org/cat"  # named an image


def test_file_keys_count_only_when_they_are_images(tmp_path: Path) -> None:
    notes = _payload(Document(text="notes", metadata={"file_path": "/docs/notes.txt"}))
    assert LLAMA.image_source(notes) is None and LLAMA.kind_of(notes) == "text"
    picture = {"file_path": "/docs/scan.PNG", "text": "x"}
    assert LLAMA.image_source(picture) == "/docs/scan.PNG"
    # an extensionless file: its first bytes decide, beneath the roots only
    (tmp_path / "scan_0001").write_bytes(base64.b64decode(_png()))
    (tmp_path / "README").write_text("words")
    policy = ImageSourcePolicy.from_roots([tmp_path])
    for name, image in [("scan_0001", True), ("README", False)]:
        payload = {"file_path": str(tmp_path / name)}
        assert (LLAMA.image_source(payload, sources=policy) is not None) is image
        assert LLAMA.image_source(payload) is None  # without a policy nothing is read


def test_langchain_csv_rows_and_text_files_are_texts() -> None:
    csv_row, text_file, photo, inline = _langchain(
        ["image: scene_0.png\ncaption: a red circle", "a blue square", "scene_1.png", _png()],
        [
            {"source": "data/captions.csv", "row": 0},
            {"source": "data/texts/caption_1.txt"},
            {"source": "/data/images/scene_1.png"},
            {},
        ],
    )
    for payload in (csv_row, text_file):
        assert LANGCHAIN.image_source(payload) is None
        assert LANGCHAIN.kind_of(payload) == "text"
        assert LANGCHAIN.text(payload) == payload["page_content"]
    assert LANGCHAIN.image_entry(photo) == ("metadata.source", "/data/images/scene_1.png")
    assert LANGCHAIN.text(photo) is None  # page_content names the image: no text was embedded
    assert LANGCHAIN.kind_of(photo, default="text") == "image"
    assert LANGCHAIN.image_entry(inline) == ("page_content", inline["page_content"])
    assert LANGCHAIN.text(inline) is None and LANGCHAIN.kind_of(inline) == "image"
    explicit = _langchain(["x"], [{"image_path": "/no/extension"}])[0]
    assert LANGCHAIN.image_source(explicit) == "/no/extension"  # a key named for an image


def test_other_presets_read_their_keys() -> None:
    mcp = {"document": "a note", "metadata": {"source": "notes.md"}}
    fastembed = LAYOUTS["fastembed"]
    assert fastembed.text(mcp) == "a note" and fastembed.image_source(mcp) is None
    photo = {"document": "", "metadata": {"url": "https://e.org/a.webp?s=1"}}
    assert fastembed.image_source(photo) == "https://e.org/a.webp?s=1"
    assert fastembed.kind_of(photo) == "image"
    tutorial = LAYOUTS["qdrant-tutorial"]
    both = {"image": "https://e.org/1", "caption": "a cat"}
    assert tutorial.image_source(both) == "https://e.org/1" and tutorial.text(both) == "a cat"
    assert payload_value({"a": json.dumps({"b": {"c": 1}})}, "a.b.c") == 1
    assert payload_value({"a": "{not json"}, "a.b") is None
    assert "_node_type" in LLAMA.payload_keys()


def test_custom_layouts() -> None:
    mine = custom_layout(vector="", image_keys=["meta.img"], text_keys=["body", "title"])
    assert (mine.name, mine.image_vector, mine.text_vector) == ("custom", "", "")
    assert mine.image_source({"meta": {"img": "x"}}) == "x"
    assert mine.text({"title": "t"}) == "t" and mine.file_keys == ()
    texts_only = custom_layout(text_keys=["body"])
    assert texts_only.image_keys == () and texts_only.image_vector == "*"
    on_preset = custom_layout(vector="dense", base="langchain")
    assert on_preset.name == "langchain (custom)" and on_preset.text_keys == ("page_content",)
    assert on_preset.text_images and on_preset.image_vector == "dense"
    for bad in [{}, {"text_keys": [""]}, {"image_keys": [".x"]}]:
        with pytest.raises(ValueError):
            custom_layout(**bad)  # type: ignore[arg-type]


def test_layout_named_refuses_auto_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="resolve_layout"):
        layout_named("auto")
    with pytest.raises(ValueError, match="choose one of") as err:
        layout_named("h" * 10_000)
    assert len(str(err.value)) < 400
    assert layout_named(LANGCHAIN) is LANGCHAIN


def test_any_vector_resolves_to_the_only_one_or_asks() -> None:
    client = QdrantClient(":memory:")
    params = models.VectorParams(size=4, distance=models.Distance.COSINE)
    client.create_collection("one", vectors_config={"dense": params})
    client.create_collection("two", vectors_config={"a": params, "b": params})
    mine = custom_layout(text_keys=["body"])
    assert mine.resolve(client, "one").using("text") == "dense"
    with pytest.raises(CollectionError, match="--vector NAME"):
        mine.resolve(client, "two")
    assert CollectionLayout("x", image_vector="b", text_vector="a").resolve(client, "two")


def test_langchain_texts_that_name_images() -> None:
    """LangChain keeps what it embedded as ``page_content``: an image's path or file name
    there is the image, a sentence that mentions one is a text."""
    spaced, sentence, bare, url = _langchain(
        ["holiday photo.png", "see figure.png", "cat.JPG", "https://e.org/c/dog.webp"],
        [
            {"source": "/data/images/holiday photo.png"},
            {"source": "notes.txt"},
            {},
            {},
        ],
    )
    assert LANGCHAIN.text(spaced) is None and LANGCHAIN.image_source(spaced).endswith("o.png")  # type: ignore[union-attr]
    assert LANGCHAIN.text(sentence) == "see figure.png"
    assert LANGCHAIN.image_source(sentence) is None and LANGCHAIN.kind_of(sentence) == "text"
    assert LANGCHAIN.image_entry(bare) == ("page_content", "cat.JPG")
    assert LANGCHAIN.image_entry(url) == ("page_content", "https://e.org/c/dog.webp")
    assert LAYOUTS["fastembed"].text({"document": "cat.png"}) == "cat.png"  # no text_images
