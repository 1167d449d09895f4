"""Grad-ECLIP and GAE heatmaps.

On the tiny random CLIP: shapes, the stored-features path against the image path, batched
against one-at-a-time, Grad-ECLIP's channel weights against finite differences of an
independent computation, and GAE's rollout against hand-made matrices and against attention
maps captured by the model itself. On the trained shapes CLIP: the pointing game.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

import qdrant_xai.explain.heatmaps.gradients  # noqa: F401  (registers the methods)
from qdrant_xai import ClipEncoder
from qdrant_xai.demo.world import generate_scenes
from qdrant_xai.encoding.last_layer import replay_last_layer
from qdrant_xai.explain.base import HeatmapMethod, ImageEvidence, heatmap_method
from qdrant_xai.explain.heatmaps.gradients import (
    Gae,
    GaeLastLayer,
    GradEclip,
    gae_rollout,
    grad_eclip_maps,
)
from qdrant_xai.images.load import LoadedImage, load_image

PHRASES = ["a red circle", "a blue square", "a green cross"]


@pytest.fixture(scope="module")
def images() -> list[LoadedImage]:
    return [load_image(scene.image) for scene in generate_scenes(3, seed=21, size=64)]


@pytest.fixture(scope="module")
def queries(tiny_encoder: ClipEncoder) -> np.ndarray:
    return tiny_encoder.embed_texts(PHRASES)


@pytest.fixture(scope="module")
def stored(tiny_encoder: ClipEncoder, images: list[LoadedImage]) -> np.ndarray:
    """[3, 1 + 16, D] last-layer inputs, as the ``full`` feature profile stores them."""
    features = tiny_encoder.encode_images(images, last_layer=True)
    return np.stack([f.last_layer_inputs for f in features])  # type: ignore[misc]


def _methods() -> list[HeatmapMethod]:
    return [GradEclip(), GaeLastLayer(), Gae()]


@pytest.mark.parametrize("method", _methods(), ids=repr)
def test_heatmaps_shape_dtype_and_sign(
    method: HeatmapMethod, tiny_encoder: ClipEncoder, images: list[LoadedImage], queries: np.ndarray
) -> None:
    maps = method.heatmaps(tiny_encoder, ImageEvidence(images=images), queries)
    assert maps.shape == (3, *tiny_encoder.grid)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert (maps >= 0).all()  # both methods end in a ReLU
    assert (maps > 0).any()


@pytest.mark.parametrize("method", [GradEclip(), GaeLastLayer()], ids=repr)
def test_stored_inputs_equal_image_path(
    method: HeatmapMethod,
    tiny_encoder: ClipEncoder,
    images: list[LoadedImage],
    stored: np.ndarray,
    queries: np.ndarray,
) -> None:
    from_stored = method.heatmaps(tiny_encoder, ImageEvidence(last_layer_inputs=stored), queries)
    from_images = method.heatmaps(tiny_encoder, ImageEvidence(images=images), queries)
    np.testing.assert_allclose(from_stored, from_images, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [GradEclip, GaeLastLayer, Gae],
    ids=["grad-eclip", "gae-last", "gae"],
)
def test_batched_equals_one_at_a_time(
    make: Any, tiny_encoder: ClipEncoder, images: list[LoadedImage], queries: np.ndarray
) -> None:
    batched = make(max_batch=64).heatmaps(tiny_encoder, ImageEvidence(images=images), queries)
    single = np.concatenate(
        [
            make(max_batch=64).heatmaps(tiny_encoder, ImageEvidence(images=[image]), query[None])
            for image, query in zip(images, queries, strict=True)
        ]
    )
    chunked = make(max_batch=2).heatmaps(tiny_encoder, ImageEvidence(images=images), queries)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(batched, chunked, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", _methods(), ids=repr)
def test_one_query_is_broadcast(
    method: HeatmapMethod, tiny_encoder: ClipEncoder, images: list[LoadedImage], queries: np.ndarray
) -> None:
    evidence = ImageEvidence(images=images)
    shared = method.heatmaps(tiny_encoder, evidence, queries[0])
    tiled = method.heatmaps(tiny_encoder, evidence, np.tile(queries[0], (3, 1)))
    np.testing.assert_allclose(shared, tiled, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="queries"):
        method.heatmaps(tiny_encoder, evidence, queries[:2])


def test_runs_inside_inference_mode(
    tiny_encoder: ClipEncoder, stored: np.ndarray, queries: np.ndarray
) -> None:
    evidence = ImageEvidence(last_layer_inputs=stored)
    expected = GradEclip().heatmaps(tiny_encoder, evidence, queries)
    with torch.inference_mode():
        inside = GradEclip().heatmaps(tiny_encoder, evidence, queries)
        gae = GaeLastLayer().heatmaps(tiny_encoder, evidence, queries)
    np.testing.assert_allclose(inside, expected, rtol=1e-6, atol=1e-8)
    assert np.isfinite(gae).all()


def test_requires_and_registry(stored: np.ndarray) -> None:
    only_stored = ImageEvidence(last_layer_inputs=stored)
    assert isinstance(heatmap_method("grad-eclip"), GradEclip)
    assert heatmap_method("grad-eclip").can_run(only_stored)
    assert not heatmap_method("grad-eclip").needs_pixels
    last, every = heatmap_method("gae-last"), heatmap_method("gae")
    assert isinstance(every, Gae) and every.layers == "all"
    assert isinstance(last, GaeLastLayer) and last.layers == "last"
    assert heatmap_method("gae", layers="last").requires == last.requires
    assert last.can_run(only_stored) and not last.needs_pixels
    assert not every.can_run(only_stored) and every.needs_pixels
    assert every.can_run(ImageEvidence(images=[]))
    assert Gae.requires == every.requires  # the class attribute describes the default
    with pytest.raises(ValueError, match="layers"):
        Gae(layers="first")  # type: ignore[arg-type]


def test_empty_evidence(tiny_encoder: ClipEncoder, queries: np.ndarray) -> None:
    maps = GradEclip().heatmaps(tiny_encoder, ImageEvidence(images=[]), queries[0])
    assert maps.shape == (0, *tiny_encoder.grid) and maps.dtype == np.float32


# -- Grad-ECLIP: channel weights and map, against independent computations ---------------


def test_grad_eclip_weights_match_finite_differences(
    tiny_encoder: ClipEncoder, stored: np.ndarray, queries: np.ndarray
) -> None:
    """w = ∂cos/∂o at the class token, checked by central differences in float64 of a
    computation written out here: the embedding read from ``o`` through out_proj, the MLP,
    post_layernorm and the projection."""
    model = copy.deepcopy(tiny_encoder.model).double()
    hidden = torch.as_tensor(stored, dtype=torch.float64)
    query = torch.as_tensor(queries, dtype=torch.float64)
    maps, weights = grad_eclip_maps(model, hidden, query, tiny_encoder.grid)

    vision = model.vision_model
    layer = vision.encoder.layers[-1]
    with torch.no_grad():
        o = replay_last_layer(model, hidden).cls_output

        def score(o: torch.Tensor) -> torch.Tensor:
            residual = hidden[:, 0] + layer.self_attn.out_proj(o)
            out = residual + layer.mlp(layer.layer_norm2(residual))
            embeds = model.visual_projection(vision.post_layernorm(out))
            return torch.nn.functional.cosine_similarity(embeds, query, dim=-1)

        eps = 1e-6
        numeric = torch.zeros_like(o)
        for c in range(o.shape[1]):
            step = torch.zeros_like(o)
            step[:, c] = eps
            numeric[:, c] = (score(o + step) - score(o - step)) / (2 * eps)
    torch.testing.assert_close(weights, numeric, rtol=1e-5, atol=1e-8)

    # the map, by a plain loop over heads, patches and channels
    out = replay_last_layer(model, hidden)
    heads = out.logits.shape[1]
    head_dim = o.shape[1] // heads
    logits = out.logits[:, :, 1:].detach().numpy()
    values = out.values[:, 1:].detach().numpy()
    w = weights.numpy()
    expected = np.zeros(values.shape[:2])
    for b in range(values.shape[0]):
        for h in range(heads):
            lam = (logits[b, h] - logits[b, h].min()) / (logits[b, h].max() - logits[b, h].min())
            channels = slice(h * head_dim, (h + 1) * head_dim)
            for i in range(values.shape[1]):
                expected[b, i] += lam[i] * (w[b, channels] @ values[b, i, channels])
    expected_maps = np.maximum(expected, 0).reshape(-1, *tiny_encoder.grid)
    np.testing.assert_allclose(maps.numpy(), expected_maps, rtol=1e-9, atol=1e-12)


# -- GAE: the rollout, and the attention maps it is fed -----------------------------------


def test_gae_rollout_known_answer() -> None:
    rng = np.random.default_rng(3)
    attentions = [rng.normal(size=(2, 3, 5, 5)) for _ in range(2)]
    gradients = [rng.normal(size=(2, 3, 5, 5)) for _ in range(2)]
    expected = []
    for b in range(2):
        relevance = np.eye(5)
        for a, g in zip(attentions, gradients, strict=True):
            bar = np.maximum(a[b] * g[b], 0).mean(axis=0)
            relevance = relevance + bar @ relevance
        expected.append(relevance[0, 1:])
    # R = (I + Ā_2)(I + Ā_1): the last layer multiplies from the left
    bars = [
        np.maximum(a[0] * g[0], 0).mean(axis=0) for a, g in zip(attentions, gradients, strict=True)
    ]
    product = (np.eye(5) + bars[1]) @ (np.eye(5) + bars[0])
    np.testing.assert_allclose(expected[0], product[0, 1:], rtol=1e-12)
    got = gae_rollout(
        [torch.as_tensor(a) for a in attentions], [torch.as_tensor(g) for g in gradients]
    )
    np.testing.assert_allclose(got.numpy(), np.stack(expected), rtol=1e-5, atol=1e-6)


def test_gae_all_layers_matches_model_attentions(
    tiny_encoder: ClipEncoder, images: list[LoadedImage], queries: np.ndarray
) -> None:
    """The hooks capture what ``output_attentions=True`` returns, and the gradients agree."""
    model = tiny_encoder.model
    pixels = tiny_encoder.pixel_values(images)
    query = torch.as_tensor(queries)
    with torch.enable_grad():
        out = model.vision_model(pixel_values=pixels, output_attentions=True)
        embeds = model.visual_projection(out.pooler_output)
        cosines = torch.nn.functional.cosine_similarity(embeds, query, dim=-1)
        loss = model.logit_scale.detach().exp() * cosines.sum()  # GAE's target: the logit
        gradients = torch.autograd.grad(loss, list(out.attentions))
    expected = gae_rollout([a.detach() for a in out.attentions], list(gradients))
    got = Gae().heatmaps(tiny_encoder, ImageEvidence(images=images), queries)
    np.testing.assert_allclose(got.reshape(3, -1), expected.numpy(), rtol=1e-4, atol=1e-6)
    # the last layer alone is a different (sharper) map
    last = GaeLastLayer().heatmaps(tiny_encoder, ImageEvidence(images=images), queries)
    assert not np.allclose(last, got)


# -- the pointing game on the trained shapes model ----------------------------------------


@pytest.fixture(scope="module")
def shapes_hits(shapes_encoder: ClipEncoder) -> dict[str, Any]:
    """~60 (scene, named object) hits from 30 held-out scenes."""
    images, cells, phrases = [], [], []
    for scene in generate_scenes(30, seed=100):
        for obj in scene.objects:
            images.append(load_image(scene.image))
            phrases.append(obj.phrase)
            # 128px mask -> 8x8 grid of 16px cells: a cell is on the object if any pixel is
            cells.append(obj.mask.reshape(8, 16, 8, 16).any(axis=(1, 3)))
    features = shapes_encoder.encode_images(images, last_layer=True)
    return {
        "images": images,
        "stored": np.stack([f.last_layer_inputs for f in features]),  # type: ignore[misc]
        "cells": np.stack(cells),
        "queries": shapes_encoder.embed_texts(phrases),
    }


@pytest.mark.parametrize("method", _methods(), ids=repr)
def test_pointing_game_beats_random(
    method: HeatmapMethod, shapes_encoder: ClipEncoder, shapes_hits: dict[str, Any]
) -> None:
    if method.needs_pixels:
        evidence = ImageEvidence(images=shapes_hits["images"])
    else:
        evidence = ImageEvidence(last_layer_inputs=shapes_hits["stored"])
    maps = method.heatmaps(shapes_encoder, evidence, shapes_hits["queries"])
    assert maps.shape == (len(shapes_hits["cells"]), 8, 8)
    cells = shapes_hits["cells"].reshape(len(maps), -1)
    hits = cells[np.arange(len(maps)), maps.reshape(len(maps), -1).argmax(axis=1)]
    rate = float(hits.mean())
    baseline = float(cells.mean())  # a uniform random map's argmax is a uniform random cell
    print(f"{method!r}: pointing {rate:.3f} vs random {baseline:.3f} over {len(maps)} hits")
    assert baseline < 0.2
    assert rate > baseline + 0.45
