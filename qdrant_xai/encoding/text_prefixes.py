"""The embedding of every word prefix of a text, and of the text with each word knocked
out, in one forward pass of the text tower.

CLIP's text tower is causal and pools its end-of-text token (EOS): the embedding of
``"[bos] w1 … wj [eos]"`` depends only on those tokens. So the embeddings of all the
prefixes of a text (``j = 0`` words, the empty text ``"[bos][eos]"``, up to all ``n``
words) come out of ONE forward pass: after the text's own tokens, one extra EOS token
per prefix is appended. Extra EOS ``j`` attends to the tokens of prefix ``j`` and to
itself, and sits at the position the EOS of that prefix would have (its length); the
text's own tokens keep the causal mask and never see the extra tokens. As the tower is
causal, the keys and values of the text's tokens are exactly those of the plain forward
of the text, and so of each prefix's plain forward: extra EOS ``j`` *is* the EOS of the
prefix text, up to float rounding (the tests compare with ``get_text_features`` of the
prefix string).

Prefix ``j`` ends where word ``j + 1`` begins: a token that lies in no word (punctuation)
belongs to the prefix of the word before it (before the first word: to the first
word's prefix), and the last prefix is the whole text that reaches the model (every
token up to its EOS). Words cut off by the model's context length are not returned.

The same pass knocks each word out (attention knockout, Geva et al., EMNLP 2023,
https://arxiv.org/abs/2304.14767): one more extra EOS per word reads every token of the
text but those of the word, at the position the text's EOS would have without it. Later
tokens still read the word (their states are the plain forward's), so this is not the
text without the word, except for the last word, where it is exactly the previous prefix.

Cost: the text's ``T`` tokens plus ``2 n + 1`` extra ones per text in one forward; the
attention pattern is a 4-D additive mask, so both eager and SDPA attention run it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from qdrant_xai.encoding.towers import eos_positions
from qdrant_xai.encoding.words import Word, split_words, token_word_matrix
from qdrant_xai.errors import UnsupportedMethodError

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = [
    "TextPrefixes",
    "check_causal",
    "prefix_boundaries",
    "prefix_embeddings",
    "remembered_prefixes",
    "run_pooled_pass",
]


@dataclass(frozen=True)
class TextPrefixes:
    """The embeddings of every word prefix of one text.

    Attributes:
        text: the text as given.
        words: its words that reach the model, with character spans.
        embeddings: [n_words + 1, P] L2-normalised; row ``j`` is the embedding of the
            text up to (and with) word ``j`` and the punctuation after it, row 0 the
            empty text, the last row the whole text (when it has a word).
        embedding: [P] L2-normalised embedding of the whole text (the plain embedding).
        knockouts: [n_words, P] L2-normalised; row ``j`` is the whole text's embedding
            when its end-of-text token reads every token but those of word ``j + 1``
            (attention knockout), placed where the end of the text without that word
            would be. For the last word it is exactly the previous prefix.
        truncated: True when words past the model's context length were dropped.
    """

    text: str
    words: tuple[Word, ...]
    embeddings: np.ndarray
    embedding: np.ndarray
    knockouts: np.ndarray
    truncated: bool

    def prefix_text(self, j: int) -> str:
        """The text of prefix ``j`` (``0 ≤ j ≤ n_words``): what its row embeds."""
        if j == 0:
            return ""
        if j >= len(self.words):
            return self.text
        return self.text[: self.words[j].start].rstrip()


def prefix_boundaries(assignment: np.ndarray, eos_index: int) -> list[int]:
    """Where each prefix ends, in tokens.

    Args:
        assignment: [T, n_words] 0/1 token -> word matrix (see
            :func:`~qdrant_xai.encoding.words.token_word_matrix`); only words with at least
            one token are passed.
        eos_index: position of the text's own EOS token.

    Returns:
        ``n_words + 1`` prefix lengths (start token included): ``1`` for the empty text,
        the first token of word ``j + 1`` for prefix ``j``, ``eos_index`` for the whole
        text (a text without words: ``[1, eos_index]``, the empty and the whole text).
    """
    n_words = assignment.shape[1]
    firsts = [int(np.nonzero(assignment[:, w])[0][0]) for w in range(1, n_words)]
    return [1, *firsts, eos_index]


def run_pooled_pass(
    model: Any, input_ids: Tensor, attention_mask: Tensor, reads: Tensor, positions: Tensor
) -> Tensor:
    """Projected (not normalised) embeddings of K extra end-of-text tokens per text, each
    reading only some of the text's tokens, in one forward pass.

    After the text's ``T`` tokens (causal, as in the plain forward: they never see the
    extra tokens), extra token ``k`` (the text's own end-of-text id) attends, at every
    layer, to the tokens ``reads[:, k]`` marks and to itself, at position ``positions[:, k]``.
    Reading a prefix at the prefix's length reproduces the prefix text's embedding.

    Args:
        model: a ``CLIPModel`` (eager or SDPA attention); run as is (no hooks, no lock).
        input_ids: [B, T] tokenised texts (padded); attention_mask: [B, T].
        reads: [B, K] + [T] bool, the text tokens each extra token attends to (a row with
            none attends to itself only; its output means nothing).
        positions: [B, K] position ids of the extra tokens.

    Returns:
        [B, K, P] projected embeddings.
    """
    text = model.text_model
    device = input_ids.device
    batch, length = input_ids.shape
    extra = int(reads.shape[1])
    eos_index = eos_positions(input_ids, text.eos_token_id)
    eos_ids = input_ids[torch.arange(batch, device=device), eos_index]

    keys = torch.arange(length, device=device)
    real = attention_mask.to(device=device, dtype=torch.bool)
    allowed = torch.zeros((batch, length + extra, length + extra), dtype=torch.bool, device=device)
    # the text's tokens: causal, padding keys hidden (a padding query still sees the start)
    allowed[:, :length, :length] = (keys[None, :, None] >= keys[None, None, :]) & real[:, None, :]
    allowed[:, length:, :length] = reads.to(device=device, dtype=torch.bool)
    allowed[:, length:, length:] = torch.eye(extra, dtype=torch.bool, device=device)
    dtype = text.embeddings.token_embedding.weight.dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]  # [B, 1, L, L]

    ids = torch.cat([input_ids, eos_ids[:, None].expand(batch, extra)], dim=1)
    where = torch.cat([keys.expand(batch, length), positions.to(device)], dim=1)
    embeddings = text.embeddings  # its forward checks the length against the positions
    hidden = embeddings.token_embedding(ids) + embeddings.position_embedding(where)
    for layer in text.encoder.layers:
        out = layer(hidden, mask)
        hidden = out[0] if isinstance(out, tuple) else out
    pooled = text.final_layer_norm(hidden[:, length:])
    projected: Tensor = model.text_projection(pooled)
    return projected


def _extra_tokens(
    boundaries: Sequence[Sequence[int]], n_words: Sequence[int], length: int
) -> tuple[Tensor, Tensor]:
    """``reads [B, K, T]`` and ``positions [B, K]`` of the extra tokens of each text: first
    its prefixes (one per boundary), then one knockout per word."""
    counts = [len(b) + n for b, n in zip(boundaries, n_words, strict=True)]
    reads = torch.zeros((len(boundaries), max(counts), length), dtype=torch.bool)
    positions = torch.zeros((len(boundaries), max(counts)), dtype=torch.long)
    for i, (ends, n) in enumerate(zip(boundaries, n_words, strict=True)):
        for k, end in enumerate(ends):  # prefix k: tokens [0, end), at position end
            reads[i, k, :end] = True
            positions[i, k] = end
        eos = ends[-1]
        for j, (start, stop) in enumerate(itertools.pairwise(ends[: n + 1])):
            # the whole text but word j + 1 (tokens [start, stop)), where its end would be
            reads[i, len(ends) + j, :start] = True
            reads[i, len(ends) + j, stop:eos] = True
            positions[i, len(ends) + j] = eos - (stop - start)
    return reads, positions


def remembered_prefixes(encoder: ClipEncoder, text: str) -> TextPrefixes | None:
    """The prefixes of ``text`` if the encoder embedded it as a query with
    ``query_prefixes`` on and still remembers it (same weights), else ``None``."""
    key = (text, encoder._text_weights_version())
    with encoder._queries_lock:
        return encoder._query_prefixes.get(key) if key in encoder._queries else None


def check_causal(encoder: ClipEncoder) -> None:
    """Raise :class:`~qdrant_xai.errors.UnsupportedMethodError` unless the encoder's text
    tower is causal: in a bidirectional one (SigLIP's) every token reads the whole text, so
    no forward pass yields the embedding of a prefix."""
    if not encoder.family.causal_text:
        raise UnsupportedMethodError(
            f"the word method 'prefix' needs a causal text tower, and {encoder.model_id} is a "
            f"{encoder.family.name!r} model whose text tower is bidirectional (every token "
            "reads the whole text, so one forward pass cannot yield each word prefix's "
            "embedding); use word_method 'tokens' (its default), 'occlusion', 'context' or 'ig'"
        )


def prefix_embeddings(encoder: ClipEncoder, texts: Sequence[str]) -> list[TextPrefixes]:
    """The embeddings of every word prefix of each text and of each word's knockout (see
    module doc), in forward passes of at most ``encoder.text_batch_size`` texts; a text the
    encoder remembers as a query (see ``ClipEncoder.query_prefixes``) is not recomputed.

    Raises:
        UnsupportedMethodError: the text tower is not causal (SigLIP; :func:`check_causal`).
    """
    check_causal(encoder)
    found: dict[str, TextPrefixes] = {}
    for text in dict.fromkeys(texts):
        if (known := remembered_prefixes(encoder, text)) is not None:
            found[text] = known
    missing = [t for t in dict.fromkeys(texts) if t not in found]
    found.update(zip(missing, _compute(encoder, missing), strict=True))
    return [found[t] for t in texts]


@torch.inference_mode()
def _compute(encoder: ClipEncoder, texts: Sequence[str]) -> list[TextPrefixes]:
    # the SDPA twin has no hooks, so it needs no lock; an eager-only model does
    model = encoder._embedder
    lock = encoder.forward_lock if model is encoder.model else nullcontext()
    results: list[TextPrefixes] = []
    for start in range(0, len(texts), encoder.text_batch_size):
        chunk = list(texts[start : start + encoder.text_batch_size])
        tokens = encoder._tokenize(chunk, offsets=True)
        input_ids = tokens["input_ids"].to(encoder.device)
        eos_index = eos_positions(input_ids, model.text_model.eos_token_id).tolist()
        kept_words, bounds, truncated = [], [], []
        for i, text in enumerate(chunk):
            words = split_words(text)
            offsets = [tuple(pair) for pair in tokens["offset_mapping"][i].tolist()]
            matrix = token_word_matrix(offsets, words)
            kept = np.asarray(matrix.any(axis=0))
            kept_words.append(tuple(w for w, k in zip(words, kept.tolist(), strict=True) if k))
            bounds.append(prefix_boundaries(matrix[:, kept], int(eos_index[i])))
            truncated.append(bool(not kept.all()))
        n_words = [len(w) for w in kept_words]
        reads, positions = _extra_tokens(bounds, n_words, int(input_ids.shape[1]))
        with lock:
            projected = run_pooled_pass(
                model,
                input_ids,
                tokens["attention_mask"].to(encoder.device),
                reads.to(encoder.device),
                positions.to(encoder.device),
            )
        normed = projected / projected.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        array = normed.detach().to(device="cpu", dtype=torch.float32).numpy()
        for i, text in enumerate(chunk):
            n, ends = n_words[i], len(bounds[i])
            results.append(
                TextPrefixes(
                    text=text,
                    words=kept_words[i],
                    embeddings=array[i, : n + 1].copy(),
                    embedding=array[i, ends - 1].copy(),
                    knockouts=array[i, ends : ends + n].copy(),
                    truncated=truncated[i],
                )
            )
    return results
