"""Tiny CLIP (and SigLIP: :mod:`.siglip`) checkpoints built offline, for tests and examples.

Like httpx's test transport, these helpers ship with the library so that code
using qdrant-xai can be tested without downloading a model: they build a
real, randomly initialised :class:`~transformers.CLIPModel` with a real
byte-level BPE tokenizer whose vocabulary makes every given word a single
token, and save both in the usual ``save_pretrained`` layout.

Use::

    from transformers import AutoProcessor, CLIPModel
    from qdrant_xai.testing import build_tiny_clip

    path = build_tiny_clip(tmp_path / "tiny-clip")
    model = CLIPModel.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)

The embeddings of a random model carry no meaning; for a small model that
actually understands its (synthetic) world, load the bundled one with
``ClipEncoder.from_pretrained("shapes")`` (made by ``examples/train_shapes_clip.py``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTokenizer,
    CLIPVisionConfig,
)

from qdrant_xai.demo.world import WORLD_WORDS

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "build_clip_processor",
    "build_clip_tokenizer",
    "build_siglip_tokenizer",
    "build_tiny_clip",
    "build_tiny_siglip",
    "build_vit_b32_random",
    "bytes_to_unicode",
    "clip_bpe_vocabulary",
    "tiny_clip_config",
    "write_tutorial_collection",
]

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
_END_OF_WORD = "</w>"
# OpenAI CLIP's image normalisation, kept so the tiny models preprocess like real ones.
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character (GPT-2's byte-level table).

    Printable Latin-1 bytes map to themselves; the others (control characters,
    space, …) map to code points from 256 upwards, so that byte-level BPE never
    sees whitespace or control characters.

    Returns:
        A dict of 256 entries, byte value -> one-character string, in the order
        CLIP uses for its first 256 vocabulary ids.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    byte_values = list(printable)
    code_points = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            byte_values.append(byte)
            code_points.append(256 + extra)
            extra += 1
    return {byte: chr(point) for byte, point in zip(byte_values, code_points, strict=True)}


def clip_bpe_vocabulary(words: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """Build a CLIP-format byte-level BPE vocabulary in which each word is one token.

    The layout follows OpenAI CLIP's: ids ``0..255`` are the byte-level
    characters of :func:`bytes_to_unicode`, ``256..511`` the same characters
    with the end-of-word suffix ``"</w>"``, then one id per merge result, then
    ``"<|startoftext|>"`` and ``"<|endoftext|>"`` last. Merges are added word by
    word, each joining the first two pieces the merges so far leave, until the
    word is the single token ``"word</w>"``; since BPE applies merges in rank
    order, later words never change how earlier ones tokenize. Any other text
    still tokenizes, into characters and known pieces.

    Args:
        words: Words to make single tokens. They are lower-cased (the CLIP
            tokenizer lower-cases its input) and must consist of letters only,
            since CLIP's pre-tokenizer splits at anything else.

    Returns:
        ``(vocab, merges)``: token -> id, and the merges as ``"left right"``
        strings in rank order; ready for ``CLIPTokenizer(vocab=..., merges=...)``.

    Raises:
        ValueError: if a word is empty or contains a non-letter character.
    """
    byte_chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*byte_chars, *(char + _END_OF_WORD for char in byte_chars)]:
        vocab[token] = len(vocab)
    merges: list[str] = []
    ranks: dict[tuple[str, str], int] = {}
    for raw in words:
        word = unicodedata.normalize("NFC", raw).lower()
        if not word or not word.isalpha():
            raise ValueError(
                f"cannot make {raw!r} a single CLIP token: words must be non-empty runs of "
                "letters (split phrases into words first)"
            )
        pieces = _bpe(_byte_level_symbols(word), ranks)
        while len(pieces) > 1:
            left, right = pieces[0], pieces[1]
            ranks[(left, right)] = len(merges)
            merges.append(f"{left} {right}")
            vocab.setdefault(left + right, len(vocab))
            pieces = _bpe(pieces, ranks)
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return vocab, merges


def build_clip_tokenizer(
    words: Iterable[str] = WORLD_WORDS, *, model_max_length: int = 32
) -> CLIPTokenizer:
    """Build a CLIP tokenizer whose vocabulary makes each of ``words`` one token.

    Args:
        words: Words to make single tokens (see :func:`clip_bpe_vocabulary`).
        model_max_length: Longest sequence, in tokens including ``<|startoftext|>``
            and ``<|endoftext|>``; must not exceed the text model's
            ``max_position_embeddings``.

    Returns:
        A :class:`~transformers.CLIPTokenizer` (lower-casing, byte-level BPE, pads
        with ``<|endoftext|>``), which supports ``return_offsets_mapping``.
    """
    vocab, merges = clip_bpe_vocabulary(words)
    # The tokenizers backend wants merges as (left, right) pairs, whatever the annotation says.
    pairs = [tuple(merge.split(" ", 1)) for merge in merges]
    return CLIPTokenizer(
        vocab=vocab,
        merges=pairs,  # type: ignore[arg-type]
        model_max_length=model_max_length,
    )


def build_clip_processor(
    words: Iterable[str] = WORLD_WORDS, *, image_size: int = 32, model_max_length: int = 32
) -> CLIPProcessor:
    """Build a CLIP processor: the tokenizer of :func:`build_clip_tokenizer` and an
    image processor that resizes the shortest edge to ``image_size`` and centre-crops
    a square of that side, normalising with OpenAI CLIP's mean and std."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_resize=True,
        do_center_crop=True,
        do_normalize=True,
        image_mean=list(_CLIP_MEAN),
        image_std=list(_CLIP_STD),
    )
    tokenizer = build_clip_tokenizer(words, model_max_length=model_max_length)
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_clip(
    output_dir: str | Path,
    *,
    words: Iterable[str] = WORLD_WORDS,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    projection_dim: int = 16,
    max_position_embeddings: int = 32,
    seed: int = 0,
) -> Path:
    """Build a randomly initialised tiny CLIP and save it with its processor.

    Vision and text towers share ``hidden_size``, ``num_layers`` and
    ``num_heads`` (intermediate size ``4 * hidden_size``). The patch grid is
    ``image_size // patch_size`` on each side, any integer (``image_size=40,
    patch_size=8`` gives an odd 5 x 5 grid, like ViT-B/32's 7 x 7).

    Args:
        output_dir: Folder to write ``config.json``, ``model.safetensors`` and the
            processor files into; created if missing.
        words: Words the tokenizer keeps as single tokens; the shapes-world words
            by default.
        image_size: Side of the square model input in pixels.
        patch_size: Side of a square patch in pixels; must divide ``image_size``.
        hidden_size: Width of both transformers; divisible by ``num_heads``.
        num_layers: Depth of both transformers.
        num_heads: Attention heads per layer.
        projection_dim: Dimension ``D`` of the joint embedding space.
        max_position_embeddings: Text context length in tokens; also the
            tokenizer's ``model_max_length``.
        seed: Seed for the random weights; the same arguments give the same model.

    Returns:
        ``Path(output_dir)``, loadable with ``CLIPModel.from_pretrained`` and
        ``AutoProcessor.from_pretrained``.

    Raises:
        ValueError: if ``patch_size`` does not divide ``image_size`` or
            ``num_heads`` does not divide ``hidden_size``.
    """
    if patch_size <= 0 or image_size % patch_size != 0:
        raise ValueError(
            f"patch_size={patch_size} must divide image_size={image_size}; "
            f"try image_size={max(1, image_size // max(patch_size, 1)) * max(patch_size, 1)}"
        )
    if num_heads <= 0 or hidden_size % num_heads != 0:
        raise ValueError(f"num_heads={num_heads} must divide hidden_size={hidden_size}")
    processor = build_clip_processor(
        words, image_size=image_size, model_max_length=max_position_embeddings
    )
    config = tiny_clip_config(
        processor.tokenizer,
        image_size=image_size,
        patch_size=patch_size,
        vision_hidden_size=hidden_size,
        vision_layers=num_layers,
        vision_heads=num_heads,
        text_hidden_size=hidden_size,
        text_layers=num_layers,
        text_heads=num_heads,
        context_length=max_position_embeddings,
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path


def build_vit_b32_random(*, seed: int = 0) -> tuple[CLIPModel, CLIPProcessor]:
    """A CLIP with ViT-B/32's shapes (224 px input, 7x7 grid, widths 768/512, 12 layers
    each, projection 512) and random weights, built in memory for realistic timings.

    The weights are random, so its heatmaps mean nothing; only costs are meaningful.
    """
    processor = build_clip_processor(image_size=224, model_max_length=77)
    config = tiny_clip_config(
        processor.tokenizer,
        image_size=224,
        patch_size=32,
        vision_hidden_size=768,
        vision_layers=12,
        vision_heads=12,
        text_hidden_size=512,
        text_layers=12,
        text_heads=8,
        context_length=77,
        projection_dim=512,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.set_attn_implementation("eager")
    return model.eval(), processor


def tiny_clip_config(
    tokenizer: CLIPTokenizer,
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
    projection_dim: int,
) -> CLIPConfig:
    """Build a :class:`~transformers.CLIPConfig` wired to ``tokenizer``'s special ids.

    The text tower pools the hidden state at the first ``eos_token_id``; left at
    its default it would point at the wrong token of a custom vocabulary and
    pooling would go silently wrong, so the ``eos``/``bos``/``pad`` ids are copied
    from the tokenizer and the vocabulary size from its length. MLPs are
    ``4 * hidden_size`` wide, as in CLIP.

    Args:
        tokenizer: The tokenizer the model will be used with.
        image_size: Side of the square model input in pixels.
        patch_size: Side of a square patch in pixels.
        vision_hidden_size: Width of the vision transformer.
        vision_layers: Depth of the vision transformer.
        vision_heads: Attention heads per vision layer.
        text_hidden_size: Width of the text transformer.
        text_layers: Depth of the text transformer.
        text_heads: Attention heads per text layer.
        context_length: Text context in tokens (``max_position_embeddings``).
        projection_dim: Dimension of the joint embedding space.
    """
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden_size,
        intermediate_size=4 * text_hidden_size,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        max_position_embeddings=context_length,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision_config = CLIPVisionConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=vision_hidden_size,
        intermediate_size=4 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads,
        projection_dim=projection_dim,
    )
    return CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=projection_dim,
    )


