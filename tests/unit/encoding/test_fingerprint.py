"""The one "same model?" check: dimensions and agreement of stored vectors."""

from __future__ import annotations

import numpy as np
import pytest

from qdrant_xai.encoding.fingerprint import (
    MIN_AGREEMENT,
    check_agreement,
    check_dimension,
    vector_agreement,
)
from qdrant_xai.errors import DimensionMismatchError, ModelMismatchError, SchemaMismatchError


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_check_dimension_passes_the_models_size_and_unknown_sizes() -> None:
    check_dimension(512, 512, what="vector 'image'", model="m")
    check_dimension(None, 512, what="vector 'image'", model="m")  # no such vector: not ours


def test_check_dimension_names_the_vector_both_sizes_and_the_fix() -> None:
    with pytest.raises(DimensionMismatchError) as info:
        check_dimension(768, 512, what="vector 'image' of collection 'c'", model="clip-b32")
    message = str(info.value)
    assert "vector 'image' of collection 'c' has dimension 768, clip-b32 gives 512" in message
    assert "another model" in message and "--model" in message
    assert isinstance(info.value, SchemaMismatchError | ModelMismatchError)
    assert isinstance(info.value, SchemaMismatchError) and isinstance(
        info.value, ModelMismatchError
    )


def test_agreement_ignores_the_stored_vectors_norm() -> None:
    rng = np.random.default_rng(0)
    fresh = _unit(rng.normal(size=16).astype(np.float32))
    assert vector_agreement(fresh * 7.5, fresh) == pytest.approx(1.0, abs=1e-6)
    assert vector_agreement(-fresh, fresh) == pytest.approx(-1.0, abs=1e-6)


def test_check_agreement_accepts_rounding_and_refuses_another_model() -> None:
    rng = np.random.default_rng(1)
    fresh = _unit(rng.normal(size=64).astype(np.float32))
    stored_fp16 = fresh.astype(np.float16).astype(np.float32) * 3
    assert check_agreement(stored_fp16, fresh, what="point 1", model="m") > 0.999
    other = _unit(fresh + rng.normal(scale=0.5, size=64).astype(np.float32))
    assert vector_agreement(other, fresh) < MIN_AGREEMENT
    with pytest.raises(ModelMismatchError, match=r"point 1 does not come from m \(cosine 0\.\d+"):
        check_agreement(other, fresh, what="point 1", model="m")
