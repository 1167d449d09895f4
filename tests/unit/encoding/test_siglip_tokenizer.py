"""SigLIP's hub tokenizer (a SentencePiece ``spiece.model`` read by ``SiglipTokenizer``),
written offline as a downloaded checkpoint has it and loaded through the user's path."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from qdrant_xai import ClipEncoder
from qdrant_xai.encoding.checkpoints import missing_dependency
from qdrant_xai.encoding.token_offsets import align_pieces
from qdrant_xai.errors import MissingDependencyError, ModelLoadError
from qdrant_xai.explain import WORD_METHODS
from qdrant_xai.testing import build_tiny_siglip

torch.set_num_threads(1)

HAS_SENTENCEPIECE = importlib.util.find_spec("sentencepiece") is not None
needs_sentencepiece = pytest.mark.skipif(
    not HAS_SENTENCEPIECE,
    reason="SigLIP's SentencePiece tokenizer needs sentencepiece: pip install 'qdrant-xai[siglip]'",
)
HUB_FILES = [
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "tokenizer_config.json",
]
TEXTS = ["A red, circle!  and a BLUE square.", "yellow ﬁsh", "a Ｇreen cross"]


@pytest.fixture(scope="module")
def spiece_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAS_SENTENCEPIECE:
        pytest.skip(
            "SigLIP's SentencePiece tokenizer needs sentencepiece: pip install 'qdrant-xai[siglip]'"
        )
    return build_tiny_siglip(tmp_path_factory.mktemp("spiece"), spiece=True)


@pytest.fixture(scope="module")
def encoder(spiece_dir: Path) -> ClipEncoder:
    return ClipEncoder.from_pretrained(spiece_dir)


def _spans(features: object) -> list[tuple[str, tuple[int, int]]]:
    return [(w.text, w.span) for w in features.words]  # type: ignore[attr-defined]


def test_pieces_align_with_the_text_they_came_from() -> None:
    text = "A red, circle!  ﬁsh Ｇreen"
    pieces = ["▁a", "▁", "re", "d", "▁circle", "▁fi", "sh", "▁green", None, "<unk>", None]
    spans = align_pieces(text, pieces)
    assert [text[s:e] for s, e in spans] == [
        "A", "", "re", "d", "circle", "ﬁ", "sh", "Ｇreen", "", "", "",
    ]  # fmt: skip


@needs_sentencepiece
def test_the_folder_is_laid_out_as_a_hub_siglip(spiece_dir: Path) -> None:
    assert sorted(os.listdir(spiece_dir)) == HUB_FILES
    processor = AutoProcessor.from_pretrained(spiece_dir)
    tokenizer = processor.tokenizer
    # what transformers 5 does with it: the SentencePiece tokenizer itself, no fast twin,
    # no attention mask, and offsets silently left out (so the encoder aligns them)
    assert type(tokenizer).__name__ == "SiglipTokenizer" and not tokenizer.is_fast
    batch = tokenizer(["a red circle"], padding="max_length", return_offsets_mapping=True)
    assert set(batch) == {"input_ids"}
    ids = batch["input_ids"][0]
    assert len(ids) == 64 and tokenizer.convert_ids_to_tokens(ids[:4]) == [
        "▁a", "▁red", "▁circle", "</s>",
    ]  # fmt: skip
    assert set(ids[3:]) == {tokenizer.pad_token_id} == {tokenizer.eos_token_id} == {1}


@needs_sentencepiece
def test_words_and_spans_come_through_the_encoder(encoder: ClipEncoder) -> None:
    assert encoder.family.name == "siglip"
    features = encoder.encode_texts(TEXTS)
    assert _spans(features[0]) == [
        ("A", (0, 1)), ("red", (2, 5)), ("circle", (7, 13)), ("and", (16, 19)),
        ("a", (20, 21)), ("BLUE", (22, 26)), ("square", (27, 33)),
    ]  # fmt: skip
    assert _spans(features[1]) == [("yellow", (0, 6)), ("ﬁsh", (7, 10))]
    assert _spans(features[2]) == [("a", (0, 1)), ("Ｇreen", (2, 7)), ("cross", (8, 13))]
    assert not any(f.truncated for f in features)
    embeds = encoder.embed_texts(TEXTS)
    np.testing.assert_allclose(np.stack([f.embedding for f in features]), embeds, atol=1e-5)
    for f in features:  # the words hold every token but the end and padding ones
        assert f.word_contributions.shape == (len(f.words), encoder.dim)


@needs_sentencepiece
def test_words_past_the_context_are_reported_cut(encoder: ClipEncoder) -> None:
    text = " ".join(["red circle"] * 40)  # 80 words, one token each, 64 positions
    (features,) = encoder.encode_texts([text])
    assert features.truncated and len(features.words) == 63  # the 64th position is </s>
    assert encoder.words_in_context(text) == 63


@needs_sentencepiece
@pytest.mark.parametrize("method", ["tokens", "occlusion", "context", "ig"])
def test_word_methods_run_without_an_attention_mask(encoder: ClipEncoder, method: str) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    targets = encoder.embed_images([image, image])
    results = WORD_METHODS.create(method).attribute(encoder, TEXTS[:2], targets)
    assert [[w.text for w in words] for words, _ in results] == [
        ["A", "red", "circle", "and", "a", "BLUE", "square"], ["yellow", "ﬁsh"],
    ]  # fmt: skip
    assert all(np.isfinite(scores).all() for _, scores in results)


def test_a_missing_package_names_the_extra() -> None:
    error = missing_dependency(
        ImportError("SiglipTokenizer requires the SentencePiece library but it was not found"),
        "google/siglip-base-patch16-224",
    )
    assert isinstance(error, MissingDependencyError) and isinstance(error, ModelLoadError)
    assert "qdrant-xai[siglip]" in str(error) and "sentencepiece" in str(error)
    protobuf = missing_dependency(ImportError("no", name="google.protobuf"), "m")
    assert protobuf is not None and "protobuf package" in str(protobuf)
    assert missing_dependency(ImportError("torchvision"), "m") is None
    assert missing_dependency(OSError("sentencepiece"), "m") is None


@needs_sentencepiece
@pytest.mark.parametrize("module", ["sentencepiece", "google.protobuf"])
def test_loading_without_the_package_raises_the_typed_error(spiece_dir: Path, module: str) -> None:
    script = (
        "import sys\n"
        f"sys.modules[{module!r}] = None\n"
        "from qdrant_xai import ClipEncoder\n"
        "from qdrant_xai.errors import MissingDependencyError\n"
        "try:\n"
        f"    ClipEncoder.from_pretrained({str(spiece_dir)!r})\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    package = module.split(".")[-1]
    assert f"needs the {package} package" in done.stdout
    assert "pip install 'qdrant-xai[siglip]'" in done.stdout
