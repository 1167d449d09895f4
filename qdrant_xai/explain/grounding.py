"""Word-to-region grounding: one map over the image grid per content word of the text.

The explainable-retrieval framework this library follows explains images and words
separately and names the missing link between them as its main open limitation. Here the
link comes from the decomposition of the image embedding (Gandelsman et al., ICLR 2024,
https://arxiv.org/abs/2310.05916): the heatmap of a text ``t`` over an image is
``h(t)_i = C_i · t``. Removing word ``w`` changes the text embedding to ``t∖w``, so

    G_w[i] = C_i · t − C_i · t∖w = C_i · (t − t∖w)

is how much patch ``i`` loses when the word is gone: where in the image the word was
found. Summed over patches it is the word's leave-one-out attribution restricted to the
direct path, so grounding and word scores tell one story. Cost: the text variants of the
word-occlusion pass (one batched forward per distinct text), then one matrix product per
image; no image read and no forward pass of the image.

Function words ("a", "the", "of", ...) are left out; pass ``content_only=False`` to keep
every word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from qdrant_xai.explain.base import unique_texts
from qdrant_xai.explain.occlusion import WordOcclusion
from qdrant_xai.words import Word

if TYPE_CHECKING:
    from qdrant_xai.encoder import ClipEncoder

__all__ = ["STOPWORDS", "Grounding", "ground"]

#: function words that get no grounding map (English; extend it for other languages)
_FUNCTION_WORDS = """
a an the and or but of in on at to for from by with without into onto over under above
below near next beside between behind across through up down out off this that these those
it its is are was were be been being has have had do does did there here as than then so
very some any each every all both either neither no not nor one two his her their our your
my me him them us we you they he she i who whom which what while where when why how can
could would should may might will shall
"""
STOPWORDS = frozenset(_FUNCTION_WORDS.split())


@dataclass(frozen=True)
class Grounding:
    """Where each content word of a text is found in an image.

    Attributes:
        words: the grounded words, in reading order.
        maps: [n_words, gh, gw] float32; ``maps[k]`` is how much each patch's share of the
            similarity drops when ``words[k]`` is removed (positive: the word is found
            there).
    """

    words: tuple[Word, ...]
    maps: np.ndarray

    def map_of(self, word: str) -> np.ndarray:
        """The map of the first grounded word equal to ``word`` (case-insensitive)."""
        for w, m in zip(self.words, self.maps, strict=True):
            if w.text.lower() == word.lower():
                return m
        raise KeyError(f"{word!r} is not among the grounded words {[w.text for w in self.words]}")

    def peaks(self) -> dict[str, tuple[int, int]]:
        """``word -> (row, col)`` of each map's maximum."""
        out: dict[str, tuple[int, int]] = {}
        for w, m in zip(self.words, self.maps, strict=True):
            row, col = np.unravel_index(int(np.argmax(m)), m.shape)
            out.setdefault(w.text, (int(row), int(col)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "words": [[w.text, w.start, w.end] for w in self.words],
            "maps": np.round(self.maps, 6).tolist(),
        }


def ground(
    encoder: ClipEncoder,
    texts: Sequence[str],
    contributions: np.ndarray,
    *,
    content_only: bool = True,
    occlusion: WordOcclusion | None = None,
) -> list[Grounding]:
    """Grounding of ``texts[k]`` over the image with patch contributions ``contributions[k]``.

    Args:
        encoder: the CLIP encoder.
        texts: N texts (repeats are encoded once).
        contributions: [N, gh, gw, P] the direct patch contributions of each text's image.
        content_only: skip function words (:data:`STOPWORDS`).
        occlusion: the word-occlusion method whose text variants are reused.
    """
    occlusion = occlusion or WordOcclusion()
    distinct, index = unique_texts(texts)
    variants = occlusion.variant_embeddings(encoder, distinct)
    results = []
    for k, image in zip(index, np.asarray(contributions, dtype=np.float32), strict=True):
        words, embeds = variants[k]
        keep = [
            j for j, w in enumerate(words) if not content_only or w.text.lower() not in STOPWORDS
        ]
        deltas = embeds[0][None, :] - embeds[1:][keep]  # [n_keep, P]
        maps = np.einsum("hwp,kp->khw", image, deltas).astype(np.float32)
        results.append(Grounding(words=tuple(words[j] for j in keep), maps=maps))
    return results
