"""Evaluation: how good an explanation is, and how well a collection retrieves.

* :mod:`.faithfulness`: pointing game, energy pointing game, deletion and insertion curves,
  ERASER comprehensiveness and sufficiency, random and centre-prior baselines;
* :mod:`.retrieval`: dataset readers, Recall@K, mAP and median rank both ways, and the
  check that explaining hits changes no ranking (``qdrant-xai eval``).
"""
