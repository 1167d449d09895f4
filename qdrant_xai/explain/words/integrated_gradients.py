"""Word attributions by integrated gradients on the text tower's token embeddings.

Sundararajan, Taly, Yan, *Axiomatic Attribution for Deep Networks*, ICML 2017,
https://arxiv.org/abs/1703.01365.

With ``x`` the token embeddings of a caption, ``x'`` a baseline and
``s(x) = cos(text_embedding(x), v)`` the similarity to a target embedding ``v``, token
``j`` receives

    a_j = (x_j − x'_j) · ∫_0^1 ∂s/∂x_j (x' + α (x − x')) dα

and word ``w`` the sum over its BPE tokens, ``a_w = Σ_{j∈w} a_j``. A token that belongs
to no word (punctuation such as ``,`` or ``.``) is folded into the word before it, or into
the first word when none comes before, so the *word* attributions are complete too. By
the fundamental theorem of calculus the token attributions are *complete*:
``Σ_j a_j = s(x) − s(x')``, and so ``Σ_w a_w = s(x) − s(x')`` (unless truncation cut off
tokens, or the text has no word at all). The integral is computed with Gauss-Legendre quadrature on
``[0, 1]``, exact for polynomials of degree ``2 · steps − 1``, so a few dozen points
meet completeness far more tightly than the same number of Riemann steps.

Baseline: the start and end tokens and the padding keep their embeddings (pooling stays
on the real end token, and the sequence keeps its length), every other token's embedding
is replaced by zeros (``baseline="zero"``, the default: the position embedding alone
remains, a "blank" token that is not any word) or by the padding token's embedding
(``baseline="pad"``; in OpenAI's CLIP the pad token *is* the end token, so this baseline
reads as a caption of end tokens and is not recommended there).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from qdrant_xai.encoding.words import Word, split_words, token_word_matrix
from qdrant_xai.explain.base import WordMethod, WordScores, register_word_method, unique_texts

if TYPE_CHECKING:
    from qdrant_xai.encoding.encoder import ClipEncoder

__all__ = ["Completeness", "IntegratedGradients", "fold_unassigned", "gauss_legendre"]

_BASELINES = ("zero", "pad")


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on ``[0, 1]``.

    Returns:
        ``(alphas [steps], weights [steps])`` with ``Σ weights = 1``.
    """
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1.0) / 2.0, weights / 2.0


def fold_unassigned(assignment: np.ndarray, replaced: np.ndarray) -> np.ndarray:
    """Assigns every replaced token that lies in no word to a neighbouring word.

    Args:
        assignment: [T, n_words] 0/1 token -> word matrix (a row of zeros: no word).
        replaced: [T] bool, the tokens that carry an attribution (not special, not padding).

    Returns:
        [T, n_words] a copy in which each such token joins the word of the nearest word
        token before it, else (punctuation before the first word) the nearest after it.
        Unchanged when there is no word.
    """
    folded = np.array(assignment, dtype=np.float32, copy=True)
    if folded.shape[1] == 0:
        return folded
    owner = np.where(folded.any(axis=1), folded.argmax(axis=1), -1)
    in_word = np.nonzero(owner >= 0)[0]
    if in_word.size == 0:
        return folded
    for token in np.nonzero(np.asarray(replaced, dtype=bool) & (owner < 0))[0]:
        before = in_word[in_word < token]
        source = before[-1] if before.size else in_word[in_word > token][0]
        folded[token, owner[source]] = 1.0
    return folded


