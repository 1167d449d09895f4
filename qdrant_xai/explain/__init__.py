"""Explanation methods and the post-retrieval explainer.

One module per method family, each registering its methods by name:

* image heatmaps: :mod:`.decomposition` (``decomposition``, the default, from stored
  features), :mod:`.patch` (``patch``, ``debiased``, ``multiscale``), :mod:`.gradients`
  (``grad-eclip``, ``gae``), :mod:`.perturbation` (``occlusion``);
* word attributions: :mod:`.occlusion` (``occlusion``, the default, and ``context``),
  :mod:`.integrated_gradients` (``ig``), :mod:`.decomposition` (``tokens``);
* :mod:`.grounding` (word-to-region maps) and :mod:`.rationales` (zero-shot concepts).
"""

from qdrant_xai.explain.base import (
    IMAGE_METHODS,
    WORD_METHODS,
    ImageEvidence,
    ImageMethod,
    UnknownMethodError,
    WordMethod,
    image_method,
    word_method,
)
from qdrant_xai.explain.decomposition import (
    DecompositionHeatmap,
    TokenContributions,
    decomposition_heatmaps,
)
from qdrant_xai.explain.explainer import Explainer
from qdrant_xai.explain.gradients import Gae, GradEclip
from qdrant_xai.explain.grounding import Grounding, ground
from qdrant_xai.explain.integrated_gradients import IntegratedGradients
from qdrant_xai.explain.occlusion import ContextOcclusion, WordOcclusion
from qdrant_xai.explain.patch import DebiasedPatch, MultiScale, PatchSimilarity
from qdrant_xai.explain.perturbation import ImageOcclusion
from qdrant_xai.explain.rationales import DEFAULT_CONCEPTS, Rationale, RationaleScorer
from qdrant_xai.explain.results import Explanation, WordAttribution

__all__ = [
    "DEFAULT_CONCEPTS",
    "IMAGE_METHODS",
    "WORD_METHODS",
    "ContextOcclusion",
    "DebiasedPatch",
    "DecompositionHeatmap",
    "Explainer",
    "Explanation",
    "Gae",
    "GradEclip",
    "Grounding",
    "ImageEvidence",
    "ImageMethod",
    "ImageOcclusion",
    "IntegratedGradients",
    "MultiScale",
    "PatchSimilarity",
    "Rationale",
    "RationaleScorer",
    "TokenContributions",
    "UnknownMethodError",
    "WordAttribution",
    "WordMethod",
    "WordOcclusion",
    "decomposition_heatmaps",
    "ground",
    "image_method",
    "word_method",
]
