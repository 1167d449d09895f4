"""HTML reports: each image once, at most a megabyte, a legend, the model named."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, Indexer, Searcher
from qdrant_xai.cli import main
from qdrant_xai.demo.run import run_demo
from qdrant_xai.demo.world import write_scene_folder
from qdrant_xai.explain import Explainer, Explanation
from qdrant_xai.explain.grounding import Grounding
from qdrant_xai.images.load import load_image
from qdrant_xai.render import render_report, render_section, write_report

MB = 1_000_000


def images_of(page: str) -> list[str]:
    """Every data URI of a photo in ``page`` (JPEG or WebP; layers are PNG)."""
    return re.findall(r"data:image/(?:jpeg|webp);base64,[A-Za-z0-9+/=]+", page)


def test_each_photo_is_embedded_once_and_layers_sit_over_the_crop(
    strips: tuple[QdrantClient, list[Explanation]],
) -> None:
    _, explanations = strips
    page = render_report([("a red circle", explanations)], model="shapes")
    photos = images_of(page)
    assert len(photos) == len(set(photos)) == len(explanations)
    # every hit: one heatmap layer; every grounded word: a figure with its layer or a mark
    assert page.count("alt='heatmap'") == len(explanations)
    words = sum(len(e.grounding.words) for e in explanations if e.grounding is not None)
    assert page.count("<figcaption>") == words
    # the 1600x90 strip: the crop outlined at 47.19 %..52.81 % of the picture's width
    assert "left:47.188%;top:0.000%;width:5.625%;height:100.000%" in page
    assert "1600×90 px" in page and "90×1600 px" in page
    # nothing from the network: no http(s) reference, no script
    assert not re.search(r"(src|href)=['\"]?https?:", page) and "<script" not in page
    assert "@import" not in page and "url(http" not in page


def test_the_header_names_the_model_and_the_legend_explains_the_colours(
    strips: tuple[QdrantClient, list[Explanation]], tmp_path: Path
) -> None:
    _, explanations = strips
    path = write_report(
        tmp_path / "r.html", [("a red circle", explanations)], subtitle="collection 'c'", model="m1"
    )
    page = path.read_text(encoding="utf-8")
    assert "<p class='meta'>model m1 · collection &#x27;c&#x27;</p>" in page
    legend = page[page.index("<div class='legend'>") :]
    for meaning in ("no evidence", "raises the match", "lowers it", "outside the model's crop"):
        assert meaning in legend
    assert "(hit) / (query)" in legend and "near zero" in legend
    assert "model" not in render_report([("q", explanations[:1])]).split("</h1>")[1][:40]


def test_a_near_zero_grounding_map_is_marked_and_not_drawn(
    strips: tuple[QdrantClient, list[Explanation]],
) -> None:
    _, explanations = strips
    hit = explanations[0]
    assert hit.grounding is not None and len(hit.grounding.words) == 2
    maps = np.abs(hit.grounding.maps)
    maps[0] = maps[1] * 0.01
    faint = dataclasses.replace(hit, grounding=Grounding(hit.grounding.words, maps))
    page = render_section("a red circle", [faint])
    figures = re.findall(r"<figure[^>]*>.*?</figure>", page)
    assert len(figures) == 2
    marked, drawn = figures
    assert "near zero" in marked and "<img" not in marked and "class='nz'" in marked
    assert "near zero" not in drawn and drawn.count("<img") == 1


def test_an_image_query_embeds_the_query_image_once(
    tmp_path: Path, shapes_encoder: ClipEncoder
) -> None:
    captions = write_scene_folder(tmp_path / "scenes", 6, seed=5, size=64)
    client = QdrantClient(":memory:")
    Indexer(client, shapes_encoder, collection_name="s").index_folder(
        tmp_path / "scenes", captions=captions, progress=False
    )
    query = load_image(tmp_path / "scenes" / "scene_0000.png")
    hits = Searcher(client, shapes_encoder, collection_name="s").search_texts(query, limit=4)
    explanations = Explainer(shapes_encoder, client, collection_name="s").explain(query, hits)
    assert all(e.heatmap_side == "query" for e in explanations)
    page = render_report([(query.image, explanations)])
    assert len(images_of(page)) == 1  # the query image, under every hit's heatmap
    assert page.count("alt='heatmap'") == 4 and "(query)" in page


def test_hits_are_named_by_the_file_the_layout_read(
    strips: tuple[QdrantClient, list[Explanation]],
) -> None:
    _, explanations = strips
    hit = explanations[0]
    foreign = hit.hit.model_copy(update={"payload": {"page_content": "x"}})
    for source, shown in (
        ("/data/photos/cat.jpg", "cat.jpg"),
        ("https://example.org/img/dog.png?size=large", "dog.png"),
        ("data:image/png;base64,iVBORw0KGgo=", "inline image"),
    ):
        named = dataclasses.replace(hit, hit=foreign, image_source=source)
        page = render_section("a red circle", [named])
        meta = re.search(r"<div class='meta'>score [^<]*</div>", page)
        assert meta is not None and meta.group(0).endswith(f" · {shown}</div>"), meta


@pytest.mark.slow
def test_the_demo_report_weighs_under_a_megabyte(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", progress=False)
    page = result.report.read_text(encoding="utf-8")
    assert len(page.encode("utf-8")) <= MB  # 3.8 MB before the pictures were shrunk
    photos = images_of(page)
    assert len(photos) == len(set(photos)) > 0
    assert "model shapes" in page.split("</h1>")[1][:60]
    assert page.count("alt='heatmap'") >= 16  # 4 queries x 4 hits, and image queries


@pytest.mark.slow
def test_ten_hits_with_grounding_over_large_photos_weigh_under_a_megabyte(
    large: list[Explanation], tmp_path: Path
) -> None:
    assert len(large) == 10 and all(e.ok and e.grounding is not None for e in large)
    path = write_report(tmp_path / "large.html", [("a red circle", large)], model="shapes")
    page = path.read_text(encoding="utf-8")
    assert len(page.encode("utf-8")) <= MB
    photos = images_of(page)
    assert len(photos) == len(set(photos)) == 10  # each photo once
    assert page.count("alt='heatmap'") == 10 and "no overlay" not in page
    assert "4000×3000 px" in page and "1600×90 px" in page


def test_search_html_names_the_model_recorded_in_the_collection(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "scenes"
    write_scene_folder(folder, 4, seed=3, size=48)
    common = ["--path", str(tmp_path / "q"), "--collection", "c"]
    model = ["--model", str(tiny_model_dir)]
    assert main(["index", str(folder), "--no-progress", *common, *model]) == 0
    html = tmp_path / "r.html"
    args = ["search", "a red circle", "--explain", "--grounding", "--limit", "2", *common]
    assert main([*args, "--html", str(html)]) == 0  # no --model: the recorded one
    capsys.readouterr()
    header = html.read_text(encoding="utf-8").split("</h1>")[1][:300]
    assert f"model {tiny_model_dir}" in header and "collection &#x27;c&#x27;" in header
