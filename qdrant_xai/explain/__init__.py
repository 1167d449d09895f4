"""Explanation methods and the post-retrieval explainer.

One module per method family: :mod:`.decomposition` (image heatmaps from stored patch
contributions), :mod:`.occlusion` (word attributions by leave-one-word-out).
"""

from qdrant_xai.explain.decomposition import decomposition_heatmaps
from qdrant_xai.explain.explainer import Explainer
from qdrant_xai.explain.occlusion import WordOcclusion
from qdrant_xai.explain.results import Explanation, WordAttribution

__all__ = [
    "Explainer",
    "Explanation",
    "WordAttribution",
    "WordOcclusion",
    "decomposition_heatmaps",
]