def _byte_level_symbols(word: str) -> list[str]:
    """Split ``word`` into byte-level characters, the last one marked end-of-word."""
    table = bytes_to_unicode()
    symbols = [table[byte] for byte in word.encode("utf-8")]
    symbols[-1] += _END_OF_WORD
    return symbols


def _bpe(symbols: Sequence[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply ranked merges to ``symbols`` the way BPE does: lowest rank first."""
    pieces = list(symbols)
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(pairwise(pieces))]
        rank, index = min(pairs)
        if rank == len(ranks):
            break
        pieces[index : index + 2] = [pieces[index] + pieces[index + 1]]
    return pieces


def write_tutorial_collection(
    client: QdrantClient, name: str, encoder: ClipEncoder, captions: dict[str, str]
) -> None:
    """A collection as Qdrant's multimodal tutorial writes it, for tests of foreign layouts:
    one point per ``{image path: caption}`` pair with vectors ``image`` and ``text`` and
    payload ``image``/``caption``, embedded by ``encoder``, no qdrant-xai keys."""
    from qdrant_client import models

    params = models.VectorParams(size=encoder.dim, distance=models.Distance.COSINE)
    client.create_collection(name, vectors_config={"image": params, "text": params})
    paths = list(captions)
    images = encoder.embed_images([Path(p) for p in paths])
    texts = encoder.embed_texts(list(captions.values()))
    client.upsert(
        name,
        points=[
            models.PointStruct(
                id=i,
                vector={"image": images[i].tolist(), "text": texts[i].tolist()},
                payload={"image": p, "caption": captions[p]},
            )
            for i, p in enumerate(paths)
        ],
    )


from qdrant_xai.testing.siglip import build_siglip_tokenizer, build_tiny_siglip  # noqa: E402
