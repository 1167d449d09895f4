"""The public names of each public package, pinned: adding or removing one is a decision.

Each name must resolve (the packages export lazily) to an object defined where the package
says, and importing a package front must not load torch.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PUBLIC = {
    "qdrant_xai": [
        "BackfillSummary",
        "Backfiller",
        "ClipEncoder",
        "CollectionError",
        "CollectionLayout",
        "DEFAULT_MODEL",
        "DeviceUnavailableError",
        "DiskFullError",
        "Explainer",
        "Explanation",
        "FeatureCodecError",
        "FeaturesMissingError",
        "IMAGE_VECTOR",
        "ImageFeatures",
        "ImageLimits",
        "ImageLoadError",
        "ImageRecord",
        "ImageSourcePolicy",
        "IndexSummary",
        "Indexer",
        "InputTooLargeError",
        "LAYOUTS",
        "LoadedImage",
        "ModelFingerprint",
        "ModelLoadError",
        "ModelMismatchError",
        "PayloadFeatureCodec",
        "PayloadKeys",
        "QdrantUnavailableError",
        "QdrantXaiError",
        "RetryPolicy",
        "SchemaMismatchError",
        "Searcher",
        "SourceNotAllowedError",
        "StaleFeaturesError",
        "StorageLockedError",
        "TEXT_VECTOR",
        "TextFeatures",
        "TextLimits",
        "VectorCheck",
        "Word",
        "WordAttribution",
        "check_vectors",
        "detect_layout",
        "ensure_collection",
        "inspect_collection",
        "load_image",
        "open_client",
        "resolve_layout",
    ],
    "qdrant_xai.eval": [
        "DEFAULT_BINS",
        "DEFAULT_CAP",
        "DEFAULT_KS",
        "DatasetError",
        "DatasetFormat",
        "DirectionMetrics",
        "Estimate",
        "EvalItem",
        "EvaluationReport",
        "FORMATS",
        "FaithfulnessCurve",
        "Invariance",
        "RetrievalDataset",
        "SCORE_NOISE",
        "WordFaithfulness",
        "average_precision",
        "bootstrap_ratio",
        "centre_prior",
        "comprehensiveness",
        "default_collection",
        "deletion_auc",
        "deletion_curves",
        "detect_format",
        "energy_pointing_game",
        "evaluate",
        "foil_auc",
        "foil_wins",
        "insertion_auc",
        "insertion_curves",
        "pointing_game",
        "random_heatmaps",
        "read_csv_dataset",
        "read_dataset",
        "read_flickr8k",
        "read_karpathy",
        "sufficiency",
        "summarize_ranks",
        "word_faithfulness",
    ],
    "qdrant_xai.explain": [
        "ContextOcclusion",
        "DEFAULT_CONCEPTS",
        "DebiasedPatch",
        "DecompositionHeatmap",
        "Explainer",
        "Explanation",
        "ClipSurgery",
        "ConceptCalibration",
        "Gae",
        "GaeLastLayer",
        "GradEclip",
        "Grounding",
        "HEATMAP_METHODS",
        "HeatmapMethod",
        "ImageEvidence",
        "ImageOcclusion",
        "IntegratedGradients",
        "MultiScale",
        "PatchSimilarity",
        "Rationale",
        "RationaleScorer",
        "TokenContributions",
        "UnknownMethodError",
        "WORD_METHODS",
        "WordAttribution",
        "WordMethod",
        "WordOcclusion",
        "decomposition_heatmaps",
        "ground",
        "heatmap_method",
        "word_method",
    ],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_all_is_pinned_and_every_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PUBLIC[package])
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_importing_a_package_front_loads_no_torch(package: str) -> None:
    code = f"import sys, {package}; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.split() == ["False", "False"]
