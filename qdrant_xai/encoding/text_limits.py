"""How long one text may be: a bound on the work (and memory) a single query or caption costs.

CLIP reads at most its context (77 tokens for most checkpoints); everything past it is cut
off before the model, and the word methods leave those words out. What is bounded here is
the work *around* the model: tokenizing, splitting into words, storing a caption in a
payload, echoing a query back. A text over a limit raises
:class:`~qdrant_xai.errors.InputTooLargeError`, which names the limit and how to raise it.
"""

from __future__ import annotations

from dataclasses import dataclass

from qdrant_xai.encoding.words import split_words
from qdrant_xai.errors import InputTooLargeError

__all__ = ["TextLimits"]


@dataclass(frozen=True)
class TextLimits:
    """Bounds on one text (a query, a caption, a hit's text).

    Attributes:
        max_chars: longest text accepted, in characters (100,000: a long document chunk
            passes, a megabyte pasted by mistake does not).
        max_words: most words accepted (see :func:`~qdrant_xai.encoding.words.split_words`).
    """

    max_chars: int = 100_000
    max_words: int = 20_000

    def check(self, text: str, *, what: str, setting: str = "TextLimits") -> None:
        """Raise :class:`~qdrant_xai.errors.InputTooLargeError` when ``text`` is over a limit.

        Args:
            text: the text to check (never quoted in the message).
            what: names the text, e.g. ``"the query"`` or ``"captions.csv row 12"``.
            setting: how the user sets these limits, e.g. ``"TextLimits"`` or an
                environment variable prefix; the message names ``{setting}.max_chars``.
        """
        if len(text) > self.max_chars:
            raise InputTooLargeError(
                f"{what} has {len(text):,} characters, over the limit of {self.max_chars:,} "
                f"({setting}.max_chars): shorten it (CLIP reads only its first few dozen "
                "words), or raise the limit",
                setting=f"{setting}.max_chars",
                limit=self.max_chars,
                size=len(text),
            )
        words = len(split_words(text)) if len(text) > self.max_words else 0
        if words > self.max_words:
            raise InputTooLargeError(
                f"{what} has {words:,} words, over the limit of {self.max_words:,} "
                f"({setting}.max_words): shorten it (CLIP reads only its first few dozen "
                "words), or raise the limit",
                setting=f"{setting}.max_words",
                limit=self.max_words,
                size=words,
            )
