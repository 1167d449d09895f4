"""Tiny SigLIP checkpoints built offline, for tests and examples.

Like :func:`~qdrant_xai.testing.build_tiny_clip`, :func:`build_tiny_siglip` writes a real,
randomly initialised :class:`~transformers.SiglipModel` and its processor in the usual
``save_pretrained`` layout, loadable with ``ClipEncoder.from_pretrained(folder)``:

* ``version=1``: SigLIP. Its hub tokenizer is a SentencePiece model (``SiglipTokenizer``,
  which needs the ``sentencepiece`` package); the one written here is the same kind of
  model in the ``tokenizers`` library (a Unigram over ``▁``-prefixed pieces, lower-cased,
  ``</s>`` appended and used as padding), saved as ``tokenizer.json``, so nothing but
  ``transformers`` is needed to load it.
* ``version=2``: fixed-resolution SigLIP 2, which Google publishes as ``SiglipModel``
  checkpoints with a Gemma tokenizer: here ``Siglip2Tokenizer`` (Gemma's byte-fallback BPE,
  lower-cased, padded on the left with ``<pad>``, no special token added).

Both pad texts to ``max_length`` tokens (64 by default, as SigLIP was trained), and the
text tower pools the last position. The words given become single tokens.

Use::

    from qdrant_xai import ClipEncoder
    from qdrant_xai.testing import build_tiny_siglip

    encoder = ClipEncoder.from_pretrained(build_tiny_siglip(tmp_path / "siglip"))
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram
from transformers import (
    PreTrainedTokenizerFast,
    Siglip2Tokenizer,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipProcessor,
    SiglipTextConfig,
    SiglipVisionConfig,
)

from qdrant_xai.demo.world import WORLD_WORDS

__all__ = [
    "build_siglip_processor",
    "build_siglip_tokenizer",
    "build_tiny_siglip",
    "tiny_siglip_config",
    "token_ids",
]

_SPACE = "▁"  # SentencePiece's word-start mark
_CHARACTERS = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))


def _words(words: Iterable[str]) -> list[str]:
    kept = []
    for raw in words:
        word = unicodedata.normalize("NFC", raw).lower()
        if not word or not word.isalpha():
            raise ValueError(f"cannot make {raw!r} a single token: words must be runs of letters")
        kept.append(word)
    return list(dict.fromkeys(kept))


def _unigram_tokenizer(words: list[str], max_length: int) -> PreTrainedTokenizerFast:
    """SigLIP v1's kind of tokenizer: a SentencePiece Unigram over ``▁word`` pieces."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (_SPACE, -2.0)]
    pieces += [(_SPACE + word, -1.0) for word in words]
    pieces += [(char, -5.0) for char in _CHARACTERS]
    backend = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement=_SPACE, prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        pad_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def _gemma_tokenizer(words: list[str], max_length: int) -> Siglip2Tokenizer:
    """SigLIP 2's tokenizer (Gemma BPE, lower-cased) whose vocabulary makes each word, with
    and without its leading ``▁``, one token."""
    vocab: dict[str, int] = {}
    for token in ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", _SPACE, *_CHARACTERS]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for target in [piece for word in words for piece in (word, _SPACE + word)]:
        symbols = list(target)
        while len(symbols) > 1:  # merges in rank order leave earlier words unchanged
            for left, right in merges:
                i = 0
                while i < len(symbols) - 1:
                    if (symbols[i], symbols[i + 1]) == (left, right):
                        symbols[i : i + 2] = [left + right]
                    else:
                        i += 1
            if len(symbols) > 1:
                merges.append((symbols[0], symbols[1]))
                vocab.setdefault(symbols[0] + symbols[1], len(vocab))
                symbols[0:2] = [symbols[0] + symbols[1]]
    return Siglip2Tokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]
        model_max_length=max_length,
    )


def build_siglip_tokenizer(
    words: Iterable[str] = WORLD_WORDS, *, version: int = 1, max_length: int = 64
) -> Any:
    """The tokenizer of :func:`build_tiny_siglip` (module doc): each of ``words`` one token.

    Args:
        words: words to make single tokens (letters only; lower-cased).
        version: 1 (SigLIP: SentencePiece-style Unigram) or 2 (SigLIP 2: Gemma BPE).
        max_length: the fixed length texts are padded to (``model_max_length``).
    """
    kept = _words(words)
    if version == 1:
        return _unigram_tokenizer(kept, max_length)
    if version == 2:
        return _gemma_tokenizer(kept, max_length)
    raise ValueError(f"version must be 1 (SigLIP) or 2 (SigLIP 2), got {version!r}")


