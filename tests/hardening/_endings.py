"""Helpers of the command-line endings probes (``test_cli_endings*.py``): one CLI run
signalled with SIGINT/SIGTERM, the check every probe makes of its stderr, two stores
compared point by point, and the driver that runs commands on a real full disk (a small
tmpfs mounted in a user and mount namespace, ``unshare --user --map-root-user --mount``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qdrant_xai.storage.schema import PayloadKeys
from tests.hardening._children import RUN_TIMEOUT, ForkServer
from tests.hardening._interrupted_runs import close, decode_features, read_points, sqlite_count

MAX_LINES = 2  # an ending is one line; an argument error is the short usage and the error


@dataclass
class Tally:
    """Every probe's stderr, for the figures: tracebacks (must be 0) and the probes run."""

    probes: list[str] = field(default_factory=list)
    tracebacks: int = 0

    def check(self, name: str, rc: int, stderr: str, *, expected_rc: int) -> list[str]:
        """Records the probe and asserts its ending: no traceback, at most two lines (the
        transformers torchvision notice aside), the documented exit status. Returns the
        lines."""
        self.probes.append(name)
        self.tracebacks += stderr.count("Traceback")
        lines = [line for line in stderr.splitlines() if line.strip() and not _noise(line)]
        assert "Traceback" not in stderr, f"{name}: {stderr[-3000:]}"
        assert 1 <= len(lines) <= MAX_LINES, f"{name}: {len(lines)} lines: {stderr[-3000:]}"
        assert rc == expected_rc, f"{name}: exit {rc}, expected {expected_rc}: {stderr[-2000:]}"
        return lines


def _noise(line: str) -> bool:
    """Lines of other libraries that are not an ending (a transformers notice on import)."""
    return "requires torchvision" in line or line.startswith("Writing model shards")


# -- a run stopped by a signal ------------------------------------------------------------


@dataclass
class Stopped:
    rc: int
    stdout: str
    stderr: str
    on_disk_at_signal: int
    signalled: bool


def run_and_signal(
    server: ForkServer,
    argv: list[str],
    logs: Path,
    store: Path,
    collection: str,
    *,
    signum: int,
    at_points: int = 0,
    after: float = 0.0,
    needle: str | None = None,
) -> Stopped:
    """Runs the CLI in a child of the fork server and sends it ``signum`` as soon as the
    store holds ``at_points`` points (with the payload key ``needle``, if given) and
    ``after`` seconds have passed."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / "stdout.txt", logs / "stderr.txt"
    pid = server.start(argv, out, err)
    start, rc, signalled, at_signal = time.monotonic(), None, False, 0
    while rc is None:
        if time.monotonic() - start > RUN_TIMEOUT:
            server.kill()
            server.exit_code(timeout=30)
            pytest.fail(f"{argv[0]} did not end in {RUN_TIMEOUT} s: {err.read_text()}")
        if not signalled and time.monotonic() - start >= after:
            at_signal = sqlite_count(store, collection, needle) if at_points else 0
            if at_signal >= at_points:
                os.kill(pid, signum)  # the fork server's child: not yet reaped (no rc yet)
                signalled = True
        rc = server.exit_code(timeout=0.01)
    return Stopped(
        rc,
        out.read_text(encoding="utf-8", errors="replace"),
        err.read_text(encoding="utf-8", errors="replace"),
        at_signal,
        signalled,
    )


def run_to_end(server: ForkServer, argv: list[str], logs: Path) -> tuple[int, str, str]:
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / "stdout.txt", logs / "stderr.txt"
    server.start(argv, out, err)
    rc = server.exit_code(timeout=RUN_TIMEOUT)
    if rc is None:
        server.kill()
        server.exit_code(timeout=30)
        pytest.fail(f"{argv[0]} did not end in {RUN_TIMEOUT} s: {err.read_text()}")
    return rc, out.read_text(encoding="utf-8"), err.read_text(encoding="utf-8")


# -- two stores ---------------------------------------------------------------------------


def differences(store: Path, reference: Path, collection: str) -> list[str]:
    """How ``store`` differs from ``reference``: missing or extra ids, payloads, vectors
    and features (the last two within float tolerance: batches differ after a resume)."""
    points, ref = read_points(store, collection), read_points(reference, collection)
    found = [f"missing {pid}" for pid in ref if pid not in points]
    found += [f"extra {pid}" for pid in points if pid not in ref]
    for pid, record in points.items():
        if pid not in ref:
            continue
        payload, ref_payload = record.payload or {}, ref[pid].payload or {}
        rest = {k: v for k, v in payload.items() if k != PayloadKeys.FEATURES}
        if rest != {k: v for k, v in ref_payload.items() if k != PayloadKeys.FEATURES}:
            found.append(f"payload of {pid}")
            continue
        ndim = 3 if payload.get(PayloadKeys.KIND) == "image" else 2
        key = payload[PayloadKeys.FINGERPRINT]
        features = decode_features(payload, key, (None,) * ndim)
        ref_features = decode_features(ref_payload, key, (None,) * ndim)
        vectors = record.vector if isinstance(record.vector, dict) else {}
        ref_vectors = ref[pid].vector if isinstance(ref[pid].vector, dict) else {}
        same_vectors = vectors.keys() == ref_vectors.keys() and all(
            close(vectors[k], ref_vectors[k]) for k in vectors
        )
        if not (same_vectors and close(features, ref_features)):
            found.append(f"vectors or features of {pid}")
    return found


# -- a real full disk ---------------------------------------------------------------------

# Runs inside ``unshare --user --map-root-user --mount``: reads steps (JSON) on argv[1],
# imports the command line once, then per step mounts/fills/frees tmpfs folders and forks
# one CLI run (stdout and stderr to files); prints one JSON result per step.
_DRIVER = r"""
import json, os, shutil, subprocess, sys

