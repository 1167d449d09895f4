"""Photos of every shape (12 MP, 1600x90 strips...), caption files, hostile values."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_ATTRIBUTE = '"><img src=x onerror=alert(1)>'


def write_photos(folder: Path, sizes: Sequence[tuple[int, int]], seed: int = 0) -> list[Path]:
    """Noisy JPEGs (quality 90: JPEG cannot shrink them to nothing), a red circle in each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (width, height) in enumerate(sizes):
        coarse = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height)), dtype=np.int16)
        noise = rng.integers(-40, 41, smooth.shape, dtype=np.int16)
        photo = Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8))
        radius = min(width, height) // 3
        ImageDraw.Draw(photo).ellipse(
            (width // 2 - radius, height // 2 - radius, width // 2 + radius, height // 2 + radius),
            fill=(220, 30, 30),
        )
        path = folder / f"photo_{i:02d}_{width}x{height}.jpg"
        photo.save(path, quality=90)
        paths.append(path)
    return paths


def write_captions(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    return path