@dataclass(frozen=True)
class Completeness:
    """How well the attributions of N pairs add up.

    Returned by :meth:`IntegratedGradients.attribute_with_check`.

    Attributes:
        input_scores: [N] ``s(x)``, the cosine similarity of the caption and the target.
        baseline_scores: [N] ``s(x')``, the same with the baseline token embeddings.
        token_totals: [N] sum of the attributions of all replaced tokens (punctuation
            included); equals ``input_scores − baseline_scores`` up to quadrature error.
        word_totals: [N] sum of the word attributions; equals ``token_totals`` (punctuation
            is folded into a neighbouring word) unless the text has no word at all.
    """

    input_scores: np.ndarray
    baseline_scores: np.ndarray
    token_totals: np.ndarray
    word_totals: np.ndarray

    @property
    def delta(self) -> np.ndarray:
        """[N] ``s(x) − s(x')``, what the attributions should add up to."""
        return self.input_scores - self.baseline_scores

    @property
    def gap(self) -> np.ndarray:
        """[N] ``Σ_words a_w − (s(x) − s(x'))``: the quadrature error (plus the whole
        delta for a text without words)."""
        return self.word_totals - self.delta


@dataclass
class _Batch:
    """The distinct texts of a call, tokenised once."""

    input_ids: Tensor  # [U, T]
    attention_mask: Tensor | None  # [U, T]; None: the tokenizer gives none (hub SigLIP)
    inputs: Tensor  # [U, T, D] token embeddings x
    baselines: Tensor  # [U, T, D] baseline embeddings x'
    words: list[tuple[Word, ...]]  # the words that kept at least one token
    assignment: list[np.ndarray]  # per text: [T, n_kept] token -> word
    replaced: Tensor  # [U, T] bool: tokens the baseline replaces


