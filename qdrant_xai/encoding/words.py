"""Words of a caption, and how BPE tokens map onto them.

Attributions are reported per word, with the word's character span in the original text,
never per BPE sub-token: the tokenizer's offsets tie each token to the characters it came
from, and the tokens inside one word's span are merged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Word", "split_words", "text_without", "token_word_matrix"]

_WORD = re.compile(r"\w+(?:['’-]\w+)*")


@dataclass(frozen=True)
class Word:
    """A word of a text and its character span ``text[start:end]``."""

    text: str
    start: int
    end: int

    @property
    def span(self) -> tuple[int, int]:
        return (self.start, self.end)


def split_words(text: str) -> tuple[Word, ...]:
    """The words of ``text`` (letters and digits, with inner apostrophes and hyphens).

    Punctuation and whitespace are not words: they are never attributed.
    """
    return tuple(Word(m.group(), m.start(), m.end()) for m in _WORD.finditer(text))


def token_word_matrix(offsets: Sequence[tuple[int, int]], words: Sequence[Word]) -> np.ndarray:
    """Assignment of tokens to words from the tokenizer's character offsets.

    Args:
        offsets: [T] ``(start, end)`` character span of each token; special and padding
            tokens have an empty span and belong to no word.
        words: the words of the text.

    Returns:
        [T, n_words] float32 matrix with a 1 where token ``t`` overlaps word ``w`` (the
        first such word; a SentencePiece token's span includes the space before its word).
        Words whose tokens were cut off by truncation have an all-zero column.
    """
    matrix = np.zeros((len(offsets), len(words)), dtype=np.float32)
    starts = np.array([w.start for w in words], dtype=np.int64)
    ends = np.array([w.end for w in words], dtype=np.int64)
    for t, (start, end) in enumerate(offsets):
        if end <= start or not len(words):
            continue
        # overlap, not the start: SentencePiece-style tokens ("▁red") span the space before
        hit = np.nonzero((starts < end) & (start < ends))[0]
        if hit.size:
            matrix[t, hit[0]] = 1.0
    return matrix


def text_without(text: str, words: Sequence[Word]) -> str:
    """``text`` with the given words deleted and the whitespace left behind collapsed."""
    pieces, cursor = [], 0
    for word in sorted(words, key=lambda w: w.start):
        pieces.append(text[cursor : word.start])
        cursor = word.end
    pieces.append(text[cursor:])
    return " ".join("".join(pieces).split())
