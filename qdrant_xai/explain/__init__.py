"""Explaining hits: heatmap methods, word methods, grounding, rationales, the explainer.

* :mod:`.base`: the two method interfaces and the registry (methods are chosen by name);
* :mod:`.heatmaps`: where in an image a match comes from (``decomposition``, the default,
  ``patch``, ``debiased``, ``multiscale``, ``grad-eclip``, ``gae``, ``occlusion``);
* :mod:`.words`: which words raised a match (``prefix``, the default, ``occlusion``,
  ``context``, ``ig``, ``tokens``);
* :mod:`.grounding` (word-to-region maps) and :mod:`.rationales` (zero-shot concepts);
* :mod:`.explainer`: one explanation per hit of any Qdrant search; :mod:`.results`: what
  it returns.

Names are imported on first use (most methods need torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_xai._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_CONCEPTS": "qdrant_xai.explain.rationales",
    "HEATMAP_METHODS": "qdrant_xai.explain.base",
    "WORD_METHODS": "qdrant_xai.explain.base",
    "ContextOcclusion": "qdrant_xai.explain.words.occlusion",
    "DebiasedPatch": "qdrant_xai.explain.heatmaps.patch_similarity",
    "DecompositionHeatmap": "qdrant_xai.explain.heatmaps.decomposition",
    "Explainer": "qdrant_xai.explain.explainer",
    "Explanation": "qdrant_xai.explain.results",
    "ClipSurgery": "qdrant_xai.explain.heatmaps.clip_surgery",
    "Gae": "qdrant_xai.explain.heatmaps.gradients",
    "GaeLastLayer": "qdrant_xai.explain.heatmaps.gradients",
    "GradEclip": "qdrant_xai.explain.heatmaps.gradients",
    "Grounding": "qdrant_xai.explain.grounding",
    "ImageEvidence": "qdrant_xai.explain.base",
    "HeatmapMethod": "qdrant_xai.explain.base",
    "ImageOcclusion": "qdrant_xai.explain.heatmaps.occlusion",
    "IntegratedGradients": "qdrant_xai.explain.words.integrated_gradients",
    "MultiScale": "qdrant_xai.explain.heatmaps.patch_similarity",
    "PatchSimilarity": "qdrant_xai.explain.heatmaps.patch_similarity",
    "Rationale": "qdrant_xai.explain.rationales",
    "RationaleScorer": "qdrant_xai.explain.rationales",
    "ConceptCalibration": "qdrant_xai.explain.rationales",
    "TokenContributions": "qdrant_xai.explain.words.token_contributions",
    "UnknownMethodError": "qdrant_xai.errors",
    "WordAttribution": "qdrant_xai.explain.results",
    "WordMethod": "qdrant_xai.explain.base",
    "WordOcclusion": "qdrant_xai.explain.words.occlusion",
    "decomposition_heatmaps": "qdrant_xai.explain.heatmaps.decomposition",
    "ground": "qdrant_xai.explain.grounding",
    "heatmap_method": "qdrant_xai.explain.base",
    "word_method": "qdrant_xai.explain.base",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from qdrant_xai.errors import UnknownMethodError
    from qdrant_xai.explain.base import (
        HEATMAP_METHODS,
        WORD_METHODS,
        HeatmapMethod,
        ImageEvidence,
        WordMethod,
        heatmap_method,
        word_method,
    )
    from qdrant_xai.explain.explainer import Explainer
    from qdrant_xai.explain.grounding import Grounding, ground
    from qdrant_xai.explain.heatmaps.clip_surgery import ClipSurgery
    from qdrant_xai.explain.heatmaps.decomposition import (
        DecompositionHeatmap,
        decomposition_heatmaps,
    )
    from qdrant_xai.explain.heatmaps.gradients import Gae, GaeLastLayer, GradEclip
    from qdrant_xai.explain.heatmaps.occlusion import ImageOcclusion
    from qdrant_xai.explain.heatmaps.patch_similarity import (
        DebiasedPatch,
        MultiScale,
        PatchSimilarity,
    )
    from qdrant_xai.explain.rationales import (
        DEFAULT_CONCEPTS,
        ConceptCalibration,
        Rationale,
        RationaleScorer,
    )
    from qdrant_xai.explain.results import Explanation, WordAttribution
    from qdrant_xai.explain.words.integrated_gradients import IntegratedGradients
    from qdrant_xai.explain.words.occlusion import ContextOcclusion, WordOcclusion
    from qdrant_xai.explain.words.token_contributions import TokenContributions
