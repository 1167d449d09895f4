"""Command-line runs as child processes, killed with SIGKILL (``test_interrupted_*.py``).

Starting a Python process that imports torch and transformers costs several seconds, so the
runs are forked from one interpreter that has imported them (and nothing else) once: the
fork server (fixture ``fork_server``, served to the test files by the hardening
``conftest.py``). Each run is still its own process with its own Qdrant client and storage
lock, and the kill is a real SIGKILL of that process. :func:`drive` runs the CLI once and
kills it at a moment or as soon as the storage shows a given progress; :func:`kill_loop`
runs and kills it until enough runs were killed.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

RUN_TIMEOUT = 180.0  # seconds one CLI run may take before the test gives up
# seconds between two reads of the storage while a run is watched (reads delay the writer's
# commits): often while waiting for a write to kill at, rarely while timing the first write
POLL_KILL, POLL_WATCH = 0.005, 0.05

# The fork server: imports the heavy modules once, then forks one child per command, which
# runs the ``qdrant_xai`` module with the given arguments (stdout and stderr to files). Only
# the server kills its child, before reaping it, so a kill never reaches a reused pid.
_FORK_SERVER = r"""
import json, os, runpy, select, signal, sys, traceback

import numpy, torch, transformers
from transformers import AutoProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast
import portalocker, qdrant_client, qdrant_client.local.qdrant_local, tqdm.auto
import qdrant_xai.storage.backfill, qdrant_xai.cli, qdrant_xai.storage.indexer

pending = b""


def read_line(timeout):
    global pending
    while b"\n" not in pending:
        if not select.select([0], [], [], timeout)[0]:
            return None
        chunk = os.read(0, 65536)
        if not chunk:
            return ""
        pending += chunk
    line, _, pending = pending.partition(b"\n")
    return line.decode()


def say(**message):
    os.write(1, (json.dumps(message) + "\n").encode())


