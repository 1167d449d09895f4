"""Indexing and backfill past one process: Ray Data (:mod:`.pipeline` for indexing,
:mod:`.backfill` for backfill; the ``ray`` extra) and bulk mode against a Qdrant server
(:mod:`.bulk`).

Ray is imported only when a pipeline runs; without it, :func:`.pipeline.import_ray` names
the extra to install (``pip install 'qdrant-xai[ray]'``).
"""

from __future__ import annotations

from qdrant_xai.storage.distributed.backfill import RayBackfiller
from qdrant_xai.storage.distributed.bulk import bulk_ingest, is_embedded
from qdrant_xai.storage.distributed.pipeline import RayIndexer, import_ray, start_ray

__all__ = ["RayBackfiller", "RayIndexer", "bulk_ingest", "import_ray", "is_embedded", "start_ray"]
