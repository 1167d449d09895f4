"""What a model name means: the bundled "shapes" model resolves everywhere, by name."""

from __future__ import annotations

from pathlib import Path

from qdrant_xai import ClipEncoder
from qdrant_xai.encoding.checkpoints import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    checkpoint_path,
    is_loadable_name,
)


def test_shapes_names_the_bundled_checkpoint_folder() -> None:
    folder = Path(checkpoint_path("shapes"))
    assert folder == BUNDLED_MODELS["shapes"]
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert checkpoint_path(DEFAULT_MODEL) == DEFAULT_MODEL  # hub ids pass through


def test_the_encoder_loads_shapes_by_name_and_records_the_name(
    shapes_encoder: ClipEncoder,
) -> None:
    assert shapes_encoder.model_id == "shapes"  # portable: no site-packages path in payloads
    by_folder = ClipEncoder.from_pretrained(checkpoint_path("shapes"))
    assert shapes_encoder.fingerprint.key == by_folder.fingerprint.key  # the same weights


def test_recorded_names_that_can_be_loaded_here(tmp_path: Path) -> None:
    assert is_loadable_name("shapes")
    assert is_loadable_name("openai/clip-vit-base-patch32")
    assert is_loadable_name(str(tmp_path))
    assert not is_loadable_name(str(tmp_path / "gone"))
    assert not is_loadable_name("no-such-model")
    assert not is_loadable_name(42)