def child(command):
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, path in ((1, command["out"]), (2, command["err"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = ["qdrant_xai", *command["argv"]]
        try:
            runpy.run_module("qdrant_xai", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


say(ready=True)
while True:
    line = read_line(None)
    if not line:
        break
    if line == "kill":  # arrived after its child had finished
        continue
    command = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(command)
    say(pid=pid)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        line = read_line(0.002)
        if line is None:
            continue
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if line == "":
            sys.exit(0)
        break
    say(rc=os.waitstatus_to_exitcode(status))
"""


class ForkServer:
    """Test side of the fork server: start a CLI run, wait for it, kill it."""

    def __init__(self, workdir: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        self._log = (workdir / "fork-server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=workdir,
            env=env,
        )
        self._pending = b""
        self._expect("ready", timeout=RUN_TIMEOUT)

    def _message(self, timeout: float) -> dict[str, Any] | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the fork server died (rc {self.process.poll()})")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def _expect(self, key: str, *, timeout: float) -> Any:
        message = self._message(timeout)
        if message is None or key not in message:
            raise RuntimeError(f"fork server: expected {key!r} within {timeout} s, got {message}")
        return message[key]

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def start(self, argv: list[str], out: Path, err: Path) -> int:
        """Forks a run of ``python -m qdrant_xai *argv``; returns its pid."""
        self._send(json.dumps({"argv": argv, "out": str(out), "err": str(err)}))
        pid: int = self._expect("pid", timeout=30)
        return pid

    def exit_code(self, timeout: float = 0.0) -> int | None:
        """The run's exit code (negative: killed by that signal), or None while it runs."""
        message = self._message(timeout)
        return None if message is None else int(message["rc"])

    def kill(self) -> None:
        """SIGKILLs the current run (a no-op if it has just finished)."""
        self._send("kill")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


@pytest.fixture(scope="session")
def fork_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    """One fork server for the indexing and the backfill kill tests (its start, importing
    torch and transformers, takes most of a run's time)."""
    if not hasattr(os, "fork"):
        pytest.skip("the kill tests fork their CLI runs (POSIX only)")
    server = ForkServer(tmp_path_factory.mktemp("fork-server"))
    yield server
    server.close()


# -- one run ------------------------------------------------------------------------------


@dataclass
class Run:
    """One CLI run: when it was killed (if it was) and what it left on disk."""

    rc: int
    seconds: float
    trigger: str  # "none", "time" or "write"
    before: int  # progress on disk when it started (points, or points with features)
    on_disk: int  # progress on disk when it ended
    first_write: float | None = None  # seconds to the first new point on disk (if watched)
    stdout: str = ""
    stderr: str = ""

    @property
    def killed(self) -> bool:
        return self.rc == -signal.SIGKILL


def drive(
    server: ForkServer,
    argv: list[str],
    logs: Path,
    progress: Callable[[], int],
    *,
    kill_after: float | None = None,
    kill_at_progress: int | None = None,
    watch: bool = False,
) -> Run:
    """Runs the CLI once; kills it ``kill_after`` seconds after its start, or as soon as
    ``progress()`` (read from the storage) reaches ``kill_at_progress``."""
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / "stdout.txt", logs / "stderr.txt"
    before = progress()
    start = time.monotonic()
    server.start(argv, out, err)
    trigger, first_write, rc, next_poll = "none", None, None, 0.0
    while rc is None:
        elapsed = time.monotonic() - start
        if elapsed > RUN_TIMEOUT:
            server.kill()
            server.exit_code(timeout=30)
            pytest.fail(f"CLI run {argv[0]} did not finish in {RUN_TIMEOUT} s: {err.read_text()}")
        if kill_after is not None and elapsed >= kill_after and trigger == "none":
            server.kill()
            trigger = "time"
        # reading the storage delays the writer's commits: poll sparingly, stop when done
        polling = kill_at_progress is not None or (watch and first_write is None)
        if polling and trigger == "none" and elapsed >= next_poll:
            next_poll = elapsed + (POLL_WATCH if kill_at_progress is None else POLL_KILL)
            now = progress()
            if first_write is None and now > before:
                first_write = elapsed
            if kill_at_progress is not None and now >= kill_at_progress:
                server.kill()
                trigger = "write"
        rc = server.exit_code(timeout=0.005)
    seconds = time.monotonic() - start
    return Run(
        rc=rc,
        seconds=seconds,
        trigger=trigger if rc == -signal.SIGKILL else "none",
        before=before,
        on_disk=progress(),
        first_write=first_write,
        stdout=out.read_text(encoding="utf-8", errors="replace"),
        stderr=err.read_text(encoding="utf-8", errors="replace"),
    )


# -- the kill loop ------------------------------------------------------------------------


@dataclass
class KillLog:
    """What the kill loop did, for the figures and for failure messages."""

    runs: list[Run] = field(default_factory=list)
    moments: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(run.killed for run in self.runs)

    @property
    def write_kills(self) -> int:
        return sum(run.killed and run.trigger == "write" for run in self.runs)

    def with_work_left(self, total: int) -> int:
        """Kills of a run that had points left to write."""
        return sum(run.killed and run.before < total for run in self.runs)


def kill_loop(
    server: ForkServer,
    argv: list[str],
    logs: Path,
    *,
    kills: int,
    rng: random.Random,
    progress: Callable[[], int],
    total: int,
    reference: Run,
    after_kill: Callable[[Run], None],
    batch: int,
) -> KillLog:
    """Runs and kills the CLI until ``kills`` runs were killed.

    The kill moments are drawn once (seeded) as points of the whole job, ``kills`` sorted
    uniform fractions of its work, so they spread over it: a run is killed when it should
    reach its point (startup, then the work in between at twice the pace measured so far:
    the uninterrupted reference run, then the fastest killed run), before the run's
    expected end; when the job is already past its point, at a random moment of the run's
    startup.
    Every third kill (the first included) instead waits for the storage to show 1 to
    ``2 * batch`` new points (``batch``: the runs' batch size), so it lands while a batch
    is being written.
    """
    log = KillLog()
    startup = reference.first_write or 0.0
    # seconds per point, taken twice as fast as measured: runs on a busy machine vary that
    # much, and a kill aimed too late finds the job done (then the pace is halved again)
    pace = 0.5 * max(reference.seconds - startup, 0.0) / max(total, 1)
    cuts = sorted(0.9 * rng.random() for _ in range(kills))  # a margin for timing noise
    while log.kills < kills:
        if len(log.runs) >= 4 * kills:
            pytest.fail(f"{kills} kills not reached in {len(log.runs)} runs: {log.moments}")
        logs_of_run = logs / f"run-{len(log.runs)}"
        done = progress()
        left = max(total - done, 0)
        ahead = cuts[log.kills] * total - done
        if log.kills % 3 == 0 and left > 0:
            target = done + min(rng.randint(1, 2 * batch), left)
            run = drive(server, argv, logs_of_run, progress, kill_at_progress=target)
            moment = f"{run.seconds:.2f} s at new point {target - done}"
        elif ahead > 0:
            run = drive(server, argv, logs_of_run, progress, kill_after=startup + ahead * pace)
            moment = f"{run.seconds:.2f} s aimed at {cuts[log.kills]:.0%} of the job"
            if run.killed and run.on_disk > done and run.seconds > startup:
                pace = min(pace, 0.5 * (run.seconds - startup) / (run.on_disk - done))
            elif run.rc == 0:
                pace /= 2
        else:
            kill_after = rng.random() * startup
            run = drive(server, argv, logs_of_run, progress, kill_after=kill_after)
            moment = f"{run.seconds:.2f} s in the startup"
        log.runs.append(run)
        if run.killed:
            log.moments.append(f"{moment} ({run.on_disk - done:+d} on disk)")
            after_kill(run)
        elif run.rc == 0:
            log.moments.append(f"{moment} (finished first)")
        else:
            pytest.fail(f"CLI run failed with rc {run.rc}:\n{run.stdout}\n{run.stderr}")
    return log
