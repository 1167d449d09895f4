"""Reading images named in payloads, which are untrusted input.

A payload's ``source`` was written by whoever could write to the collection. The
:class:`ImageSourcePolicy` reads a local path only when it resolves (symlinks followed)
inside one of the configured roots, and never fetches URLs unless a later policy allows it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qdrant_xai._exceptions import SourceNotAllowedError
from qdrant_xai.images import ImageLimits, LoadedImage, load_image

__all__ = ["ImageSourcePolicy"]


@dataclass(frozen=True)
class ImageSourcePolicy:
    """Which payload image sources may be read.

    Args:
        roots: folders whose files may be read; a path that resolves outside all of them
            (``..``, a symlink, an absolute path elsewhere) is refused. Empty: no local reads.
        limits: decoding bounds applied to every image read.
    """

    roots: tuple[Path, ...] = ()
    limits: ImageLimits = field(default_factory=ImageLimits)

    @classmethod
    def from_roots(
        cls, roots: Sequence[str | os.PathLike[str]], *, limits: ImageLimits | None = None
    ) -> ImageSourcePolicy:
        return cls(tuple(Path(r).resolve() for r in roots), limits or ImageLimits())

    def resolve(self, source: str) -> Path:
        """The local path ``source`` names, if the policy allows reading it."""
        if "://" in source:
            raise SourceNotAllowedError(
                f"{source}: URL image sources are not fetched; download the image and pass "
                "it, or store local paths"
            )
        if not self.roots:
            raise SourceNotAllowedError(
                f"{source}: reading images named in payloads is off; allow the folder with "
                "image_roots=[...] (CLI: --image-root DIR)"
            )
        path = Path(source).resolve()
        if not any(path.is_relative_to(root) for root in self.roots):
            raise SourceNotAllowedError(
                f"{source}: resolves to {path}, outside the allowed image roots "
                f"{[str(r) for r in self.roots]}"
            )
        return path

    def open(self, source: str) -> LoadedImage:
        """Reads and decodes the image at ``source`` under the policy."""
        return load_image(self.resolve(source), limits=self.limits, name=source)
