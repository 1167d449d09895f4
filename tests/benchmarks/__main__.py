"""``python -m tests.benchmarks --out BENCHMARKS.md [--quick]``: see :mod:`tests.benchmarks.run`."""

from tests.benchmarks.run import main

raise SystemExit(main())
