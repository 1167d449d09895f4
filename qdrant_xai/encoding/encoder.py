"""CLIP and SigLIP encoding: one forward pass per batch yields embeddings and explainable
features (what differs per model family: :mod:`qdrant_xai.encoding.families`).

For images: the normalised embedding and the direct per-patch contributions in the joint
space (a ``gh x gw x P`` grid, 7x7x512 for ViT-B/32), see :mod:`qdrant_xai.encoding.towers`.
For texts: the normalised embedding, the caption's words with character spans, and the
direct per-word contributions (BPE sub-tokens merged per word).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from qdrant_xai.encoding.checkpoints import (
    DEFAULT_MODEL,
    check_device,
    checkpoint_path,
    missing_dependency,
)
from qdrant_xai.encoding.families import ModelFamily, family_of, sdpa_twin
from qdrant_xai.encoding.fingerprint import ModelFingerprint
from qdrant_xai.encoding.text_prefixes import TextPrefixes, prefix_embeddings
from qdrant_xai.encoding.token_offsets import needs_offsets, offsets_mapping
from qdrant_xai.encoding.words import Word, split_words, token_word_matrix
from qdrant_xai.errors import ModelLoadError
from qdrant_xai.images.load import LoadedImage, load_image

__all__ = ["ClipEncoder", "ImageFeatures", "TextFeatures"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

ImageInput = str | os.PathLike[str] | bytes | LoadedImage | Any  # Any: a PIL image

#: single-text embeddings remembered per encoder (a search and its explanation share them)
QUERY_CACHE_SIZE = 256
#: texts per forward pass of the text tower: a caption batch of any size is chunked
TEXT_BATCH_SIZE = 256


@dataclass(frozen=True)
class ImageFeatures:
    """Encoding of one image.

    Attributes:
        embedding: [P] L2-normalised image embedding.
        contributions: [gh, gw, P] direct patch contributions; ``contributions @ t`` is the
            heatmap of ``cos(image, t)`` for a normalised query ``t``.
        patch_tokens: [gh, gw, P] raw patch tokens (after ``post_layernorm`` and the
            projection; SigLIP: the pooling head applied to each token alone), only when
            requested.
        last_layer_inputs: [1 + gh*gw, D] the residual stream entering the last vision
            layer (the ``full`` feature profile; ``[gh*gw, D]`` for SigLIP, which has no
            class token), only when requested.
    """

    embedding: np.ndarray
    contributions: np.ndarray
    patch_tokens: np.ndarray | None = None
    last_layer_inputs: np.ndarray | None = None


@dataclass(frozen=True)
class TextFeatures:
    """Encoding of one text.

    Attributes:
        text: the text as given.
        embedding: [P] L2-normalised text embedding.
        words: the words that fit in the model's context, with character spans.
        word_contributions: [n_words, P] direct contribution of each word's tokens to the
            normalised embedding (at the pooled token: CLIP's end-of-text token, SigLIP's
            last position).
        truncated: True when words past the model's context length were dropped.
    """

    text: str
    embedding: np.ndarray
    words: tuple[Word, ...]
    word_contributions: np.ndarray
    truncated: bool


class ClipEncoder:
    """A Hugging Face CLIP or SigLIP model and its processor, yielding explainable features
    (:attr:`family` from ``config.model_type``). Scores are cosines, also for SigLIP (its
    sigmoid logit ``exp(logit_scale) · cos + logit_bias`` is monotone in the cosine).

    Setup::

        from qdrant_xai import ClipEncoder
        encoder = ClipEncoder.from_pretrained("openai/clip-vit-base-patch32")

    Thread-safe: one encoder can serve concurrent explanations. Forwards that read
    intermediate state (hooks on the layers, gradients) are serialised by
    :attr:`forward_lock`; plain embedding forwards run concurrently.

    Use::

        images = encoder.encode_images(["cat.jpg"])     # embeddings + 7x7x512 contributions
        texts = encoder.encode_texts(["a cat on a mat"])  # embeddings + per-word features
        queries = encoder.embed_texts(["a cat"])          # [1, 512] normalised
    """

    def __init__(self, model: Any, processor: Any, *, model_id: str) -> None:
        #: what differs between CLIP and SigLIP (towers, padding, causal text)
        self.family: ModelFamily = family_of(model.config.model_type, model_id=model_id)
        if getattr(model.config, "_attn_implementation", "eager") != "eager":
            model.set_attn_implementation("eager")
        self.model = model.eval()
        #: the same weights with SDPA attention, for the paths that need no attention weights
        self._embedder = sdpa_twin(self.model)
        self._text_parameters = self.family.text_parameters(model)
        self._queries: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._query_prefixes: dict[tuple[str, int], TextPrefixes] = {}
        self._queries_lock = threading.Lock()
        #: single texts (queries) are embedded with their word prefixes, remembered for the
        #: ``prefix`` word method (on from its first use; see :mod:`.text_prefixes`)
        self.query_prefixes = False
        #: held around every forward of :attr:`model` (the eager model): feature paths
        #: hook its layers and gradient methods run it with autograd, and a hook fires on
        #: every thread's forward, so these forwards run one at a time (re-entrant). The
        #: plain embedding paths (:meth:`embed_texts`, :meth:`embed_images`,
        #: :meth:`embed_pixels`) run the hook-free SDPA twin and never take it.
        self.forward_lock = threading.RLock()
        #: texts per forward pass of the text tower (longer lists are chunked)
        self.text_batch_size = TEXT_BATCH_SIZE
        self.processor = processor
        self.model_id = model_id
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        vision = model.config.vision_config
        crop = getattr(processor.image_processor, "crop_size", None) or {}
        size = (
            int(crop.get("height", vision.image_size)),
            int(crop.get("width", vision.image_size)),
        )
        self.image_size: tuple[int, int] = size
        self.grid: tuple[int, int] = (size[0] // vision.patch_size, size[1] // vision.patch_size)
        self.dim: int = self.family.dim(model)
        #: width of the vision tower's residual stream (last-layer inputs are [N, D])
        self.vision_width: int = int(vision.hidden_size)
        #: tokens ``N`` of that stream: ``1 + gh*gw`` with a class token (CLIP), else ``gh*gw``
        self.vision_tokens: int = self.family.vision_tokens(self.grid)
        self.max_text_tokens: int = int(model.config.text_config.max_position_embeddings)
        self._fingerprint: ModelFingerprint | None = None
        self._fingerprint_lock = threading.Lock()

    @property
    def fingerprint(self) -> ModelFingerprint:
        """Which model this is, for stored points: a hash of all its weights (see
        :mod:`qdrant_xai.encoding.fingerprint`), computed on first use (about 0.5 s for
        ViT-B/32 on two CPU cores) and then kept; weights changed in place later are not
        seen."""
        with self._fingerprint_lock:
            if self._fingerprint is None:
                self._fingerprint = ModelFingerprint.of_model(
                    self.model,
                    model_id=self.model_id,
                    image_size=self.image_size,
                    grid=self.grid,
                    dim=self.dim,
                    family=self.family.name,
                )
            return self._fingerprint

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        num_threads: int | None = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
    ) -> ClipEncoder:
        """Loads a CLIP or SigLIP checkpoint by hub id or from a ``save_pretrained``
        directory; the family is read from its ``config.json`` (``model_type`` ``"clip"``
        or ``"siglip"``, anything else raises
        :class:`~qdrant_xai.errors.UnsupportedModelError`).

        Weights load from safetensors only, and remote code never runs.

        Args:
            model_name_or_path: hub id (downloaded on first use), local directory
                holding the model and its processor, or ``"shapes"`` for the small model
                bundled with the package (the demo's; see ``BUNDLED_MODELS``).
            device: torch device, e.g. ``"cpu"`` or ``"cuda:0"``; one this torch cannot use
                raises :class:`~qdrant_xai.errors.DeviceUnavailableError` before any
                weight is read.
            dtype: ``"float32"`` or ``"bfloat16"`` (``"float16"`` on GPUs).
            num_threads: CPU threads for torch; ``None`` keeps torch's default.
            revision: hub revision (branch, tag or commit) to pin.
            local_files_only: never touch the network (defaults to ``HF_HUB_OFFLINE``).
        """
        from transformers import AutoConfig, AutoProcessor

        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        check_device(device)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        model_id = os.fspath(model_name_or_path)
        name = checkpoint_path(model_id)
        looks_local = os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name)
        if looks_local and not os.path.isdir(name):
            raise ModelLoadError(
                f"{name}: no such model directory; pass a folder saved with save_pretrained "
                f"(model and processor) or a hub id such as {DEFAULT_MODEL!r}"
            )
        kwargs: dict[str, Any] = {"revision": revision}
        if local_files_only is not None:
            kwargs["local_files_only"] = local_files_only
        try:
            config = AutoConfig.from_pretrained(name, **kwargs)
            model = (
                family_of(config.model_type, model_id=model_id)
                .model_class()
                .from_pretrained(
                    name,
                    dtype=_DTYPES[dtype],
                    attn_implementation="eager",
                    use_safetensors=True,
                    **kwargs,
                )
            )
            processor = AutoProcessor.from_pretrained(name, **kwargs)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
            missing = missing_dependency(exc, model_id)  # SigLIP's SentencePiece tokenizer
            if missing is not None:
                raise missing from exc
            hint = (
                f"no CLIP checkpoint in {name} (nor a SigLIP one): it needs config.json, "
                "model.safetensors and the processor files (save both with save_pretrained)"
                if os.path.isdir(name)
                else f"could not load {name!r}: pass a Hugging Face hub id such as "
                f"{DEFAULT_MODEL!r} (weights download on first use, so the hub must be "
                "reachable) or a local directory saved with save_pretrained"
            )
            raise ModelLoadError(f"{hint} ({type(exc).__name__}: {exc})") from exc
        model.to(device)
        return cls(model, processor, model_id=model_id)

    # -- geometry ---------------------------------------------------------------------

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The region ``(x0, y0, x1, y1)`` of a ``width x height`` image that the model sees.

        CLIP's processor resizes the short side and centre-crops; the patch grid covers
        only this box, so heatmaps are drawn there.
        """
        proc = self.processor.image_processor
        size = getattr(proc, "size", None) or {}
        scale_x = scale_y = 1.0
        new_w, new_h = float(width), float(height)
        if getattr(proc, "do_resize", True):
            if "shortest_edge" in size:
                scale_x = scale_y = size["shortest_edge"] / min(width, height)
            elif "height" in size and "width" in size:
                scale_x, scale_y = size["width"] / width, size["height"] / height
            new_w, new_h = width * scale_x, height * scale_y
        if getattr(proc, "do_center_crop", False):
            crop_h, crop_w = self.image_size
            x0 = max(0.0, (new_w - crop_w) / 2) / scale_x
            y0 = max(0.0, (new_h - crop_h) / 2) / scale_y
            x1 = x0 + min(crop_w, new_w) / scale_x
            y1 = y0 + min(crop_h, new_h) / scale_y
            return (round(x0), round(y0), round(x1), round(y1))
        return (0, 0, width, height)

    # -- images -------------------------------------------------------------------------

    def pixel_values(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """[B, 3, H, W] model input for ``images`` (resized, centre-cropped, normalised).

        In this space 0 is the dataset mean colour: perturbation methods and the
        deletion/insertion metrics use it as the "removed" value.
        """
        # a photo many times the model's input is first box-reduced by an integer factor to
        # at least twice the input's side (what Pillow's reducing_gap does): the processor's
        # resize of an 8000 px image drops from ~1 s to ~0.06 s, embeddings agree to 1e-5
        side = 2 * max(self.image_size)
        rgb = [_reduced(_as_loaded(image).image, side) for image in images]
        pixels = self.processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        return pixels.to(device=self.device, dtype=self.dtype)

    @torch.inference_mode()
    def encode_images(
        self,
        images: Sequence[ImageInput],
        *,
        patch_tokens: bool = False,
        last_layer: bool = False,
    ) -> list[ImageFeatures]:
        """Embeddings and patch contributions for a batch, in one forward pass.

        Args:
            images: paths, encoded bytes, Pillow images or :class:`LoadedImage`.
            patch_tokens: also return the raw projected patch tokens.
            last_layer: also return the input of the last vision layer (what gradient
                methods need to run later without the image).
        """
        if not images:
            return []
        pixels = self.pixel_values(images)
        with self.forward_lock:
            out = self.family.run_image_tower(self.model, pixels)
        norms = out.embeds.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        embeds = _numpy(out.embeds / norms)
        contributions = _numpy(out.contributions)
        tokens = _numpy(out.patch_tokens) if patch_tokens else None
        entering = _numpy(out.last_layer_inputs) if last_layer else None
        return [
            ImageFeatures(
                embedding=embeds[i],
                contributions=contributions[i],
                patch_tokens=None if tokens is None else tokens[i],
                last_layer_inputs=None if entering is None else entering[i],
            )
            for i in range(len(images))
        ]

    @torch.inference_mode()
    def embed_pixels(self, pixel_values: torch.Tensor, *, batch_size: int = 64) -> np.ndarray:
        """[B, P] normalised embeddings of model-ready pixels (see :meth:`pixel_values`),
        in chunks of ``batch_size``."""
        chunks = []
        for start in range(0, int(pixel_values.shape[0]), batch_size):
            pixels = pixel_values[start : start + batch_size]
            chunks.append(_normalised(self.family.image_embeds(self._embedder, pixels)))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks)

    @torch.inference_mode()
    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """[B, P] L2-normalised image embeddings (no features)."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        pixels = self.pixel_values(images)
        return _normalised(self.family.image_embeds(self._embedder, pixels))

    # -- texts --------------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str], *, offsets: bool) -> Any:
        tokenizer = self.processor.tokenizer
        aligned = offsets and needs_offsets(tokenizer)
        batch = tokenizer(
            list(texts),
            padding=self.family.padding,  # SigLIP: the fixed length it was trained with
            truncation=True,
            max_length=self.max_text_tokens,
            return_offsets_mapping=offsets and not aligned,
            return_tensors="pt",
        )
        if aligned:  # SigLIP's SentencePiece tokenizer gives no offsets: align its pieces
            spans = offsets_mapping(tokenizer, texts, batch["input_ids"])  # [B][T] (start, end)
            batch["offset_mapping"] = torch.tensor(spans, dtype=torch.long)
        return batch

    def words_in_context(self, text: str, words: Sequence[Word] | None = None) -> int:
        """How many leading words of ``text`` reach the model (a token of theirs is inside
        its context of :attr:`max_text_tokens`); the words after them are cut off by
        truncation and change no embedding. Tokenizes at most the first
        ``max_text_tokens`` words (each word is at least one token), whatever the text's
        length."""
        words = split_words(text) if words is None else words
        if not words:
            return 0
        head = words[: self.max_text_tokens]
        batch = self._tokenize([text[: head[-1].end]], offsets=True)
        offsets = [tuple(pair) for pair in batch["offset_mapping"][0].tolist()]
        kept = np.asarray(token_word_matrix(offsets, head).any(axis=0))
        return int(kept.sum())

    def encode_texts(self, texts: Sequence[str]) -> list[TextFeatures]:
        """Embeddings, words and per-word contributions for a batch, in forward passes of
        at most :attr:`text_batch_size` texts (memory stays bounded however many captions
        one batch of images has)."""
        return [
            features
            for start in range(0, len(texts), self.text_batch_size)
            for features in self._encode_texts(texts[start : start + self.text_batch_size])
        ]

    @torch.inference_mode()
    def _encode_texts(self, texts: Sequence[str]) -> list[TextFeatures]:
        if not texts:
            return []
        batch = self._tokenize(texts, offsets=True)
        with self.forward_lock:
            out = self.family.run_text_tower(
                self.model, batch["input_ids"].to(self.device), _mask(batch, self.device)
            )
        norms = out.embeds.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        embeds = _numpy(out.embeds / norms)
        contributions = _numpy(out.contributions)  # [B, T, P]
        results = []
        for i, text in enumerate(texts):
            words = split_words(text)
            offsets = [tuple(pair) for pair in batch["offset_mapping"][i].tolist()]
            assignment = token_word_matrix(offsets, words)  # [T, n_words]
            kept: np.ndarray = np.asarray(assignment.any(axis=0))
            per_word = assignment[:, kept].T @ contributions[i]  # [n_kept, P]
            results.append(
                TextFeatures(
                    text=text,
                    embedding=embeds[i],
                    words=tuple(w for w, keep in zip(words, kept.tolist(), strict=True) if keep),
                    word_contributions=per_word.astype(np.float32),
                    truncated=bool(not kept.all()),
                )
            )
        return results

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[B, P] L2-normalised text embeddings (no features); texts are truncated to fit.

        A single text (a query) is remembered, so that a search and the explanation of its
        hits encode the query once: the last :data:`QUERY_CACHE_SIZE` of them, forgotten
        when the text tower's weights change in place. Batches are always computed.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) != 1:
            return self._embed_texts(texts)
        key = (texts[0], self._text_weights_version())
        with self._queries_lock:
            cached = self._queries.get(key)
            if cached is not None:
                self._queries.move_to_end(key)
                return cached[None].copy()
        prefixes = prefix_embeddings(self, texts)[0] if self.query_prefixes else None
        embeds = self._embed_texts(texts) if prefixes is None else prefixes.embedding[None]
        with self._queries_lock:
            self._queries[key] = embeds[0].copy()
            if prefixes is not None:
                self._query_prefixes[key] = prefixes
            while len(self._queries) > QUERY_CACHE_SIZE:
                self._query_prefixes.pop(self._queries.popitem(last=False)[0], None)
        return embeds.copy()

    @torch.inference_mode()
    def _embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), self.text_batch_size):  # bounded memory per pass
            batch = self._tokenize(texts[start : start + self.text_batch_size], offsets=False)
            ids, mask = batch["input_ids"].to(self.device), _mask(batch, self.device)
            chunks.append(_normalised(self.family.text_embeds(self._embedder, ids, mask)))
        return np.concatenate(chunks)

    def _text_weights_version(self) -> int:
        # in-place updates (optimiser steps, load_state_dict) bump a tensor's version counter
        return sum(p._version for p in self._text_parameters)

    def __repr__(self) -> str:
        return f"ClipEncoder({self.model_id!r}, grid={self.grid}, dim={self.dim})"


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """``image`` box-reduced by the largest integer factor that keeps its short side at or
    above ``side`` (itself when that factor is 1); the aspect ratio is kept to a pixel."""
    factor = min(image.size) // side
    return image.reduce(factor) if factor >= 2 else image


def _as_loaded(image: ImageInput) -> LoadedImage:
    if isinstance(image, LoadedImage):
        return image
    return load_image(image)


def _mask(batch: Any, device: torch.device) -> torch.Tensor | None:
    mask = batch.get("attention_mask")  # None when the tokenizer gives none
    return None if mask is None else mask.to(device)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()


def _normalised(tensor: torch.Tensor) -> np.ndarray:
    return _numpy(tensor / tensor.norm(dim=-1, keepdim=True).clamp_min(1e-12))
