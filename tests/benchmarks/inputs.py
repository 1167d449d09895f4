"""What the benchmarks run on: the models, photo-like images, queries and a collection.

:class:`BenchModels` builds the encoders of a run once (a CLIP with ViT-B/32's shapes and
random weights, or the tiny CLIP in a quick run, and the trained shapes CLIP); photos are
smooth random colour fields saved as JPEGs; :func:`query_stream` never repeats a query, so
no measured call is served from the encoder's memory of recent queries. The eager-attention
embeddings are the "before" side of the SDPA comparison.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qdrant_xai.demo.world import COLORS, SHAPES
from qdrant_xai.encoding.encoder import ClipEncoder
from qdrant_xai.explain.base import WordMethod, WordScores
from tests.benchmarks.harness import BenchConfig

__all__ = [
    "CAPTION_12",
    "COLOR_NAMES",
    "QUERIES",
    "BenchModels",
    "NoWords",
    "eager_embed_pixels",
    "eager_embed_texts",
    "open_client",
    "photo_like",
    "query_stream",
    "searched_collection",
    "write_photos",
]

#: a 12-word caption made of words the built-in tokenizer keeps whole (one token each)
CAPTION_12 = "a red circle, a blue square, a green cross, a yellow triangle"
QUERIES = (
    "a red circle and a blue square",
    "a green cross and a yellow triangle",
    "a purple square and a red triangle",
    "a blue circle and a green square",
    "a yellow cross and a purple circle",
)
COLOR_NAMES = tuple(COLORS)  # red, green, blue, yellow, purple


def photo_like(rng: np.random.Generator, width: int, height: int) -> Any:
    """A smooth random colour field with noise (compresses like a photo, not like noise)."""
    from PIL import Image

    coarse = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32
    )
    noisy = smooth + rng.normal(0, 12, smooth.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_photos(directory: Path, n: int, *, size: tuple[int, int] = (320, 240)) -> list[str]:
    """``n`` JPEGs of ``size`` (width, height) in ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        path = directory / f"photo_{i:04d}.jpg"
        photo_like(rng, *size).save(path, quality=90)
        paths.append(str(path))
    return paths


def query_stream() -> Iterator[str]:
    """Distinct 7-word queries ("a red circle and a blue square", ...), none repeated, so no
    measured call is served from the encoder's memory of recent queries."""
    combos = [(c, s) for c in COLOR_NAMES for s in SHAPES]
    order = np.random.default_rng(1).permutation(len(combos) ** 2)
    for index in order:
        (c1, s1), (c2, s2) = combos[index // len(combos)], combos[index % len(combos)]
        yield f"a {c1} {s1} and a {c2} {s2}"


@torch.inference_mode()
def eager_embed_texts(encoder: ClipEncoder, texts: Sequence[str]) -> np.ndarray:
    """:meth:`ClipEncoder.embed_texts` through the eager-attention model (as before SDPA)."""
    batch = encoder._tokenize(texts, offsets=False)
    out = encoder.model.text_model(
        input_ids=batch["input_ids"].to(encoder.device),
        attention_mask=batch["attention_mask"].to(encoder.device),
    )
    return _torch_unit(encoder.model.text_projection(out.pooler_output))


@torch.inference_mode()
def eager_embed_pixels(encoder: ClipEncoder, pixels: torch.Tensor) -> np.ndarray:
    """:meth:`ClipEncoder.embed_pixels` through the eager-attention model (as before SDPA)."""
    out = encoder.model.vision_model(pixel_values=pixels)
    return _torch_unit(encoder.model.visual_projection(out.pooler_output))


def _torch_unit(tensor: torch.Tensor) -> np.ndarray:
    unit = tensor / tensor.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return unit.detach().to(dtype=torch.float32).cpu().numpy()


class NoWords(WordMethod):
    """A word method that scores nothing: explanations with heatmaps only (not registered)."""

    name = "none"
    cost = "0 passes"

    def attribute(
        self,
        encoder: ClipEncoder,
        texts: Sequence[str],
        targets: np.ndarray,
        *,
        stored: Sequence[np.ndarray | None] | None = None,
    ) -> list[WordScores]:
        return [((), np.zeros(0, dtype=np.float32)) for _ in texts]


# -- models and a collection --------------------------------------------------------------------


class BenchModels:
    """The encoders of a run, built once: realistic (ViT-B/32 random or tiny), trained shapes."""

    def __init__(self, config: BenchConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self._main: ClipEncoder | None = None
        self._shapes: ClipEncoder | None = None
        self.tiny_dir: Path | None = None

    @property
    def name(self) -> str:
        return "tiny CLIP (quick run)" if self.config.quick else "ViT-B/32-shaped CLIP, random"

    def tiny_path(self) -> Path:
        if self.tiny_dir is None:
            from qdrant_xai.testing import build_tiny_clip

            self.tiny_dir = build_tiny_clip(self.workdir / "tiny-clip")
        return self.tiny_dir

    def main(self, dtype: torch.dtype = torch.float32) -> ClipEncoder:
        if dtype == torch.float32 and self._main is not None:
            return self._main
        if self.config.quick:
            encoder = ClipEncoder.from_pretrained(
                self.tiny_path(), dtype="float32" if dtype == torch.float32 else "bfloat16"
            )
        else:
            from qdrant_xai.testing import build_vit_b32_random

            model, processor = build_vit_b32_random()
            model = model.to(dtype=dtype)  # type: ignore[call-arg]
            encoder = ClipEncoder(model, processor, model_id="vit-b32-random")
        if dtype == torch.float32:
            self._main = encoder
        return encoder

    def shapes(self) -> ClipEncoder:
        if self._shapes is None:
            self._shapes = ClipEncoder.from_pretrained("shapes")
        return self._shapes


def open_client(path: Path) -> Any:
    from qdrant_client import QdrantClient

    return QdrantClient(path=str(path))


def searched_collection(
    config: BenchConfig, models: BenchModels, workdir: Path, *, name: str
) -> tuple[Any, Any, Any]:
    """``(client, searcher, explainer)`` over a new on-disk collection ``name`` holding the
    photos, indexed with the ``standard`` profile by the main encoder."""
    from qdrant_xai.explain import Explainer
    from qdrant_xai.search import Searcher
    from qdrant_xai.storage.indexer import ImageRecord, Indexer

    encoder = models.main()
    paths = write_photos(workdir / "photos", config.images)
    client = open_client(workdir / f"qdrant-{name}")
    Indexer(
        client, encoder, collection_name=name, batch_size=config.batch_size, profile="standard"
    ).index([ImageRecord(p) for p in paths], progress=False)
    searcher = Searcher(client, encoder, collection_name=name)
    return client, searcher, Explainer(encoder, client, collection_name=name)