steps = json.loads(open(sys.argv[1]).read())
import torch, transformers, qdrant_client.local.qdrant_local  # once, before the forks
from qdrant_xai.cli import main


def fill(folder):
    path = os.path.join(folder, "filler")
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return os.path.getsize(path)


def run(argv, out, err):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, path in ((1, out), (2, err)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


for i, step in enumerate(steps):
    result = {"step": i}
    for folder, size in step.get("mount", {}).items():
        os.makedirs(folder, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder], check=True)
    for folder, size in step.get("remount", {}).items():
        subprocess.run(["mount", "-o", f"remount,size={size}", folder], check=True)
    for path, text in step.get("write", {}).items():
        with open(path, "w") as f:
            f.write(text)
    for folder in step.get("fill", []):
        result["filled"] = fill(folder)
    for path in step.get("remove", []):
        os.remove(path)
    if "argv" in step:
        result["rc"] = run(step["argv"], step["out"], step["err"])
    for folder in step.get("list", []):
        result.setdefault("listing", {})[folder] = {
            os.path.relpath(os.path.join(d, n), folder): os.path.getsize(os.path.join(d, n))
            for d, _, names in os.walk(folder) for n in names
        }
    for source, target in step.get("copy", {}).items():
        shutil.copytree(source, target)
    print(json.dumps(result), flush=True)
"""


def namespaces_available() -> bool:
    """Whether this machine lets an unprivileged process mount a tmpfs of its own."""
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
         "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && umount \"$d\""],
        capture_output=True,
    )  # fmt: skip
    return probe.returncode == 0


def run_on_small_disks(steps: list[dict[str, Any]], workdir: Path) -> list[dict[str, Any]]:
    """Runs the steps of :data:`_DRIVER` in a new user and mount namespace (the tmpfs
    folders exist only there; copy out what must be checked after)."""
    plan = workdir / "steps.json"
    plan.write_text(json.dumps(steps), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount",
         sys.executable, "-c", _DRIVER, str(plan)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT * 3, env=env, cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def stop_name(signum: int) -> str:
    return signal.Signals(signum).name