def build_siglip_processor(
    words: Iterable[str] = WORLD_WORDS,
    *,
    version: int = 1,
    image_size: int = 32,
    max_length: int = 64,
) -> SiglipProcessor:
    """The processor of :func:`build_tiny_siglip`: :func:`build_siglip_tokenizer` and an
    image processor that resizes to ``image_size`` square (no crop) and normalises with
    mean and std 0.5, as SigLIP's does."""
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    tokenizer = build_siglip_tokenizer(words, version=version, max_length=max_length)
    return SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_siglip(
    output_dir: str | Path,
    *,
    version: int = 1,
    words: Iterable[str] = WORLD_WORDS,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    max_length: int = 64,
    seed: int = 0,
    spiece: bool = False,
) -> Path:
    """Build a randomly initialised tiny SigLIP (or fixed-resolution SigLIP 2) and save it
    with its processor.

    Both towers share ``hidden_size`` (also the embedding dimension: SigLIP has no
    projection after its image head), ``num_layers`` and ``num_heads`` (MLPs ``4 *
    hidden_size`` wide). The image processor resizes to ``image_size`` square (no crop) and
    normalises with mean and std 0.5, as SigLIP's does.

    Args:
        output_dir: folder to write ``config.json``, ``model.safetensors`` and the
            processor files into; created if missing.
        version: 1 (SigLIP) or 2 (fixed-resolution SigLIP 2); see the module doc.
        words: words the tokenizer keeps as single tokens.
        image_size: side of the square model input in pixels.
        patch_size: side of a square patch; must divide ``image_size``.
        hidden_size: width of both transformers; divisible by ``num_heads``.
        num_layers: depth of both transformers.
        num_heads: attention heads per layer (and in the image's pooling head).
        max_length: the text length texts are padded to (``max_position_embeddings``).
        seed: seed for the random weights; the same arguments give the same model.
        spiece: (``version=1``) write the tokenizer as SigLIP's hub checkpoints ship it
            (``google/siglip-base-patch16-224``): a SentencePiece ``spiece.model`` trained
            here on shapes-world captions and ``words`` (sub-word pieces, not one token per
            word), ``tokenizer_config.json`` naming ``SiglipTokenizer``,
            ``special_tokens_map.json`` and ``preprocessor_config.json``. Loading it needs
            ``sentencepiece`` and ``protobuf`` (``pip install 'qdrant-xai[siglip]'``).

    Returns:
        ``Path(output_dir)``.
    """
    if patch_size <= 0 or image_size % patch_size != 0:
        raise ValueError(f"patch_size={patch_size} must divide image_size={image_size}")
    if num_heads <= 0 or hidden_size % num_heads != 0:
        raise ValueError(f"num_heads={num_heads} must divide hidden_size={hidden_size}")
    arch = {
        "image_size": image_size,
        "patch_size": patch_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "max_length": max_length,
    }
    if spiece:
        if version != 1:
            raise ValueError("spiece=True writes SigLIP v1's tokenizer: use version=1")
        from qdrant_xai.testing.spiece import write_spiece_tokenizer

        path = Path(output_dir)
        ids = write_spiece_tokenizer(path, _words(words), image_size, max_length, seed=seed)
        return save_tiny_siglip_model(path, ids, arch, seed=seed)
    processor = build_siglip_processor(
        words, version=version, image_size=image_size, max_length=max_length
    )
    path = save_tiny_siglip_model(Path(output_dir), token_ids(processor.tokenizer), arch, seed=seed)
    processor.save_pretrained(path)
    return path


@dataclass(frozen=True)
class TokenIds:
    """What the text tower's config needs from its tokenizer."""

    vocab_size: int
    pad: int | None
    eos: int | None
    bos: int | None = None


def token_ids(tokenizer: Any) -> TokenIds:
    """The ids a SigLIP text config needs from ``tokenizer``."""
    return TokenIds(
        vocab_size=len(tokenizer),
        pad=tokenizer.pad_token_id,
        eos=tokenizer.eos_token_id,
        bos=getattr(tokenizer, "bos_token_id", None),
    )


def tiny_siglip_config(
    ids: TokenIds,
    *,
    image_size: int,
    patch_size: int,
    vision_hidden_size: int,
    vision_layers: int,
    vision_heads: int,
    text_hidden_size: int,
    text_layers: int,
    text_heads: int,
    context_length: int,
) -> SiglipConfig:
    """A :class:`~transformers.SiglipConfig` wired to a tokenizer's ids (:func:`token_ids`).

    SigLIP has no projection after its image head, so the embedding dimension is
    ``vision_hidden_size`` and the text tower's head maps ``text_hidden_size`` onto it.
    MLPs are ``4 * hidden_size`` wide; ``context_length`` is the fixed length texts are
    padded to (``max_position_embeddings``).
    """
    text_config = SiglipTextConfig(
        vocab_size=ids.vocab_size,
        hidden_size=text_hidden_size,
        intermediate_size=4 * text_hidden_size,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        max_position_embeddings=context_length,
        projection_size=vision_hidden_size,
        pad_token_id=ids.pad,
        eos_token_id=ids.eos,
        bos_token_id=ids.bos,
    )
    vision_config = SiglipVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=vision_hidden_size,
        intermediate_size=4 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads,
    )
    return SiglipConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict())


def save_tiny_siglip_model(path: Path, ids: TokenIds, arch: dict[str, int], *, seed: int) -> Path:
    """Write a randomly initialised ``SiglipModel`` (``config.json``, ``model.safetensors``)
    with the architecture ``arch`` (the keyword arguments of :func:`build_tiny_siglip`) and
    a vocabulary of ``ids.vocab_size`` tokens into ``path``, created if missing."""
    hidden, layers, heads = arch["hidden_size"], arch["num_layers"], arch["num_heads"]
    config = tiny_siglip_config(
        ids,
        image_size=arch["image_size"],
        patch_size=arch["patch_size"],
        vision_hidden_size=hidden,
        vision_layers=layers,
        vision_heads=heads,
        text_hidden_size=hidden,
        text_layers=layers,
        text_heads=heads,
        context_length=arch["max_length"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SiglipModel(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    return path
