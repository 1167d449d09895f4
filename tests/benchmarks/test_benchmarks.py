"""The benchmark harness (structure of its output at tiny scale) and the encoder's fast paths:
SDPA for the plain embeddings, the memory of recent queries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from qdrant_xai import ClipEncoder
from qdrant_xai.demo.world import generate_scenes
from qdrant_xai.encoding.encoder import QUERY_CACHE_SIZE
from qdrant_xai.explain.words.occlusion import WordOcclusion
from tests.benchmarks.explaining import loo_sequential
from tests.benchmarks.harness import BenchConfig, interleaved, target
from tests.benchmarks.inputs import eager_embed_pixels, eager_embed_texts, query_stream
from tests.benchmarks.run import SECTIONS, main

pytestmark = pytest.mark.slow

TEXTS = [
    "a red circle",
    "a blue square and a green cross and a yellow triangle",
    "purple",
    "a red circle, a blue square, a green cross, a yellow triangle",
]


# -- the SDPA twin: same values as the eager model ----------------------------------------------


@pytest.mark.parametrize("which", ["tiny", "shapes"])
def test_plain_embedding_paths_equal_the_eager_model(
    which: str, tiny_encoder: ClipEncoder, shapes_encoder: ClipEncoder
) -> None:
    encoder = tiny_encoder if which == "tiny" else shapes_encoder
    assert encoder.model.config._attn_implementation == "eager"
    assert encoder._embedder.config._attn_implementation == "sdpa"
    assert encoder._embedder.text_model.config._attn_implementation == "sdpa"
    assert encoder._embedder.vision_model.config._attn_implementation == "sdpa"
    # texts of different lengths: the padded batch goes through SDPA's masked path
    np.testing.assert_allclose(
        encoder.embed_texts(TEXTS), eager_embed_texts(encoder, TEXTS), atol=1e-5
    )
    images = [scene.image for scene in generate_scenes(3, seed=2, size=64)]
    pixels = encoder.pixel_values(images)
    eager = eager_embed_pixels(encoder, pixels)
    np.testing.assert_allclose(encoder.embed_images(images), eager, atol=1e-5)
    np.testing.assert_allclose(encoder.embed_pixels(pixels, batch_size=2), eager, atol=1e-5)
    # and the feature path (eager, with hooks) still gives the same embeddings
    features = encoder.encode_images(images)
    np.testing.assert_allclose(np.stack([f.embedding for f in features]), eager, atol=1e-5)
    texts = encoder.encode_texts(TEXTS)
    np.testing.assert_allclose(
        np.stack([t.embedding for t in texts]), encoder.embed_texts(TEXTS), atol=1e-5
    )


def test_the_twin_shares_every_weight_and_follows_in_place_updates(tiny_model_dir: Path) -> None:
    encoder = ClipEncoder.from_pretrained(tiny_model_dir)
    twin = encoder._embedder
    assert twin is not encoder.model
    ours = dict(encoder.model.named_parameters())
    for name, parameter in twin.named_parameters():
        assert parameter is ours[name], name
    before = encoder.embed_images([scene.image for scene in generate_scenes(1, seed=3, size=64)])
    with torch.no_grad():
        encoder.model.visual_projection.weight.mul_(-1.0)
    after = encoder.embed_images([scene.image for scene in generate_scenes(1, seed=3, size=64)])
    np.testing.assert_allclose(after, -before, atol=1e-5)


def test_bf16_embedding_paths_agree_with_the_eager_model(tiny_model_dir: Path) -> None:
    encoder = ClipEncoder.from_pretrained(tiny_model_dir, dtype="bfloat16")
    assert encoder._embedder.config._attn_implementation == "sdpa"
    fast, eager = encoder.embed_texts(TEXTS), eager_embed_texts(encoder, TEXTS)
    cosine = (
        (fast * eager).sum(axis=1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(eager, axis=1)
    )
    assert cosine.min() > 0.999


# -- the memory of recent queries ---------------------------------------------------------------


def _count_text_forwards(encoder: ClipEncoder) -> list[int]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    encoder._embedder.text_model.register_forward_hook(hook)
    return calls


def test_a_repeated_query_is_encoded_once_and_returned_as_a_copy(tiny_model_dir: Path) -> None:
    encoder = ClipEncoder.from_pretrained(tiny_model_dir)
    calls = _count_text_forwards(encoder)
    first = encoder.embed_texts(["a red circle"])
    first[0, 0] = 123.0  # the caller's copy: the remembered value is untouched
    second = encoder.embed_texts(["a red circle"])
    assert calls[0] == 1
    assert second[0, 0] != 123.0
    np.testing.assert_array_equal(second, encoder._embed_texts(["a red circle"]))
    # batches are always computed, never served from memory
    encoder.embed_texts(["a red circle", "a blue square"])
    encoder.embed_texts(["a red circle", "a blue square"])
    assert calls[0] == 4  # including the _embed_texts call above


def test_remembered_queries_are_forgotten_when_the_text_weights_change(
    tiny_model_dir: Path,
) -> None:
    encoder = ClipEncoder.from_pretrained(tiny_model_dir)
    before = encoder.embed_texts(["a red circle"])
    with torch.no_grad():
        projection = encoder.model.text_projection.weight
        projection.add_(torch.randn_like(projection))
    after = encoder.embed_texts(["a red circle"])
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, eager_embed_texts(encoder, ["a red circle"]), atol=1e-5)


def test_the_query_memory_is_bounded(tiny_model_dir: Path) -> None:
    encoder = ClipEncoder.from_pretrained(tiny_model_dir)
    for query in list(query_stream())[: QUERY_CACHE_SIZE + 5]:
        encoder.embed_texts([query])
    assert len(encoder._queries) == QUERY_CACHE_SIZE


# -- harness pieces -----------------------------------------------------------------------------


def test_target_says_met_or_missed_with_the_margin() -> None:
    assert target(0.95, 0.9, at_least=True, unit="x").startswith("**met** (0.95x ≥ 0.9x")
    assert "margin +0.05" in target(0.95, 0.9, at_least=True)
    missed = target(2.6, 1.3, at_least=False, unit="x")
    assert missed.startswith("**missed** by 1.3x") and "target ≤ 1.3x" in missed


def test_interleaved_runs_every_variant_reps_times() -> None:
    order: list[str] = []
    times = interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3, warmup=False
    )
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert order == ["a", "b", "b", "a", "a", "b"]  # the order rotates per round


def test_query_stream_never_repeats() -> None:
    queries = list(query_stream())
    assert len(queries) == len(set(queries)) == 400
    assert all(len(q.split()) == 7 for q in queries)


def test_sequential_and_batched_leave_one_word_out_agree(tiny_encoder: ClipEncoder) -> None:
    caption = "a red circle, a blue square, a green cross"
    target_embedding = tiny_encoder.embed_texts(["a purple triangle"])[0]
    ((_, batched),) = WordOcclusion().attribute(tiny_encoder, [caption], target_embedding[None])
    np.testing.assert_allclose(
        loo_sequential(tiny_encoder, caption, target_embedding), batched, atol=1e-6
    )


# -- the whole run, at tiny scale ---------------------------------------------------------------


def test_quick_run_writes_every_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QDRANT_URL", raising=False)
    out, data_file = tmp_path / "BENCH.md", tmp_path / "bench.json"
    assert main(["--quick", "--out", str(out), "--json", str(data_file)]) == 0
    text = out.read_text(encoding="utf-8")
    data = json.loads(data_file.read_text(encoding="utf-8"))
    config = BenchConfig.quick_run()

    assert text.startswith("# Benchmarks\n")
    for heading in (
        "## Machine",
        "## 1. Indexing throughput",
        "## 2. Search alone vs. search + explanations",
        "## 3. Per-hit cost of each method",
        "## 4. Leave-one-word-out: batched vs. sequential",
        "## 5. Payload bytes per point, and codec fidelity",
        "## 6. Scale",
        "## 7. bf16 vs. fp32 on CPU",
        "## 8. Sidecar storage: payload codec vs. multivectors",
        "## Where the time goes",
        "### Changed in this run",
    ):
        assert heading in text, heading
    for key in ("machine", "torch threads", "dtype", "versions", "load average (1/5/15 min)"):
        assert f"| {key} |" in text, key
    for package in ("torch", "transformers", "qdrant-client"):
        assert package in data["setup"]["versions"]
    assert set(data["sections"]) == set(SECTIONS)
    sections = data["sections"]

    # every target is stated next to its figure
    assert text.count("Target") >= 5
    # 1: 2, 2: 2, render: 2 (weight, time), 4: 1, 5: 1
    assert text.count("**met**") + text.count("**missed**") == 8

    indexing = sections["indexing"]
    assert set(indexing["images_per_s"]) == {"bare", "bare_eager", "features", "standard", "full"}
    assert all(rate > 0 for rate in indexing["images_per_s"].values())
    assert indexing["ratio_standard"] == pytest.approx(
        indexing["images_per_s"]["standard"] / indexing["images_per_s"]["bare"]
    )

    search = sections["search"]
    assert search["ratio"]["search"] == 1.0
    assert {"explain_default", "explain_heatmaps", "explain_default_forget"} <= set(search["ratio"])

    methods = {(c["kind"], c["name"]) for c in sections["methods"]["costs"]}
    for name in sections["methods"]["image_methods"]:
        assert ("image", name) in methods
    for name in sections["methods"]["word_methods"]:
        assert ("words", name) in methods

    loo = sections["loo"]
    assert loo["words"] == 12
    assert loo["max_abs_difference"] < 1e-5
    positions = loo["token_positions"]
    assert positions["prefix_shared"] < positions["sequential"] <= positions["batched"]

    codecs = sections["codecs"]
    assert {(r["codec"], r["profile"], r["kind"]) for r in codecs["sizes"]} == {
        (c, p, k) for c in ("fp16", "int8") for p in ("standard", "full") for k in ("image", "text")
    }
    size = {(r["codec"], r["profile"], r["kind"]): r["feature_bytes"] for r in codecs["sizes"]}
    assert size["int8", "standard", "image"] < size["fp16", "standard", "image"]
    assert size["fp16", "standard", "image"] < size["fp16", "full", "image"]
    assert all(0.9 < row["mean"] <= 1.0 for row in codecs["fidelity"])

    scale = sections["scale"]
    runs = {run["target"]: run for run in scale["runs"]}
    assert set(runs) == {"embedded", "sink"}
    assert scale["server"].startswith("skipped")
    assert "Server: skipped (`QDRANT_URL` was not set)" in text
    for run in runs.values():
        assert run["points"] == config.scale_points
        assert len(run["chunks"]) == config.scale_points // config.scale_chunk
        assert run["peak_mb"] >= run["rss_last_mb"] > 0
    assert runs["embedded"]["search_ms"] > 0 and runs["embedded"]["explain_ms"] > 0

    bf16 = sections["bf16"]
    assert bf16["image_cosine_mean"] > 0.99
    assert bf16["heatmap_r_mean"] > 0.9

    where = sections["where"]
    stages = where["search_explain_stages_s"]
    assert any(k.startswith("search:") for k in stages)
    # the default word method reuses the search's query forward: none of its own
    assert any("word prefixes" in k for k in stages)
    assert all(row["max_abs_difference"] < 1e-5 for row in where["sdpa_before_after"])
    assert os.path.getsize(out) > 2000
