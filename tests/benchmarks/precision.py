"""Section 7: bf16 vs. fp32 on CPU: speed of encoding and explaining, and how closely the
bf16 embeddings, heatmaps and word scores agree with fp32."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.explain.words.occlusion import WordOcclusion
from tests.benchmarks.harness import (
    BenchConfig,
    Section,
    interleaved,
    median,
    ms,
    pearson,
    unit_rows,
)
from tests.benchmarks.inputs import CAPTION_12, QUERIES, BenchModels, photo_like

__all__ = ["bench_bf16"]


def bench_bf16(config: BenchConfig, models: BenchModels) -> Section:
    """bf16 vs. fp32 on CPU: speed of encoding and explaining, and agreement."""
    fp32 = models.main()
    bf16 = models.main(torch.bfloat16)
    rng = np.random.default_rng(5)
    photos = [photo_like(rng, 320, 240) for _ in range(config.bf16_images)]
    texts = list(QUERIES)

    def encode(encoder: ClipEncoder) -> Callable[[], object]:
        return lambda: encoder.encode_images(photos)

    def embed(encoder: ClipEncoder) -> Callable[[], object]:
        return lambda: encoder.embed_images(photos)

    def words(encoder: ClipEncoder) -> Callable[[], object]:
        target_embedding = encoder.embed_images(photos[:1])
        return lambda: WordOcclusion().attribute(encoder, [CAPTION_12], target_embedding)

    def query(encoder: ClipEncoder) -> Callable[[], object]:
        return lambda: encoder._embed_texts([texts[0]])

    rows = []
    for label, make in (
        (f"`encode_images` with features, {config.bf16_images} photos", encode),
        (f"`embed_images`, {config.bf16_images} photos", embed),
        ("`embed_texts`, one query", query),
        ("leave-one-word-out, 12-word caption", words),
    ):
        times = interleaved({"fp32": make(fp32), "bf16": make(bf16)}, config.bf16_reps)
        rows.append((label, median(times["fp32"]), median(times["bf16"])))

    f32, b16 = fp32.encode_images(photos), bf16.encode_images(photos)
    emb32 = unit_rows(np.stack([f.embedding for f in f32]))
    emb16 = unit_rows(np.stack([f.embedding for f in b16]))
    cosine = (emb32 * emb16).sum(axis=1)
    q32, q16 = unit_rows(fp32.embed_texts(texts)), unit_rows(bf16.embed_texts(texts))
    text_cos = (q32 * q16).sum(axis=1)
    maps32 = np.einsum("nhwp,mp->nmhw", np.stack([f.contributions for f in f32]), q32)
    maps16 = np.einsum("nhwp,mp->nmhw", np.stack([f.contributions for f in b16]), q16)
    heat_r = pearson(maps32.reshape(-1, maps32[0, 0].size), maps16.reshape(-1, maps32[0, 0].size))
    w32 = WordOcclusion().attribute(fp32, [CAPTION_12], emb32[:1])[0][1]
    w16 = WordOcclusion().attribute(bf16, [CAPTION_12], emb16[:1])[0][1]
    word_r = float(pearson(w32[None], w16[None])[0])
    section = Section("bf16", "7. bf16 vs. fp32 on CPU")
    section.lines += [
        f"The same weights in fp32 and in bf16 (`ClipEncoder.from_pretrained(..., "
        f'dtype="bfloat16")` does this for a checkpoint), {models.name}, medians of '
        f"{config.bf16_reps} interleaved runs.",
        "",
        "| | fp32 ms | bf16 ms | bf16 speed-up |",
        "|---|---|---|---|",
    ]
    for label, t32, t16 in rows:
        section.lines.append(f"| {label} | {ms(t32)} | {ms(t16)} | {t32 / t16:.2f}x |")
    section.lines += [
        "",
        "Agreement of bf16 with fp32:",
        "",
        "| | mean | min |",
        "|---|---|---|",
        f"| cosine of image embeddings | {cosine.mean():.5f} | {cosine.min():.5f} |",
        f"| cosine of text embeddings | {text_cos.mean():.5f} | {text_cos.min():.5f} |",
        f"| Pearson r of `decomposition` heatmaps ({maps32.shape[0]}x{maps32.shape[1]}) | "
        f"{np.nanmean(heat_r):.5f} | {np.nanmin(heat_r):.5f} |",
        f"| Pearson r of leave-one-word-out word scores (12 words) | {word_r:.5f} | - |",
        "",
        "bf16 halves the model's memory. Whether it is faster on CPU depends on the CPU's bf16 "
        "support (this one: "
        f"{_cpu_bf16()}); the agreement figures say what it costs in accuracy. fp32 and bf16 "
        "loads of one checkpoint share a fingerprint, so a collection indexed in one dtype "
        "can be searched and explained in the other, at the agreement above.",
    ]
    section.data = {
        "times_s": [{"what": r[0], "fp32": r[1], "bf16": r[2]} for r in rows],
        "image_cosine_mean": float(cosine.mean()),
        "text_cosine_mean": float(text_cos.mean()),
        "heatmap_r_mean": float(np.nanmean(heat_r)),
        "word_r": word_r,
    }
    del bf16
    gc.collect()
    return section


def _cpu_bf16() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:  # pragma: no cover
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) if found else "no avx512_bf16/amx_bf16"
