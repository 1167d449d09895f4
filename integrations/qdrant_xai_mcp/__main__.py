"""``python -m qdrant_xai_mcp``: the ``qdrant-xai-mcp`` command."""

from qdrant_xai_mcp.server import main

raise SystemExit(main())
