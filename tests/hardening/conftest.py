"""Hardening suite: faults, bad input and hostile payloads, with figures.

Every test here is marked ``hardening`` (``pytest -m hardening`` runs them alone). Heavy
parts run at a reduced count by default (the normal test run and CI) and at the full count
with ``QDRANT_XAI_HARDENING=full``; :meth:`Figures.count` records both counts, so the report
says which was run.

Tests record what they tried and what came out through the session fixture ``figures``.
With ``QDRANT_XAI_RELIABILITY_OUT=docs/reliability.md`` the session writes that report from
the figures of the run (``QDRANT_XAI_RELIABILITY_JSON=path`` writes them as JSON)::

    QDRANT_XAI_HARDENING=full QDRANT_XAI_RELIABILITY_OUT=docs/reliability.md \\
        python -m pytest -m hardening

The test files of one family share helpers in a module named after it (``_fuzz.py``,
``_children.py``, ``_faults.py``, ...); the fixtures they share are defined there and served
to them here.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Fixtures shared by the test files of one family, defined beside that family's helpers.
from tests.hardening._children import fork_server  # noqa: F401
from tests.hardening._fuzz import fuzz_tally, fuzz_world  # noqa: F401
from tests.hardening._mismatch import (  # noqa: F401
    counting_method,
    mismatch_models,
    mismatch_scenes,
    mismatch_world,
    other_encoder,
    wide_encoder,
)

FULL = os.environ.get("QDRANT_XAI_HARDENING", "").strip().lower() == "full"
MODE = "full" if FULL else "reduced"

# Hypothesis: reproducible runs (derandomised), no example database in the checkout, no
# per-example deadline (the machine is shared), counts set per test through Figures.count.
settings.register_profile(
    "qdrant-xai",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("qdrant-xai")


# Families in report order: key -> (title, what the family tries).
FAMILIES: dict[str, tuple[str, str]] = {
    "bad-images": (
        "Bad images",
        "`test_bad_images.py` (in-process, and the loader), `test_bad_images_cli.py`: a "
        "generated corpus (`bad_corpus.py`) of broken, hostile and unusual files (truncated, "
        "empty, bombs, strips, 16-bit, CMYK, palette with transparency, animated, "
        "EXIF-rotated, damaged EXIF, FIFOs and devices, symlink loops, unreadable files and "
        "folders, non-UTF-8 names) is indexed with good images, in-process and by the CLI as "
        "a process without the permission-bypass capabilities. Each bad file must be reported "
        "once with its reason, everything else indexed, a second run must change nothing; "
        "byte-level mutations of valid files of 11 formats go through the loader.",
    ),
    "fuzz": (
        "Hostile payloads (property-based fuzzing)",
        "`test_fuzz_codec.py`, `test_fuzz_explainer.py`, `test_fuzz_readers.py`: Hypothesis "
        "generates payloads for the feature decoder and every payload reader (explainer on "
        "every layout, MCP backend, LangChain retriever, backfill, point ids, layouts). Only "
        "the package's typed errors may come out, never another exception; decoded maps must "
        "equal an independent reference decoder; a map of another shape must be refused, "
        "never reshaped into a heatmap. Oversized fields are refused before allocation (peak "
        "allocation measured with tracemalloc).",
    ),
    "interrupt": (
        "Interrupted indexing and backfill",
        "`test_interrupted_indexing.py`, `test_interrupted_backfill.py`: `qdrant-xai index` "
        "and `qdrant-xai backfill` run as child processes and are killed with SIGKILL at "
        "seeded random moments (some while a batch is being written), then rerun until a run "
        "finishes. After every kill and at the end a fresh client checks every point: no "
        "unknown id, no partial feature object, and at the end no missing point and every "
        "point equal to an uninterrupted run's.",
    ),
    "server-faults": (
        "Server faults",
        "`test_server_faults_client.py`, `test_server_faults_http.py`, "
        "`test_server_faults_retry_policy.py`: without a server, a real embedded client "
        "wrapped so that chosen calls fail (before sending, or after the write landed with "
        "the answer lost) or the storage is closed and reopened mid-run (a restart); a real "
        "HTTP client against loopback servers that hang, close, refuse or answer 503; the "
        "retry policy on a fake clock. With `QDRANT_URL` or a Docker engine the same tests "
        "run against a Qdrant server.",
    ),
    "concurrency": (
        "Concurrency",
        "`test_embedded_lock.py`, `test_concurrent_explain.py`: a second process (and a "
        "second client) on a held embedded folder; 8 threads explaining with every method "
        "mix on one client and encoder, compared with the same calls run one by one; "
        "LangChain `ainvoke` calls gathered concurrently against sequential `invoke`.",
    ),
    "sources": (
        "Untrusted image sources",
        "`test_hostile_sources.py` (end to end through `Explainer`; `tests/unit/images/` "
        "tests the policy itself): payload sources that try path traversal, symlink escapes, "
        "`file://` tricks, loopback/private/link-local/mapped addresses, redirects, huge and "
        "drip-fed responses, served by the test's own loopback HTTP servers and decoys; an "
        "audit hook records every file opened.",
    ),
    "mismatch": (
        "Model mismatch",
        "`test_model_mismatch_python_api.py`, `test_model_mismatch_adapters.py`: features, "
        "fingerprints or vectors from another model (other weights, other dimension, other "
        "tools' collections) through the Python API, the CLI, LangChain and MCP; a counting "
        "heatmap method proves no heatmap is drawn.",
    ),
    "stale": (
        "Staleness",
        "`test_stale_model.py`: what changed since a point was written must never pass as "
        "current: an image file overwritten in place with another picture of the same size, "
        "an edited caption, a model whose inner weights changed (a merged LoRA keeps the "
        "projections), points written with the fingerprint of an older release. Each is "
        "re-encoded by `index` / `backfill` or refused per hit at explain time, never "
        "reported unchanged.",
    ),
    "one-input": (
        "One input, bounded cost",
        "`test_one_input_cost.py`: one long caption, query or query image must cost bounded "
        "time and memory (measured in child processes), through the Python API and the MCP "
        "server; a text over the limit is refused with the limit named, and one client's "
        "request never holds the others for long.",
    ),
    "ingest": (
        "Ingest as people feed it",
        "`test_ingest_faults.py`: batches of maximum-size images (black 8000x8000 PNGs) "
        "indexed and backfilled by the CLI in a child process under a 4 GB address-space "
        "cap, its peak resident memory measured; captions CSVs with a 200,000-character and "
        "a 1 MB field and image paths written `./x.png`, relative to the CSV, absolute "
        "inside and outside the folder; `.ico`, `.avif`, `.heic`, `.svg`, multi-page and "
        "animated files, a dim 16-bit PNG and file names with a newline.",
    ),
    "endings": (
        "Endings: interrupts, full disks, bad arguments",
        "`test_cli_endings.py`: the CLI as a child process, interrupted with SIGINT and "
        "SIGTERM, writing onto a full disk, given out-of-range arguments, an unavailable "
        "device, a collection schema it cannot use: each ends with one line on stderr that "
        "says what to do, the documented exit status, no traceback and no partial file; "
        "a rerun after an interrupt equals a clean run.",
    ),
}


@dataclass
class Figures:
    """Figures of one run, by family, written to the reliability report."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)

    def record(self, family: str, name: str, value: Any) -> None:
        """Sets one figure (``value`` is shown as is: a number, a string, a list)."""
        if family not in FAMILIES:
            raise KeyError(f"unknown family {family!r}; add it to FAMILIES in this conftest")
        self.values.setdefault(family, {})[name] = value

    def add(self, family: str, name: str, amount: int | float = 1) -> None:
        """Adds to a numeric figure (several tests can feed one total)."""
        current = self.values.setdefault(family, {}).get(name, 0)
        self.record(family, name, current + amount)

    def count(self, family: str, name: str, *, reduced: int, full: int) -> int:
        """The count to run now (``full`` with QDRANT_XAI_HARDENING=full), recorded with both."""
        if family not in FAMILIES:
            raise KeyError(f"unknown family {family!r}; add it to FAMILIES in this conftest")
        self.counts.setdefault(family, {})[name] = (reduced, full)
        return full if FULL else reduced


