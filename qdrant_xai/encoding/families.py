"""Model families: what differs between CLIP and SigLIP, behind one small interface.

:class:`~qdrant_xai.encoding.encoder.ClipEncoder` keeps what every family shares (loading,
preprocessing through the checkpoint's processor, batching, query memory, crop geometry)
and asks its :class:`ModelFamily`, picked from the checkpoint's ``config.model_type``, for
what differs: the model class, how an embedding is read off the towers, the hooked
forwards that yield contributions (:mod:`.towers` for CLIP, :mod:`.siglip_towers` for
SigLIP), how texts are padded, and whether the text tower is causal (the ``prefix`` word
method needs that).

* ``"clip"``: OpenAI CLIP and LAION OpenCLIP checkpoints in the Hugging Face CLIP format;
* ``"siglip"``: SigLIP and the fixed-resolution SigLIP 2 checkpoints (``google/siglip2-*-
  patch16-224`` and the like are published as ``SiglipModel``s).

SigLIP 2's NaFlex checkpoints (``model_type`` ``"siglip2"``) take a variable patch grid
per image (aspect ratio kept, up to ``max_num_patches``); every feature map here has one
grid per model, so they are refused with a message naming the fixed-resolution ones.
"""

from __future__ import annotations

import copy
import itertools
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor

from qdrant_xai.encoding.siglip_towers import (
    run_siglip_image_tower,
    run_siglip_text_tower,
    siglip_source_contributions,
)
from qdrant_xai.encoding.towers import (
    ImageSourceContributions,
    ImageTowerOutput,
    TextTowerOutput,
    image_source_contributions,
    run_image_tower,
    run_text_tower,
)
from qdrant_xai.errors import UnsupportedModelError, brief_repr

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ClipFamily",
    "ModelFamily",
    "SiglipFamily",
    "family_of",
    "sdpa_twin",
]


