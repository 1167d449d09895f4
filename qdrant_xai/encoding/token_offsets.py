"""Character offsets for tokenizers that give none (SigLIP's SentencePiece tokenizer).

Word attributions need each token's character span (:func:`.words.token_word_matrix`).
``tokenizers``-backed ("fast") tokenizers return it with ``return_offsets_mapping=True``;
SigLIP v1's hub tokenizer is a ``SiglipTokenizer`` over a SentencePiece ``spiece.model``,
which in transformers 5 has no fast twin (no converter: its text canonicalisation, lower
case and punctuation removed, is Python code) and silently returns no offsets. Its token
ids stay the ones the model was trained with; the spans are recovered here by aligning
each token's piece, in order, with the text it came from.

The alignment reads the text as the tokenizer's normalisation leaves it: each character
NFKC-normalised and lower-cased, so ``"Ｒed"`` and ``"red"`` match the piece ``"▁red"``.
Characters a tokenizer removed (SigLIP drops punctuation) are skipped over; a piece that
cannot be found (an ``<unk>``, a byte piece) gets an empty span and belongs to no word.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

__all__ = ["align_pieces", "needs_offsets", "offsets_mapping"]

_SPACE = "▁"  # SentencePiece's word-start mark


def needs_offsets(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` gives no ``offset_mapping`` of its own (not a fast one)."""
    return not bool(getattr(tokenizer, "is_fast", False))


def _normalised(text: str) -> tuple[str, list[int]]:
    """``text`` NFKC-normalised and lower-cased character by character, and for each
    character of the result the index of the original character it came from."""
    chars: list[str] = []
    origin: list[int] = []
    for i, char in enumerate(text):
        for out in unicodedata.normalize("NFKC", char).lower():
            chars.append(out)
            origin.append(i)
    return "".join(chars), origin


def align_pieces(text: str, pieces: Sequence[str | None]) -> list[tuple[int, int]]:
    """[T] character span in ``text`` of each piece, aligned in order.

    Args:
        text: the text as given to the tokenizer.
        pieces: the tokens' pieces (``"▁red"``, ``"d"``); ``None`` for special and padding
            tokens, which get ``(0, 0)``.

    Returns:
        ``(start, end)`` per piece; a piece's span starts at its first character (the
        ``▁`` stands for a space and is not matched); unmatched pieces get ``(0, 0)``.
    """
    flat, origin = _normalised(text)
    cursor = 0
    spans: list[tuple[int, int]] = []
    for piece in pieces:
        body = "" if piece is None else unicodedata.normalize("NFKC", piece.replace(_SPACE, ""))
        body = body.lower()
        found = flat.find(body, cursor) if body else -1
        if found < 0:
            spans.append((0, 0))
            continue
        end = found + len(body)
        spans.append((origin[found], origin[end - 1] + 1))
        cursor = end
    return spans


def offsets_mapping(
    tokenizer: Any, texts: Sequence[str], input_ids: Any
) -> list[list[tuple[int, int]]]:
    """[B][T] ``(start, end)`` of every token of a tokenized batch, as a fast tokenizer's
    ``offset_mapping`` gives them (special and padding tokens ``(0, 0)``).

    Args:
        tokenizer: the tokenizer that produced ``input_ids``.
        texts: the B texts tokenized.
        input_ids: [B, T] their token ids (a tensor or nested lists).
    """
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    rows = input_ids.tolist() if hasattr(input_ids, "tolist") else list(input_ids)
    result = []
    for text, ids in zip(texts, rows, strict=True):
        tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
        pieces = [None if i in special else t for i, t in zip(ids, tokens, strict=True)]
        result.append(align_pieces(text, pieces))
    return result
