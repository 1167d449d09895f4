"""Bad images through the command line, run as a user file permissions apply to.

``python -m qdrant_xai index`` over the corpus of :mod:`tests.hardening.bad_corpus`, twice,
as a process without the permission-bypass capabilities (root reads ``chmod 000`` files),
so unreadable files and folders are real: each bad file is listed once with its reason,
the exit status is 0 (partial success is success), the second run changes nothing. A
missing folder is exit status 1.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image
from qdrant_client import QdrantClient

from tests.hardening._bad_images import (
    FAMILY,
    HANG_SECONDS,
    check_refusals,
    duplicate_points,
    folder_failures,
    note_kinds,
    permissions_apply,
    points_by_id,
    source_of,
)
from tests.hardening.bad_corpus import build_corpus

pytestmark = [pytest.mark.hardening, pytest.mark.slow]

NOBODY = 65534


Runner = tuple[list[str], int | None, str]  # command prefix, uid to run as, description

PROBE = """
import importlib.util, sys
if importlib.util.find_spec("qdrant_xai") is None:
    sys.exit(3)
try:
    open(sys.argv[1])
except PermissionError:
    sys.exit(7)
"""


def unprivileged(work: Path, env: dict[str, str]) -> Runner | str:
    """A way to run the CLI that file permissions apply to, found by trying; else why not.

    Tried in order: this process's own user when permissions apply to it; uid 65534
    (nobody), which needs the interpreter and the package readable by everyone; root
    without the capabilities that bypass permissions (``setpriv``).
    """
    ways: list[Runner] = []
    if permissions_apply(work):
        ways.append(([], None, f"uid {os.geteuid()}"))
    if os.geteuid() == 0:
        ways.append(([], NOBODY, f"uid {NOBODY} (nobody)"))
        setpriv = shutil.which("setpriv")
        if setpriv:
            drop = "--bounding-set=-dac_override,-dac_read_search"
            ways.append(([setpriv, drop, "--"], None, "root without CAP_DAC_OVERRIDE (setpriv)"))
    probe = work / "locked-probe.png"
    probe.write_bytes(b"x")
    probe.chmod(0)
    reasons = []
    for prefix, user, how in ways:
        try:
            done = subprocess.run(
                [*prefix, sys.executable, "-c", PROBE, str(probe)],
                user=user,
                env=env,
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            reasons.append(f"{how}: {exc}")
            continue
        if done.returncode == 7:
            return prefix, user, how
        reasons.append(f"{how}: exit {done.returncode}, {done.stderr.decode()[-200:]!r}")
    return "; ".join(reasons) or "no way to run without the permission bypass"


def run_cli(
    command: list[str], user: int | None, env: dict[str, str]
) -> tuple[int, str, list[tuple[str, str]], str]:
    """Exit status, summary line, skipped ``(source, reason)`` and stdout of one CLI run."""
    done = subprocess.run(command, user=user, env=env, capture_output=True, timeout=HANG_SECONDS)
    out, err = done.stdout.decode("utf-8"), done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err[-3000:]
    lines = out.splitlines()
    head = next((line for line in lines if line.startswith("indexed ")), "")
    assert head, f"no summary (exit {done.returncode}): {out[-1000:]} {err[-2000:]}"
    skipped = []
    for line in lines:
        match = re.fullmatch(r"  skipped (.*?): (.*)", line)
        if match:
            skipped.append((match.group(1), match.group(2)))
    return done.returncode, head, skipped, out


def test_cli_lists_each_skipped_file_with_its_reason(tiny_model_dir: Path, figures) -> None:
    """``python -m qdrant_xai index`` over the corpus, twice, as a user file permissions
    apply to (root reads ``chmod 000`` files), so unreadable files and folders are real."""
    with tempfile.TemporaryDirectory(prefix="qdrant-xai-bad-") as tmp:
        work = Path(tmp).resolve()
        work.chmod(0o755)  # pytest's tmp_path is private to this user
        home, store, model = work / "home", work / "qdrant", work / "model"
        home.mkdir()
        store.mkdir()
        shutil.copytree(tiny_model_dir, model)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HF_HOME": str(home / "hf"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "PYTHONIOENCODING": "utf-8",
            "LANG": "C.UTF-8",
        }
        runner = unprivileged(work, env)
        unreadable = isinstance(runner, tuple)
        prefix, user, how = runner if isinstance(runner, tuple) else ([], None, "this user")
        if user is not None:
            for path in (home, store):
                os.chown(path, user, user)
        if not unreadable:
            figures.record(FAMILY, "unreadable kinds skipped because", runner)

        root = work / "corpus"
        entries = build_corpus(root, unreadable=unreadable)
        locked_dir = root / "locked-dir"
        if unreadable:
            locked_dir.mkdir()
            (locked_dir / "hidden.png").write_bytes(_png())
            locked_dir.chmod(0)
        command = [*prefix, sys.executable, "-m", "qdrant_xai", "index", str(root)]
        command += ["--path", str(store), "--collection", "bad", "--model", str(model)]
        command += ["--no-progress", "--batch-size", "8"]

        start = time.perf_counter()
        code1, head1, skipped1, out = run_cli(command, user, env)
        code2, head2, skipped2, _ = run_cli(command, user, env)
        seconds = time.perf_counter() - start

        refused = [e for e in entries if e.refused]
        acceptable = len(entries) - len(refused)
        folders = folder_failures(skipped1)
        images_skipped = [item for item in skipped1 if item not in folders]
        reasons = check_refusals(root, entries, images_skipped)
        if unreadable:
            assert [source for source, _ in folders] == [str(locked_dir)]
            assert "permission denied" in folders[0][1].lower()
            assert "permission denied" in reasons["unreadable"].lower()
        else:
            assert folders == []
        unlisted = {"unreadable-folder"} if unreadable else set()
        note_kinds(figures, {e.kind for e in entries} | unlisted, set(reasons) | unlisted)
        # partial success is success: skipped files are listed, the exit status is 0
        assert code1 == 0 and code2 == 0
        skipped = len(skipped1)
        assert head1 == f"indexed {acceptable} images and 0 texts; 0 unchanged; {skipped} skipped"
        assert head2 == f"indexed 0 images and 0 texts; {acceptable} unchanged; {skipped} skipped"
        assert sorted(skipped2) == sorted(skipped1)
        assert acceptable + len(images_skipped) == len(entries)
        for entry in refused:
            assert f"  skipped {source_of(root, entry)}: " in out
        assert "/caf\\xe9.png: " in out and "/d\\xe9j\\xe0/inner.png: " in out  # printable

        client = QdrantClient(path=str(store))
        try:
            points = points_by_id(client, "bad")
            dupes = duplicate_points(client, "bad", points)
        finally:
            client.close()
        assert len(points) == acceptable and dupes == 0
        if unreadable:
            locked_dir.chmod(0o755)  # so that it can be removed

    figures.record(FAMILY, "CLI run as", how)
    figures.record(FAMILY, "files in corpus (CLI run)", len(entries) + int(unreadable))
    figures.record(FAMILY, "refused (CLI run)", skipped)
    figures.record(FAMILY, "indexed (CLI run)", acceptable)
    figures.record(FAMILY, "CLI exit status (both runs)", f"{code1}, {code2}")
    figures.add(FAMILY, "duplicate points", dupes)
    figures.record(FAMILY, "time of the two CLI runs (s)", round(seconds, 2))


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 24), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def test_cli_on_a_missing_folder_fails_with_exit_status_1(
    tmp_path: Path, tiny_model_dir: Path, capsys
) -> None:
    from qdrant_xai.cli import main

    missing = tmp_path / "nope"
    args = ["--path", str(tmp_path / "q"), "--model", str(tiny_model_dir), "--no-progress"]
    code = main(["index", str(missing), *args])
    assert code == 1
    assert "not a directory" in capsys.readouterr().err
