"""SigLIP's hub tokenizer files, written offline (``build_tiny_siglip(..., spiece=True)``).

Hub SigLIP v1 checkpoints (``google/siglip-base-patch16-224`` and its siblings) ship their
tokenizer as a SentencePiece model, ``spiece.model`` (ids 0 ``<pad>``, 1 ``</s>``, 2
``<unk>``; ``</s>`` ends every text and pads it), with a ``tokenizer_config.json`` naming
``SiglipTokenizer`` (lower case, 64 tokens, only ``input_ids`` as model input: no
attention mask), a ``special_tokens_map.json`` and a ``preprocessor_config.json`` naming
``SiglipImageProcessor``. :func:`write_spiece_tokenizer` writes the same files, the model
trained here with ``sentencepiece`` on shapes-world captions, so that tests load a folder
laid out as a downloaded one through the user's path (``AutoProcessor.from_pretrained``).
"""

from __future__ import annotations

import io
import json
import random
import string
from pathlib import Path
from typing import Any

from qdrant_xai.demo.world import COLORS, SHAPES, caption_for
from qdrant_xai.errors import MissingDependencyError
from qdrant_xai.testing.siglip import TokenIds

__all__ = ["write_spiece_tokenizer"]

#: captions the SentencePiece model is trained on
_CORPUS_CAPTIONS = 2000
#: the vocabulary asked for (a soft limit: the corpus holds fewer pieces)
_VOCAB_SIZE = 64


def _special(content: str) -> dict[str, Any]:
    return {"content": content, "lstrip": True, "normalized": False, "rstrip": True}


def _corpus(words: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    pairs = [(colour, shape) for colour in COLORS for shape in SHAPES]
    lines = [caption_for(rng.sample(pairs, rng.choice((1, 2, 3)))) for _ in range(_CORPUS_CAPTIONS)]
    # the words as sentences, and every letter and digit: unseen words still tokenize
    return [*lines, *words, " ".join(string.ascii_lowercase + string.digits)]


def write_spiece_tokenizer(
    path: Path, words: list[str], image_size: int, max_length: int, *, seed: int = 0
) -> TokenIds:
    """Train a SentencePiece Unigram model and write it into ``path`` with the processor
    files of a hub SigLIP checkpoint (module doc).

    Returns:
        the ids the model's text config needs (vocabulary size, ``</s>`` as pad and end).

    Raises:
        MissingDependencyError: ``sentencepiece`` is not installed.
    """
    try:
        import sentencepiece as spm
    except ImportError as exc:
        raise MissingDependencyError(
            "writing a SentencePiece tokenizer needs the sentencepiece package: "
            "pip install 'qdrant-xai[siglip]'"
        ) from exc
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(words, seed)),
        model_writer=model,
        model_type="unigram",
        vocab_size=_VOCAB_SIZE,
        hard_vocab_limit=False,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "spiece.model").write_bytes(model.getvalue())
    pieces = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    tokenizer_config = {
        "added_tokens_decoder": {
            "1": {**_special("</s>"), "single_word": False, "special": True},
            "2": {**_special("<unk>"), "single_word": False, "special": True},
        },
        "additional_special_tokens": [],
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": "</s>",
        "model_input_names": ["input_ids"],
        "model_max_length": max_length,
        "pad_token": "</s>",
        "processor_class": "SiglipProcessor",
        "sp_model_kwargs": {},
        "tokenizer_class": "SiglipTokenizer",
        "unk_token": "<unk>",
    }
    special_tokens = {
        name: {**_special(content), "single_word": False}
        for name, content in (("eos_token", "</s>"), ("pad_token", "</s>"), ("unk_token", "<unk>"))
    }
    preprocessor = {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"height": image_size, "width": image_size},
    }
    for name, content in (
        ("tokenizer_config.json", tokenizer_config),
        ("special_tokens_map.json", special_tokens),
        ("preprocessor_config.json", preprocessor),
    ):
        (path / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return TokenIds(vocab_size=pieces, pad=1, eos=1)