class ModelFamily(ABC):
    """What one family of dual encoders does differently (see module doc).

    Every embedding returned is the unnormalised ``[B, P]`` output of the model's own
    ``get_image_features`` / ``get_text_features`` (``pooler_output``); the encoder
    normalises it. Explanations refer to the cosine of normalised embeddings (what Qdrant
    ranks by), whatever score the family was trained with.
    """

    #: the ``config.model_type`` of the checkpoints of this family
    name: ClassVar[str]
    #: whether the text tower is causal (each token reads only the ones before it)
    causal_text: ClassVar[bool]
    #: how texts are padded: ``True`` (to the longest in the batch) or ``"max_length"``
    padding: ClassVar[bool | str]
    #: the word method explanations use when none is named
    default_word_method: ClassVar[str]

    @abstractmethod
    def model_class(self) -> Any:
        """The ``transformers`` model class that loads this family's checkpoints."""

    @abstractmethod
    def image_embeds(self, model: Any, pixel_values: Tensor) -> Tensor:
        """[B, P] image embeddings of [B, 3, H, W] pixels, not normalised."""

    @abstractmethod
    def text_embeds(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """[B, P] text embeddings of tokenized texts, not normalised."""

    @abstractmethod
    def project_text(self, model: Any, pooler_output: Tensor) -> Tensor:
        """[B, P] the text embedding from ``text_model(...).pooler_output``."""

    @abstractmethod
    def text_parameters(self, model: Any) -> tuple[Any, ...]:
        """Every parameter a text embedding depends on (for the query memory)."""

    @abstractmethod
    def run_image_tower(self, model: Any, pixel_values: Tensor) -> ImageTowerOutput:
        """The hooked vision forward: embeddings, patch contributions, patch tokens."""

    @abstractmethod
    def run_text_tower(
        self, model: Any, input_ids: Tensor, attention_mask: Tensor | None
    ) -> TextTowerOutput:
        """The hooked text forward: embeddings and per-token contributions."""

    @abstractmethod
    def source_contributions(self, model: Any, pixel_values: Tensor) -> ImageSourceContributions:
        """The image embedding split over input patches through every layer (``decompx``)."""

    @abstractmethod
    def dim(self, model: Any) -> int:
        """Dimension ``P`` of the joint embedding space."""

    @abstractmethod
    def vision_tokens(self, grid: tuple[int, int]) -> int:
        """Tokens of the vision tower's residual stream for a ``grid`` of patches."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ClipFamily(ModelFamily):
    """CLIP (OpenAI, LAION OpenCLIP in the HF CLIP format): class token and projections,
    causal text tower pooled at the end-of-text token (:mod:`.towers`)."""

    name = "clip"
    causal_text = True
    padding = True
    default_word_method = "prefix"

    def model_class(self) -> Any:
        from transformers import CLIPModel

        return CLIPModel

    def image_embeds(self, model: Any, pixel_values: Tensor) -> Tensor:
        vision = model.vision_model(pixel_values=pixel_values)
        out: Tensor = model.visual_projection(vision.pooler_output)
        return out

    def text_embeds(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        text = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.project_text(model, text.pooler_output)

    def project_text(self, model: Any, pooler_output: Tensor) -> Tensor:
        out: Tensor = model.text_projection(pooler_output)
        return out

    def text_parameters(self, model: Any) -> tuple[Any, ...]:
        return (*model.text_model.parameters(), *model.text_projection.parameters())

    def run_image_tower(self, model: Any, pixel_values: Tensor) -> ImageTowerOutput:
        return run_image_tower(model, pixel_values)

    def source_contributions(self, model: Any, pixel_values: Tensor) -> ImageSourceContributions:
        return image_source_contributions(model, pixel_values)

    def run_text_tower(
        self, model: Any, input_ids: Tensor, attention_mask: Tensor | None
    ) -> TextTowerOutput:
        if attention_mask is None:
            attention_mask = input_ids.new_ones(input_ids.shape)
        return run_text_tower(model, input_ids, attention_mask)

    def dim(self, model: Any) -> int:
        return int(model.config.projection_dim)

    def vision_tokens(self, grid: tuple[int, int]) -> int:
        return 1 + grid[0] * grid[1]


class SiglipFamily(ModelFamily):
    """SigLIP and fixed-resolution SigLIP 2: attention-pooling head, no class token, no
    projections; bidirectional text tower pooled at the last position, texts padded to a
    fixed length (:mod:`.siglip_towers`). Its logit ``sigmoid(exp(logit_scale) · cos +
    logit_bias)`` is not what explanations split: they split the cosine Qdrant ranks by."""

    name = "siglip"
    causal_text = False
    padding = "max_length"
    default_word_method = "tokens"

    def model_class(self) -> Any:
        from transformers import SiglipModel

        return SiglipModel

    def image_embeds(self, model: Any, pixel_values: Tensor) -> Tensor:
        out: Tensor = model.vision_model(pixel_values=pixel_values).pooler_output
        return out

    def text_embeds(self, model: Any, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        out: Tensor = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.project_text(model, out.pooler_output)  # type: ignore[attr-defined]

    def project_text(self, model: Any, pooler_output: Tensor) -> Tensor:
        return pooler_output  # the text tower's head is already applied

    def text_parameters(self, model: Any) -> tuple[Any, ...]:
        return tuple(model.text_model.parameters())

    def run_image_tower(self, model: Any, pixel_values: Tensor) -> ImageTowerOutput:
        return run_siglip_image_tower(model, pixel_values)

    def source_contributions(self, model: Any, pixel_values: Tensor) -> ImageSourceContributions:
        return siglip_source_contributions(model, pixel_values)

    def run_text_tower(
        self, model: Any, input_ids: Tensor, attention_mask: Tensor | None
    ) -> TextTowerOutput:
        return run_siglip_text_tower(model, input_ids, attention_mask)

    def dim(self, model: Any) -> int:
        return int(model.config.vision_config.hidden_size)

    def vision_tokens(self, grid: tuple[int, int]) -> int:
        return grid[0] * grid[1]


_FAMILIES: dict[str, ModelFamily] = {
    family.name: family for family in (ClipFamily(), SiglipFamily())
}
#: the ``config.model_type`` values qdrant-xai loads
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_FAMILIES)


def family_of(model_type: object, *, model_id: str = "the checkpoint") -> ModelFamily:
    """The family of a checkpoint's ``config.model_type``.

    Raises:
        UnsupportedModelError: any other model type (the message names the supported ones;
            for SigLIP 2 NaFlex, the fixed-resolution checkpoints to use instead).
    """
    family = _FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is not None:
        return family
    supported = ", ".join(repr(name) for name in SUPPORTED_MODEL_TYPES)
    hint = ""
    if model_type == "siglip2":
        hint = (
            " SigLIP 2 NaFlex checkpoints take a variable patch grid per image, which the "
            "stored feature maps cannot hold; use a fixed-resolution SigLIP 2 checkpoint "
            "(e.g. 'google/siglip2-base-patch16-224', a SiglipModel)."
        )
    raise UnsupportedModelError(
        f"{model_id} is a {brief_repr(model_type)} model; qdrant-xai explains the model types "
        f"{supported} (CLIP and LAION OpenCLIP in the HF CLIP format; SigLIP and "
        f"fixed-resolution SigLIP 2).{hint}"
    )


def sdpa_twin(model: Any) -> Any:
    """``model`` with scaled-dot-product attention, sharing its parameters and buffers.

    The feature paths need the attention weights, so ``model`` stays eager; the plain
    embedding paths (queries, perturbed images and texts of occlusion methods) need none
    and run with SDPA (faster, the more so the longer the sequence), with the same values
    within float rounding. The twin is a copy of the module tree that shares every tensor
    (so later in-place updates of the weights reach both) with its own config, so no
    attention setting is switched per call and concurrent callers never see the other
    implementation. Models that cannot switch keep eager attention.
    """
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        twin = copy.deepcopy(model, shared)
        twin.set_attn_implementation("sdpa")
    except Exception:  # any model that cannot be copied or switched keeps eager attention
        return model
    if getattr(twin.config, "_attn_implementation", None) != "sdpa":
        return model
    return twin.eval()
