"""Section 5: payload bytes per point for each codec and profile, and codec fidelity (the
heatmaps from decoded features against those from the fp32 features)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from qdrant_xai.demo.world import SHAPES
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.explain.base import ImageEvidence, heatmap_method
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.schema import PayloadKeys
from tests.benchmarks.harness import BenchConfig, Section, pearson, target
from tests.benchmarks.inputs import (
    CAPTION_12,
    COLOR_NAMES,
    BenchModels,
    open_client,
    photo_like,
    write_photos,
)

__all__ = ["bench_codecs"]


def bench_codecs(config: BenchConfig, models: BenchModels, workdir: Path) -> Section:
    """Bytes per point for each codec and profile; heatmap fidelity of each codec vs. fp32."""
    from qdrant_xai.storage.indexer import ImageRecord, Indexer

    encoder = models.main()
    paths = write_photos(workdir / "photos", max(config.codec_images, 2))
    client = open_client(workdir / "qdrant-codecs")
    sizes: list[dict[str, Any]] = []
    for codec in ("fp16", "int8"):
        for profile in ("standard", "full"):
            name = f"bench_codec_{codec}_{profile}"
            Indexer(
                client,
                encoder,
                collection_name=name,
                codec=codec,
                profile=profile,
                batch_size=config.batch_size,
            ).index([ImageRecord(paths[0], (CAPTION_12,))], progress=False)
            records = client.scroll(name, limit=10, with_payload=True, with_vectors=True)[0]
            for record in records:
                payload = record.payload or {}
                vector = record.vector if isinstance(record.vector, dict) else {}
                floats = sum(len(v) for v in vector.values() if isinstance(v, list))
                heavy = sum(
                    len(json.dumps(payload[key])) for key in PayloadKeys.HEAVY if key in payload
                )
                sizes.append(
                    {
                        "codec": codec,
                        "profile": profile,
                        "kind": payload.get(PayloadKeys.KIND),
                        "payload_bytes": len(json.dumps(payload)),
                        "feature_bytes": heavy,
                        "vector_bytes": 4 * floats,
                    }
                )
            client.delete_collection(name)
    client.close()

    fidelity: list[dict[str, Any]] = []
    rng = np.random.default_rng(11)

    def measure(model: str, encoder: ClipEncoder, images: list[Any], texts: list[str]) -> None:
        feats = encoder.encode_images(images, last_layer=True)
        contributions = np.stack([f.contributions for f in feats])  # [N, gh, gw, P]
        entering = np.stack([f.last_layer_inputs for f in feats if f.last_layer_inputs is not None])
        queries = encoder.embed_texts(texts)  # [M, P]
        reference = np.einsum("nhwp,mp->nmhw", contributions, queries).reshape(
            len(images) * len(texts), -1
        )
        gradient = heatmap_method("grad-eclip")
        pairs = min(len(images), len(texts))
        grad_ref = gradient.heatmaps(
            encoder,
            ImageEvidence(last_layer_inputs=entering[:pairs]),
            queries[:pairs],
        ).reshape(pairs, -1)
        for codec_name in ("fp16", "int8"):
            codec = PayloadFeatureCodec(codec_name)
            decoded = np.stack(
                [codec.decode(codec.encode(c, fingerprint="x")) for c in contributions]
            )
            maps = np.einsum("nhwp,mp->nmhw", decoded, queries).reshape(reference.shape)
            r = pearson(reference, maps)
            fidelity.append(_fidelity_row(model, "decomposition (contributions)", codec_name, r))
            entering_decoded = np.stack(
                [codec.decode(codec.encode(x, fingerprint="x")) for x in entering[:pairs]]
            )
            grad_maps = gradient.heatmaps(
                encoder, ImageEvidence(last_layer_inputs=entering_decoded), queries[:pairs]
            ).reshape(pairs, -1)
            r = pearson(grad_ref, grad_maps)
            fidelity.append(_fidelity_row(model, "grad-eclip (last-layer inputs)", codec_name, r))

    photos = [photo_like(rng, 320, 240) for _ in range(config.codec_images)]
    texts = [
        f"a {COLOR_NAMES[i % 5]} {SHAPES[i % 4]} "
        f"and a {COLOR_NAMES[(i + 2) % 5]} {SHAPES[(i + 1) % 4]}"
        for i in range(config.codec_queries)
    ]
    measure(models.name, encoder, photos, texts)
    from qdrant_xai.demo.world import generate_scenes

    scenes = list(generate_scenes(config.codec_images, seed=4242))
    measure("shapes CLIP (trained)", models.shapes(), [s.image for s in scenes], texts)

    section = Section("codecs", "5. Payload bytes per point, and codec fidelity")
    section.lines += [
        f"Bytes of the stored payload as JSON (what Qdrant keeps per point, besides the "
        f"vector), {models.name}; one image point and its caption's text point "
        f'("{CAPTION_12}").',
        "",
        "| codec | profile | point | payload bytes | of which features | vector bytes |",
        "|---|---|---|---|---|---|",
    ]
    for row in sizes:
        section.lines.append(
            f"| {row['codec']} | {row['profile']} | {row['kind']} | {row['payload_bytes']:,} | "
            f"{row['feature_bytes']:,} | {row['vector_bytes']:,} |"
        )
    section.lines += [
        "",
        "The text point's features do not depend on the profile. `full` adds the input of the "
        "last vision layer ([1 + 7x7, 768] for ViT-B/32), which lets `grad-eclip`, `gae-last`, "
        "`patch` and `debiased` run without reading the image.",
        "",
        "Fidelity: Pearson correlation between the heatmap computed from the decoded features "
        "and the one from the fp32 features, over every (image, query) pair. `decomposition` "
        f"heatmaps: {config.codec_images} images x {config.codec_queries} queries; `grad-eclip` "
        "heatmaps (through the decoded last-layer inputs): "
        f"{min(config.codec_images, config.codec_queries)} pairs.",
        "",
        "| model | heatmap (stored field) | codec | mean r | min r | 5th pct r | maps |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in fidelity:
        section.lines.append(
            f"| {row['model']} | {row['heatmap']} | {row['codec']} | {row['mean']:.5f} | "
            f"{row['min']:.5f} | {row['p5']:.5f} | {row['maps']} |"
        )
    int8 = [row for row in fidelity if row["codec"] == "int8"]
    worst = min(int8, key=lambda row: row["mean"])
    section.lines += [
        "",
        f"Target: int8 heatmaps correlate ≥ 0.99 with fp32. Worst mean over the rows above "
        f"({worst['model']}, {worst['heatmap']}): "
        f"{target(worst['mean'], 0.99, at_least=True, digits=4)}; "
        f"worst single map: r = {min(row['min'] for row in int8):.4f}.",
        "",
        "int8 stores one scale per row (per patch, per word, per token), so a row's error is "
        "about 1/254 of its largest entry. Trained CLIPs have a few outlier dimensions in the "
        "residual stream (much larger than the rest); on a real checkpoint check the "
        "`grad-eclip` row before choosing int8 with the `full` profile (the contributions are "
        "projected into the joint space, where there are none).",
    ]
    section.data = {"sizes": sizes, "fidelity": fidelity}
    return section


def _fidelity_row(model: str, heatmap: str, codec: str, r: np.ndarray) -> dict[str, Any]:
    r = r[np.isfinite(r)]
    return {
        "model": model,
        "heatmap": heatmap,
        "codec": codec,
        "mean": float(r.mean()),
        "min": float(r.min()),
        "p5": float(np.percentile(r, 5)),
        "maps": int(r.size),
    }