def render(figures: Figures, *, session: pytest.Session, seconds: float) -> str:
    """Markdown report of one run."""
    lines = [
        "# Reliability",
        "",
        "Generated from one run of the hardening suite (`tests/hardening`, marker "
        "`hardening`); every figure below comes from that run. Regenerate it with:",
        "",
        "```bash",
        "QDRANT_XAI_HARDENING=full QDRANT_XAI_RELIABILITY_OUT=docs/reliability.md \\",
        "    .venv/bin/python -m pytest -m hardening",
        "```",
        "",
        "The normal test run (and CI) runs the same tests at the reduced counts listed per "
        "family; `QDRANT_XAI_HARDENING=full` runs the full counts.",
        "",
        "| run | |",
        "|---|---|",
        f"| counts | {MODE} |",
        f"| tests | {session.testscollected} collected, {session.testsfailed} failed |",
        f"| time | {seconds:.0f} s |",
        f"| date | {time.strftime('%Y-%m-%d')} |",
        f"| machine | {platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} |",
        f"| Qdrant server | {(os.environ.get('QDRANT_URL') and 'yes (QDRANT_URL)') or 'none'} |",
        "",
    ]
    for key, (title, summary) in FAMILIES.items():
        values = figures.values.get(key, {})
        counts = figures.counts.get(key, {})
        if not values and not counts:
            continue
        lines += [f"## {title}", "", summary, ""]
        if values:
            lines += ["| figure | this run |", "|---|---|"]
            lines += [f"| {name} | {_cell(value)} |" for name, value in values.items()]
            lines.append("")
        if counts:
            lines += ["| count | reduced (CI) | full |", "|---|---|---|"]
            lines += [f"| {name} | {r:,} | {f:,} |" for name, (r, f) in counts.items()]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    elif isinstance(value, list | tuple):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    collected = Figures()
    start = time.monotonic()
    yield collected
    out = os.environ.get("QDRANT_XAI_RELIABILITY_OUT")
    if out:
        text = render(collected, session=request.session, seconds=time.monotonic() - start)
        Path(out).write_text(text, encoding="utf-8")
    dump = os.environ.get("QDRANT_XAI_RELIABILITY_JSON")
    if dump:
        data = {"mode": MODE, "values": collected.values, "counts": collected.counts}
        Path(dump).write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
