"""The decompx heatmap: shapes, what it sums to, the gate derivative, batch = one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qdrant_xai import ClipEncoder
from qdrant_xai.demo.world import generate_scenes
from qdrant_xai.encoding.towers import image_source_contributions
from qdrant_xai.explain.base import ImageEvidence, heatmap_method
from qdrant_xai.explain.heatmaps.decompx import DecompXHeatmap, decompx_heatmaps
from qdrant_xai.images.load import LoadedImage


@pytest.fixture(scope="module")
def images() -> list[LoadedImage]:
    return [
        LoadedImage(image=s.image, source="scene", width=s.image.width, height=s.image.height)
        for s in generate_scenes(3, seed=17, size=64)
    ]


@pytest.fixture(scope="module")
def queries(tiny_encoder: ClipEncoder) -> np.ndarray:
    return tiny_encoder.embed_texts(["a red circle", "a blue square", "a green cross"])


@pytest.fixture(scope="module")
def sources(tiny_encoder: ClipEncoder, images: list[LoadedImage]) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        out = image_source_contributions(tiny_encoder.model, tiny_encoder.pixel_values(images))
    unit = out.embeds / out.embeds.norm(dim=-1, keepdim=True)
    return {"patches": out.patches, "rest": out.class_token + out.biases, "unit": unit}


def test_registered_by_name_and_shaped_like_the_grid(
    tiny_encoder: ClipEncoder, images: list[LoadedImage], queries: np.ndarray
) -> None:
    method = heatmap_method("decompx")
    assert isinstance(method, DecompXHeatmap) and method.needs_pixels
    maps = method.heatmaps(tiny_encoder, ImageEvidence(images=images), queries)
    assert maps.shape == (3, *tiny_encoder.grid) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    shared = method.heatmaps(tiny_encoder, ImageEvidence(images=images), queries[0])
    np.testing.assert_allclose(
        shared[0], maps[0], atol=1e-6
    )  # a [P] query is shared by every image


def test_gate_derivative_of_the_cosine_summing_to_zero_over_all_sources(
    sources: dict[str, torch.Tensor], queries: np.ndarray
) -> None:
    patches, rest, unit = sources["patches"], sources["rest"], sources["unit"]
    maps = decompx_heatmaps(patches.numpy(), unit.numpy(), queries)
    t = torch.from_numpy(queries)
    n, gh, gw, dim = patches.shape
    for i in range(n):
        # e(g) = Σ_j g_j C_j + g_rest C_rest; h_i = ∂cos(e(g), t)/∂g_i at g = 1
        gates = torch.ones(gh * gw + 1, dtype=torch.float64, requires_grad=True)
        parts = torch.cat([patches[i].reshape(-1, dim), rest[i][None]]).double()
        embedding = gates @ parts
        cosine = embedding @ t[i].double() / embedding.norm()
        (grad,) = torch.autograd.grad(cosine, gates)
        np.testing.assert_allclose(maps[i].ravel(), grad[:-1].numpy(), atol=1e-5)
        assert abs(float(grad.sum())) < 1e-6  # the cosine is scale-invariant
        direction = t[i] - float(unit[i] @ t[i]) * unit[i]
        np.testing.assert_allclose(maps[i].sum(), -float(rest[i] @ direction), atol=1e-5)


def test_share_of_the_cosine_when_norm_weight_is_zero(
    sources: dict[str, torch.Tensor], queries: np.ndarray
) -> None:
    patches, rest, unit = sources["patches"], sources["rest"], sources["unit"]
    maps = decompx_heatmaps(patches.numpy(), unit.numpy(), queries, norm_weight=0.0)
    cosines = (unit.numpy() * queries).sum(-1)
    rest_share = (rest.numpy() * queries).sum(-1)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)) + rest_share, cosines, atol=1e-5)


def test_a_batch_equals_its_hits_one_by_one(
    tiny_encoder: ClipEncoder, images: list[LoadedImage], queries: np.ndarray
) -> None:
    method = DecompXHeatmap()
    batch = method.heatmaps(tiny_encoder, ImageEvidence(images=images), queries)
    for i, image in enumerate(images):
        one = method.heatmaps(tiny_encoder, ImageEvidence(images=[image]), queries[i : i + 1])
        np.testing.assert_allclose(one[0], batch[i], atol=1e-5)


def test_bad_options_and_missing_images_are_refused(tiny_encoder: ClipEncoder) -> None:
    with pytest.raises(ValueError, match="norm_weight must be in"):
        DecompXHeatmap(norm_weight=2.0)
    with pytest.raises(ValueError, match="needs the images"):
        DecompXHeatmap().heatmaps(tiny_encoder, ImageEvidence(), np.zeros(tiny_encoder.dim))
    with pytest.raises(ValueError, match=r"parts must be \[N, gh, gw, P\]"):
        decompx_heatmaps(np.zeros((2, 4, 16)), np.zeros((2, 16)), np.zeros(16))