@register_word_method
class IntegratedGradients(WordMethod):
    """Integrated gradients of ``cos(text, target)`` on token embeddings (see module doc).

    Runs the text tower forward and backward ``steps`` times per distinct (text, target)
    pair, all pairs and steps batched together (chunks of ``max_batch`` rows). Scores
    are signed and add up to ``s(x) − s(x')``: the similarity gained over a caption whose
    words are blanked. A punctuation token's share is added to the word before it (the
    first word when none comes before), so the word scores add up too
    (:meth:`attribute_with_check` reports the totals). Words cut off by the model's
    context length are not returned.

    Where it is unreliable: the scores explain the gain over the blank caption, which is
    far off the training distribution, so they depend on that baseline choice; words
    interact along the path (a colour word's effect depends on its noun), and the split
    of a joint effect between them follows the straight-line path, not a causal story;
    too few ``steps`` leave a quadrature error (check :attr:`Completeness.gap` with
    :meth:`attribute_with_check`). Memory grows with ``max_batch`` × tokens, as every
    row keeps its activations for the backward pass.

    Args:
        steps: quadrature points on the path (Gauss-Legendre).
        baseline: ``"zero"`` (replaced tokens get a zero embedding) or ``"pad"`` (the
            padding token's embedding).
        max_batch: rows (pair × step) per forward/backward pass.
    """

    name = "ig"
    cost = "steps forward+backward per distinct (text, target) pair, batched"

    def __init__(self, *, steps: int = 24, baseline: str = "zero", max_batch: int = 64) -> None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if baseline not in _BASELINES:
            raise ValueError(f"baseline must be one of {_BASELINES}, got {baseline!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.steps = steps
        self.baseline = baseline
        self.max_batch = max_batch

    def __repr__(self) -> str:
        return f"IntegratedGradients(steps={self.steps}, baseline={self.baseline!r})"

    def attribute(
        self,
        encoder: ClipEncoder,
        texts: Sequence[str],
        targets: np.ndarray,
        *,
        stored: Sequence[np.ndarray | None] | None = None,
    ) -> list[WordScores]:
        return self._run(encoder, texts, targets, check=False)[0]

    def attribute_with_check(
        self, encoder: ClipEncoder, texts: Sequence[str], targets: np.ndarray
    ) -> tuple[list[WordScores], Completeness]:
        """:meth:`attribute`, plus ``s(x)``, ``s(x')`` and the totals of every pair.

        Costs one more forward pass (no gradient) over the distinct texts.
        """
        results, check = self._run(encoder, texts, targets, check=True)
        assert check is not None
        return results, check

    # -- internals ----------------------------------------------------------------------

    def _run(
        self, encoder: ClipEncoder, texts: Sequence[str], targets: np.ndarray, *, check: bool
    ) -> tuple[list[WordScores], Completeness | None]:
        if not texts:
            empty = np.zeros(0, dtype=np.float32)
            return [], Completeness(empty, empty, empty, empty) if check else None
        targets = np.asarray(targets, dtype=np.float32).reshape(len(texts), -1)
        distinct, text_index = unique_texts(texts)
        pair_keys, pair_index = unique_texts(
            [f"{k}:{t.tobytes().hex()}" for k, t in zip(text_index, targets, strict=True)]
        )
        pair_text = np.zeros(len(pair_keys), dtype=np.int64)
        pair_target = np.zeros((len(pair_keys), targets.shape[1]), dtype=np.float32)
        for row, pair in enumerate(pair_index):
            pair_text[pair] = text_index[row]
            pair_target[pair] = targets[row]

        batch = self._prepare(encoder, distinct)
        token_scores = self._token_attributions(encoder, batch, pair_text, pair_target)  # [Q, T]

        word_scores = [
            batch.assignment[pair_text[q]].T @ token_scores[q] for q in range(len(pair_keys))
        ]
        results: list[WordScores] = [
            (batch.words[text_index[row]], word_scores[pair].astype(np.float32))
            for row, pair in enumerate(pair_index)
        ]
        if not check:
            return results, None
        ends = self._scores_at(encoder, batch, pair_text, pair_target)  # [Q, 2]
        replaced = batch.replaced.cpu().numpy()[pair_text]
        completeness = Completeness(
            input_scores=ends[pair_index, 1],
            baseline_scores=ends[pair_index, 0],
            token_totals=(token_scores * replaced).sum(axis=1)[pair_index].astype(np.float32),
            word_totals=np.array([word_scores[p].sum() for p in pair_index], dtype=np.float32),
        )
        return results, completeness

    @torch.no_grad()
    def _prepare(self, encoder: ClipEncoder, texts: Sequence[str]) -> _Batch:
        tokens = encoder._tokenize(texts, offsets=True)
        input_ids = tokens["input_ids"].to(encoder.device)
        mask = tokens.get("attention_mask")  # hub SigLIP tokenizers return input_ids only
        attention_mask = None if mask is None else mask.to(encoder.device)
        offsets = tokens["offset_mapping"]
        # special and padding tokens have an empty character span; all others are replaced
        replaced = (offsets[..., 1] > offsets[..., 0]).to(encoder.device)
        embedding = _token_embedding(encoder)
        with encoder.forward_lock:  # another call's hook may be replacing its output
            inputs = embedding(input_ids)
            if self.baseline == "zero":
                fill = torch.zeros_like(inputs)
            else:
                pad_id = encoder.processor.tokenizer.pad_token_id
                fill = embedding(torch.full_like(input_ids, int(pad_id)))
        baselines = torch.where(replaced[..., None], fill, inputs)
        words, assignment = [], []
        for i, text in enumerate(texts):
            all_words = split_words(text)
            matrix = token_word_matrix([tuple(p) for p in offsets[i].tolist()], all_words)
            kept: np.ndarray = np.asarray(matrix.any(axis=0))
            words.append(tuple(w for w, keep in zip(all_words, kept.tolist(), strict=True) if keep))
            assignment.append(fold_unassigned(matrix[:, kept], replaced[i].cpu().numpy()))
        return _Batch(input_ids, attention_mask, inputs, baselines, words, assignment, replaced)

    def _token_attributions(
        self, encoder: ClipEncoder, batch: _Batch, pair_text: np.ndarray, pair_target: np.ndarray
    ) -> np.ndarray:
        """[Q, T] token attributions of Q (text, target) pairs."""
        alphas, weights = gauss_legendre(self.steps)
        n_pairs = len(pair_text)
        rows_pair = np.repeat(np.arange(n_pairs), self.steps)  # [Q * steps]
        rows_alpha = np.tile(alphas, n_pairs)
        rows_weight = np.tile(weights, n_pairs)
        shape = (n_pairs, *batch.inputs.shape[1:])
        integrated = torch.zeros(shape, dtype=torch.float32, device=encoder.device)
        targets = torch.as_tensor(pair_target, device=encoder.device)
        for start in range(0, len(rows_pair), self.max_batch):
            chunk = slice(start, start + self.max_batch)
            pairs = torch.as_tensor(rows_pair[chunk], device=encoder.device)
            texts = torch.as_tensor(pair_text[rows_pair[chunk]], device=encoder.device)
            alpha = torch.as_tensor(rows_alpha[chunk], dtype=batch.inputs.dtype)
            alpha = alpha.to(encoder.device)[:, None, None]
            with torch.enable_grad():
                base = batch.baselines[texts]
                path = (base + alpha * (batch.inputs[texts] - base)).requires_grad_(True)
                scores = self._cosines(encoder, batch, texts, path, targets[pairs])
                (grads,) = torch.autograd.grad(scores.sum(), path)
            weight = torch.as_tensor(rows_weight[chunk], dtype=torch.float32)
            weighted = grads.float() * weight.to(encoder.device)[:, None, None]
            integrated.index_add_(0, pairs, weighted)
        index = torch.as_tensor(pair_text, device=encoder.device)
        difference = (batch.inputs[index] - batch.baselines[index]).float()
        return (difference * integrated).sum(dim=-1).cpu().numpy()

    @torch.no_grad()
    def _scores_at(
        self, encoder: ClipEncoder, batch: _Batch, pair_text: np.ndarray, pair_target: np.ndarray
    ) -> np.ndarray:
        """[Q, 2] ``(s(x'), s(x))`` of every pair."""
        index = torch.as_tensor(pair_text, device=encoder.device)
        targets = torch.as_tensor(pair_target, device=encoder.device)
        out = []
        for embeds in (batch.baselines, batch.inputs):
            scores = [
                self._cosines(
                    encoder,
                    batch,
                    index[i : i + self.max_batch],
                    embeds[index[i : i + self.max_batch]],
                    targets[i : i + self.max_batch],
                )
                for i in range(0, len(pair_text), self.max_batch)
            ]
            out.append(torch.cat(scores).float().cpu().numpy())
        return np.stack(out, axis=1)

    @staticmethod
    def _cosines(
        encoder: ClipEncoder, batch: _Batch, texts: Tensor, embeds: Tensor, targets: Tensor
    ) -> Tensor:
        """[B] ``cos(text_embedding, target)`` with the token embeddings replaced by ``embeds``.

        The real ``input_ids`` go in, so pooling finds the end token as usual; a hook
        swaps the token-embedding output for ``embeds`` [B, T, D] (under the encoder's
        forward lock: the hook would fire on every thread's forward of the model).
        """
        text_model = encoder.model.text_model
        with encoder.forward_lock, _replaced_output(_token_embedding(encoder), embeds):
            mask = None if batch.attention_mask is None else batch.attention_mask[texts]
            out = text_model(input_ids=batch.input_ids[texts], attention_mask=mask)
        projected = encoder.family.project_text(encoder.model, out.pooler_output).float()
        return torch.nn.functional.cosine_similarity(projected, targets.float(), dim=-1)


def _token_embedding(encoder: ClipEncoder) -> nn.Module:
    module: nn.Module = encoder.model.text_model.embeddings.token_embedding
    return module


@contextmanager
def _replaced_output(module: nn.Module, value: Tensor) -> Iterator[None]:
    """While active, ``module``'s forward returns ``value``."""

    def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
        if output.shape != value.shape:  # pragma: no cover - the caller passes matching ids
            raise RuntimeError(f"token embeddings {tuple(output.shape)} != {tuple(value.shape)}")
        return value

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
