"""A shapes world written in the formats real retrieval datasets come in.

A Flickr8k folder (token file, image folder with the archive's spelling, split files), a
Karpathy split JSON and an ``image,caption`` CSV, all describing the same images and
captions; the dataset readers' tests and the evaluation's tests read it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from qdrant_xai.demo.world import ShapeScene, caption_for, generate_scenes

N_IMAGES = 14
SPLITS = {"train": range(0, 3), "dev": range(3, 5), "test": range(5, N_IMAGES)}
SEED = 4242  # held out from the bundled model's training stream


def _captions(scene: ShapeScene) -> list[str]:
    """The scene's caption and, when it differs, the caption naming the objects reversed."""
    pairs = [(o.color, o.shape) for o in scene.objects]
    return list(dict.fromkeys([caption_for(pairs), caption_for(pairs[::-1])]))


def write_flickr_world(root: Path) -> Path:
    """One shapes world in three formats under ``root``: Flickr8k layout, Karpathy JSON,
    CSV; returns ``root``."""
    images = root / "Flicker8k_Dataset"  # sic, as in the Flickr8k archive
    text = root / "Flickr8k_text"
    images.mkdir()
    text.mkdir()
    names, captions = [], []
    for i, scene in enumerate(generate_scenes(N_IMAGES, seed=SEED)):
        name = f"{1000268201 + i}_{i:04x}shapes.png"
        scene.image.save(images / name)
        names.append(name)
        captions.append(_captions(scene))
    token_lines = [
        f"{n}#{k}\t{c}" for n, cs in zip(names, captions, strict=True) for k, c in enumerate(cs)
    ]
    (text / "Flickr8k.token.txt").write_text("\n".join(token_lines) + "\n")
    for split, rows in SPLITS.items():
        (text / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names[i] for i in rows))
    karpathy = {
        "dataset": "flickr8k",
        "images": [
            {
                "filename": n,
                "imgid": i,
                "split": next(s if s != "dev" else "val" for s, r in SPLITS.items() if i in r),
                "sentences": [{"raw": c, "tokens": c.split()} for c in cs],
            }
            for i, (n, cs) in enumerate(zip(names, captions, strict=True))
        ],
    }
    (root / "dataset_flickr8k.json").write_text(json.dumps(karpathy))
    with (root / "captions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for name, texts in zip(names, captions, strict=True):
            writer.writerows([f"Flicker8k_Dataset/{name}", c] for c in texts)
    return root
