"""Where the acceptance tests' collections live, and the result of a CLI run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qdrant_client import QdrantClient

#: as ``tests/conftest.py``'s ``client`` fixture, less ``:memory:`` (the CLI, run
#: in-process, opens Qdrant itself): an embedded folder, and the server at ``QDRANT_URL``
BACKENDS = ["local"]
if os.environ.get("QDRANT_URL"):
    BACKENDS.append("server")


@dataclass(frozen=True)
class Qdrant:
    """An embedded folder or a server. The folder is locked by whichever client has it
    open: tests open a client with ``open()`` and close it before running the CLI."""

    path: Path | None = None
    url: str | None = None

    @contextmanager
    def open(self) -> Iterator[QdrantClient]:
        if self.path is not None:
            client = QdrantClient(path=str(self.path))
        else:
            client = QdrantClient(url=self.url, api_key=os.environ.get("QDRANT_API_KEY"))
        try:
            yield client
        finally:
            client.close()

    def cli_args(self) -> list[str]:
        return ["--path", str(self.path)] if self.path is not None else ["--url", str(self.url)]


@dataclass(frozen=True)
class CliRun:
    """Exit code, stdout and stderr of one ``qdrant-xai`` run."""

    code: int
    out: str
    err: str
