"""Evaluation: how good an explanation is, and how well a collection retrieves.

How good an explanation is:

* :mod:`.faithfulness`: pointing game, energy pointing game, deletion and insertion AUC,
  ERASER comprehensiveness and sufficiency, random and centre-prior baselines;
* :mod:`.curves`: the deletion and insertion curves (RISE) behind the AUCs;
* :mod:`.foils`: true-vs-foil AUC of word attributions, bootstrap intervals (:class:`Estimate`).

How well a collection retrieves (``qdrant-xai eval``):

* :mod:`.datasets`: Flickr8k, Karpathy-split and CSV readers (:mod:`.dataset_files` finds
  and parses their files);
* :mod:`.retrieval`: Recall@K, mAP and median rank both ways, and :func:`evaluate`;
* :mod:`.queries` (the queries of each direction), :mod:`.invariance` (the check that
  explaining hits changes no ranking) and :mod:`.report` (the table and the JSON).

Use::

    from qdrant_xai.eval import pointing_game, read_dataset

Names are imported on first use (the metrics and the evaluation need torch; reading a
dataset does not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_xai._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_BINS": "qdrant_xai.eval.faithfulness",
    "DEFAULT_CAP": "qdrant_xai.eval.datasets",
    "DEFAULT_KS": "qdrant_xai.eval.retrieval",
    "FORMATS": "qdrant_xai.eval.datasets",
    "SCORE_NOISE": "qdrant_xai.eval.invariance",
    "DatasetError": "qdrant_xai.errors",
    "DatasetFormat": "qdrant_xai.eval.datasets",
    "DirectionMetrics": "qdrant_xai.eval.retrieval",
    "Estimate": "qdrant_xai.eval.foils",
    "EvalItem": "qdrant_xai.eval.datasets",
    "EvaluationReport": "qdrant_xai.eval.report",
    "FaithfulnessCurve": "qdrant_xai.eval.curves",
    "Invariance": "qdrant_xai.eval.invariance",
    "RetrievalDataset": "qdrant_xai.eval.datasets",
    "WordFaithfulness": "qdrant_xai.eval.faithfulness",
    "average_precision": "qdrant_xai.eval.retrieval",
    "bootstrap_ratio": "qdrant_xai.eval.foils",
    "centre_prior": "qdrant_xai.eval.faithfulness",
    "comprehensiveness": "qdrant_xai.eval.faithfulness",
    "default_collection": "qdrant_xai.eval.datasets",
    "deletion_auc": "qdrant_xai.eval.faithfulness",
    "deletion_curves": "qdrant_xai.eval.curves",
    "detect_format": "qdrant_xai.eval.datasets",
    "energy_pointing_game": "qdrant_xai.eval.faithfulness",
    "evaluate": "qdrant_xai.eval.retrieval",
    "foil_auc": "qdrant_xai.eval.foils",
    "foil_wins": "qdrant_xai.eval.foils",
    "insertion_auc": "qdrant_xai.eval.faithfulness",
    "insertion_curves": "qdrant_xai.eval.curves",
    "pointing_game": "qdrant_xai.eval.faithfulness",
    "random_heatmaps": "qdrant_xai.eval.faithfulness",
    "read_csv_dataset": "qdrant_xai.eval.datasets",
    "read_dataset": "qdrant_xai.eval.datasets",
    "read_flickr8k": "qdrant_xai.eval.datasets",
    "read_karpathy": "qdrant_xai.eval.datasets",
    "sufficiency": "qdrant_xai.eval.faithfulness",
    "summarize_ranks": "qdrant_xai.eval.retrieval",
    "word_faithfulness": "qdrant_xai.eval.faithfulness",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from qdrant_xai.errors import DatasetError
    from qdrant_xai.eval.curves import FaithfulnessCurve, deletion_curves, insertion_curves
    from qdrant_xai.eval.datasets import (
        DEFAULT_CAP,
        FORMATS,
        DatasetFormat,
        EvalItem,
        RetrievalDataset,
        default_collection,
        detect_format,
        read_csv_dataset,
        read_dataset,
        read_flickr8k,
        read_karpathy,
    )
    from qdrant_xai.eval.faithfulness import (
        DEFAULT_BINS,
        WordFaithfulness,
        centre_prior,
        comprehensiveness,
        deletion_auc,
        energy_pointing_game,
        insertion_auc,
        pointing_game,
        random_heatmaps,
        sufficiency,
        word_faithfulness,
    )
    from qdrant_xai.eval.foils import Estimate, bootstrap_ratio, foil_auc, foil_wins
    from qdrant_xai.eval.invariance import SCORE_NOISE, Invariance
    from qdrant_xai.eval.report import EvaluationReport
    from qdrant_xai.eval.retrieval import (
        DEFAULT_KS,
        DirectionMetrics,
        average_precision,
        evaluate,
        summarize_ranks,
    )
