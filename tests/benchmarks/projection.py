"""Section ``ray`` of ``python -m tests.benchmarks``: ``--engine ray`` at scale on this
machine (:mod:`tests.benchmarks.ray_scale`: 100,000 images with the tiny CLIP, 2 workers, an
on-disk embedded store, one worker killed half-way, then a rerun), and the storage and
compute it would take for 1 M and 100 M images with ViT-B/32 and ViT-L/14, projected from
per-image costs measured here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qdrant_xai.storage.codec import CODEC_VERSION, DEFAULT_RANK, PayloadFeatureCodec
from tests.benchmarks.harness import BenchConfig, Section
from tests.benchmarks.inputs import BenchModels, photo_like

__all__ = ["bench_ray", "point_bytes"]

#: the two checkpoints projected: patch grid, projection width, vision width and depth
SHAPES = {
    "ViT-B/32": {"grid": (7, 7), "dim": 512, "hidden": 768, "layers": 12, "patch": 32},
    "ViT-L/14": {"grid": (16, 16), "dim": 768, "hidden": 1024, "layers": 24, "patch": 14},
}
#: the other keys of an image point (kind, model, fingerprint, profile, source, size, crop
#: box, content hash, caption ids), measured on the demo collection's points
OTHER_PAYLOAD = 420


def point_bytes(name: str, codec: str) -> int:
    """Bytes of one image point's payload features (JSON, as stored) plus its float32
    vector and the other payload keys."""
    shape = SHAPES[name]
    rng = np.random.default_rng(0)
    features = (rng.standard_normal((*shape["grid"], shape["dim"])) * 0.05).astype(np.float32)
    encoded = PayloadFeatureCodec(codec).encode(features, fingerprint="w2-" + "0" * 32)  # type: ignore[arg-type]
    return len(json.dumps(encoded)) + 4 * int(shape["dim"]) + OTHER_PAYLOAD


def bench_ray(config: BenchConfig, models: BenchModels, root: Path) -> Section:
    from tests.benchmarks.ray_scale import run

    images = 300 if config.quick else 100_000
    result = run(images, 2, 32, root / "ray-scale", 2, kill_at=0.5)
    first, rerun = result["first"], result["rerun"]
    killed = first["killed"]
    lines = [
        f"`qdrant-xai index --engine ray --workers 2` on {images:,} generated 32x32 shapes "
        "images with one caption each, the tiny CLIP, batches of 32, a local Ray with 2 CPUs, "
        "into an embedded on-disk store (so the driver writes). One encoder actor is killed "
        "(SIGKILL) half-way; then the same command runs again.",
        "",
        "| | |",
        "|---|---|",
        f"| Ray start | {result['ray_start_s']:.1f} s |",
        f"| first run | {first['seconds']:.0f} s, {first['images_per_s']:.0f} images/s "
        f"overall; {first['indexed_images']:,} images + {first['indexed_texts']:,} captions "
        f"indexed, {first['unchanged']:,} unchanged, {first['failed']} failed |",
        "| worker killed | "
        + (f"pid {killed[0]} at {killed[1]:,} images done" if killed else "none found to kill")
        + " |",
        f"| points stored / expected | {result['points_stored']:,} / "
        f"{result['points_expected']:,} (none lost, none twice: "
        f"{'yes' if result['points_stored'] == result['points_expected'] else 'NO'}) |",
        f"| rerun | {rerun['seconds']:.0f} s: {rerun['indexed_images']} written, "
        f"{rerun['unchanged']:,} unchanged |",
        f"| on-disk store | {result['store_mb']:.0f} MB |",
        "",
        "Throughput by tenth of the images (the first tenth includes the workers' start-up):",
        "",
        "| tenth | ends at s | images/s | driver RSS MB |",
        "|---|---|---|---|",
        *(
            f"| {r['tenth']} | {r['at_s']:.0f} | {r['images_per_s']:.0f} | "
            f"{r['driver_rss_mb']:.0f} |"
            for r in first["tenths"]
        ),
        "",
        "Peak RSS by role (MB; the largest process of each role):",
        "",
        "| role | processes | peak RSS MB |",
        "|---|---|---|",
        *_roles(result["peak_rss_mb"]),
        "",
        "The embedded store keeps every point in the driver's memory, so the driver grows "
        "with the collection; against a server the workers write and the driver holds "
        "only the summary.",
        "",
    ]
    lines += _projection(config, models)
    return Section(
        "ray", "Ray Data at scale, and a projection to 1 M and 100 M images", lines, data=result
    )


def _roles(peaks: dict[str, float]) -> list[str]:
    grouped: dict[str, list[float]] = {}
    for key, mb in peaks.items():
        role = key.split(" ", 1)[1] if " " in key else key
        grouped.setdefault(role, []).append(mb)
    rows = sorted(grouped.items(), key=lambda kv: -max(kv[1]))
    return [f"| {role} | {len(mbs)} | {max(mbs):.0f} |" for role, mbs in rows]


def _seconds_per_image(model: Any, processor: Any, batch: int, rounds: int) -> float:
    from qdrant_xai.encoding.encoder import ClipEncoder
    from qdrant_xai.images.load import load_image

    encoder = ClipEncoder(model, processor, model_id="random")
    rng = np.random.default_rng(0)
    images = [load_image(photo_like(rng, 320, 240)) for _ in range(batch)]
    encoder.encode_images(images[:1])  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        encoder.encode_images(images)
        times.append((time.perf_counter() - start) / batch)
    return float(np.median(times))


def _vit_l14() -> tuple[Any, Any]:
    from transformers import CLIPModel

    from qdrant_xai.testing import build_clip_processor, tiny_clip_config

    processor = build_clip_processor(image_size=224, model_max_length=77)
    config = tiny_clip_config(
        processor.tokenizer,
        image_size=224,
        patch_size=14,
        vision_hidden_size=1024,
        vision_layers=24,
        vision_heads=16,
        text_hidden_size=768,
        text_layers=12,
        text_heads=12,
        context_length=77,
        projection_dim=768,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config)
    return model.eval(), processor


def _projection(config: BenchConfig, models: BenchModels) -> list[str]:
    compute: dict[str, float] = {}
    if not config.quick:  # --quick's main model is the tiny CLIP: no figure for these shapes
        b32 = models.main()
        compute["ViT-B/32"] = _seconds_per_image(b32.model, b32.processor, 8, 3)
        model, processor = _vit_l14()
        compute["ViT-L/14"] = _seconds_per_image(model, processor, 4, 2)
        del model
    lines = [
        "**Projection** (not a measurement): image points only (a caption adds a text point "
        "of a few kB), features in each codec at the model's shape (exact bytes of the "
        "stored JSON), the float32 vector and the other payload keys; no HNSW graph or "
        "Qdrant overhead. Compute: seconds per image of `encode_images` (forward with "
        "features, 320x240 photos, random weights of the model's shape) measured here on "
        "2 CPU cores, times the images; a GPU or more workers divide it (Ray's own "
        "overhead at 100,000 tiny images is in the table above). The svd codec (payload "
        f"version {CODEC_VERSION}) keeps rank {DEFAULT_RANK} at every shape: "
        f"{100 * DEFAULT_RANK / 49:.0f} % of ViT-B/32's 49 patch rows, "
        f"{100 * DEFAULT_RANK / 256:.0f} % of "
        "ViT-L/14's 256, whose fidelity is not measured here (no trained model of that "
        "shape).",
        "",
        "| model | codec | bytes per image point | 1 M images | 100 M images |",
        "|---|---|---|---|---|",
    ]
    for name in SHAPES:
        for codec in ("fp16", "int8", "svd"):
            size = point_bytes(name, codec)
            lines.append(
                f"| {name} | {codec} | {size:,} | {size * 1e6 / 1e9:,.1f} GB | "
                f"{size * 1e8 / 1e12:,.2f} TB |"
            )
    lines += [
        "",
        "| model | s per image here (2 cores) | 1 M images | 100 M images |",
        "|---|---|---|---|",
    ]
    for name in SHAPES:
        if name not in compute:
            lines.append(f"| {name} | not measured with --quick | | |")
            continue
        seconds = compute[name]
        lines.append(
            f"| {name} | {seconds:.3f} | {seconds * 1e6 / 3600:,.0f} hours of this machine | "
            f"{seconds * 1e8 / 3600 / 24 / 365:,.1f} years of this machine |"
        )
    return lines
