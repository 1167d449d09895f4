"""The one progress bar of long runs (indexing, backfill, evaluation), on stderr.

tqdm's ``auto`` bar (a notebook widget in Jupyter, text elsewhere), imported only when a run
starts; ``enabled=False`` (``--no-progress``) keeps the same object but draws nothing, so
callers update it without checking.
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


def progress_bar(*, total: int | None, unit: str, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar for ``total`` items (``None``: unknown) named ``desc``; call ``update(n)``
    as items finish and ``close()`` at the end."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled)
