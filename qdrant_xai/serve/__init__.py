"""``qdrant-xai serve``: the explorer in a browser and a JSON API over one loaded model.

:class:`ExplainService` does the work (search, explain, pictures) and is usable on its
own; :func:`create_app` puts the JSON API and the UI in front of it (FastAPI; the ``serve``
extra: ``pip install 'qdrant-xai[serve]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qdrant_xai._lazy import lazy_exports

if TYPE_CHECKING:
    from qdrant_xai.serve.app import create_app
    from qdrant_xai.serve.service import ExplainOptions, ExplainService, RequestError

__all__ = ["ExplainOptions", "ExplainService", "RequestError", "create_app"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ExplainOptions": "qdrant_xai.serve.service",
        "ExplainService": "qdrant_xai.serve.service",
        "RequestError": "qdrant_xai.serve.service",
        "create_app": "qdrant_xai.serve.app",
    },
)
