"""``python -m qdrant_xai`` runs the command line."""

from qdrant_xai.cli import main

raise SystemExit(main())
