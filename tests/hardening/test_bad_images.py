"""Bad images: a generated corpus of broken, hostile and unusual files, indexed whole.

Every bad file must be reported once with a reason naming its problem, every other file
indexed with decodable features, nothing may crash or hang the run, the counts must add up,
and a second run must change nothing. The corpus is in :mod:`bad_corpus`.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient

from qdrant_xai import ClipEncoder, ImageLoadError, load_image
from qdrant_xai.images.load import iter_image_files
from qdrant_xai.storage.codec import PayloadFeatureCodec
from qdrant_xai.storage.indexer import Indexer, IndexSummary
from qdrant_xai.storage.schema import IMAGE_VECTOR, PayloadKeys, image_point_id
from tests.hardening.bad_corpus import FIRST_FRAME, Entry, build_corpus, mutation_seeds

pytestmark = pytest.mark.hardening

FAMILY = "bad-images"
NOBODY = 65534
HANG_SECONDS = 60  # a run over the corpus takes a few seconds; longer means it hangs


# -- helpers ----------------------------------------------------------------------------


class Hung(BaseException):
    """Raised in the test when a call hangs; a BaseException, so no handler can swallow it
    (``TimeoutError`` is an ``OSError``, which the loader turns into a refusal)."""


@contextmanager
def no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fails instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def expired(signum: int, frame: object) -> None:
        raise Hung(f"hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def source_of(root: Path, entry: Entry) -> str:
    """The point source (or failure label) the indexer uses for ``entry``."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(root), entry.rel)))
    try:
        source = str(path.resolve(strict=True))
    except (OSError, RuntimeError):  # broken symlink, symlink loop
        source = str(path.absolute())
    return source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def failures_by_source(summary_failed: list[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for source, reason in summary_failed:
        found.setdefault(source, []).append(reason)
    return found


def check_refusals(
    root: Path, entries: list[Entry], failed: list[tuple[str, str]]
) -> dict[str, str]:
    """Every refused entry reported exactly once with one of its words; nothing else.

    Returns the reason of each refused kind.
    """
    by_source = failures_by_source(failed)
    reasons: dict[str, str] = {}
    for entry in (e for e in entries if e.refused):
        source = source_of(root, entry)
        got = by_source.pop(source, [])
        assert len(got) == 1, f"{entry.kind} ({source}) reported {len(got)} times: {got}"
        reason = got[0].lower()
        assert any(word in reason for word in entry.words), (
            f"{entry.kind}: reason {got[0]!r} names none of {entry.words}"
        )
        reasons[entry.kind] = got[0]
    assert not by_source, f"reported but acceptable: {by_source}"
    return reasons


def points_by_id(client: QdrantClient, collection: str) -> dict[str, dict]:
    points, offset = [], None
    while True:
        page, offset = client.scroll(
            collection, limit=256, offset=offset, with_payload=True, with_vectors=True
        )
        points += page
        if offset is None:
            break
    ids = [str(p.id) for p in points]
    assert len(ids) == len(set(ids))
    return {str(p.id): {"payload": p.payload or {}, "vector": p.vector} for p in points}


def duplicates(points: dict[str, dict]) -> int:
    """Points beyond the first for any image source (an image written twice)."""
    sources = Counter(p["payload"].get(PayloadKeys.SOURCE) for p in points.values())
    return sum(n - 1 for n in sources.values())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def embedding(encoder: ClipEncoder, image: Image.Image) -> np.ndarray:
    return encoder.encode_images([image.convert("RGB")])[0].embedding


def check_indexed(
    root: Path,
    entries: list[Entry],
    points: dict[str, dict],
    encoder: ClipEncoder,
) -> None:
    """Every acceptable entry has its point: right fingerprint, decodable features, size."""
    codec = PayloadFeatureCodec("fp16")
    key = encoder.fingerprint.key
    for entry in (e for e in entries if not e.refused):
        source = source_of(root, entry)
        point = points.get(image_point_id(source))
        assert point is not None, f"{entry.kind} ({source}) was not indexed"
        payload = point["payload"]
        assert payload[PayloadKeys.SOURCE] == source
        assert payload[PayloadKeys.FINGERPRINT] == key, entry.kind
        features = codec.decode(payload[PayloadKeys.FEATURES], fingerprint=key)
        assert features.shape == (*encoder.grid, encoder.dim), entry.kind
        assert np.isfinite(features).all(), entry.kind
        assert (payload[PayloadKeys.WIDTH], payload[PayloadKeys.HEIGHT]) == entry.size, entry.kind


def check_unusual_pixels(
    root: Path, entries: list[Entry], points: dict[str, dict], encoder: ClipEncoder
) -> None:
    """The animated GIF is indexed from its first frame, the EXIF rotation is applied."""
    paths = {e.kind: Path(source_of(root, e)) for e in entries}

    def stored(kind: str) -> np.ndarray:
        vector = points[image_point_id(str(paths[kind]))]["vector"][IMAGE_VECTOR]
        return np.asarray(vector, dtype=np.float32)

    gif = stored("animated-gif")
    first = embedding(encoder, Image.new("RGB", (40, 24), FIRST_FRAME))
    later = embedding(encoder, Image.new("RGB", (40, 24), (0, 0, 200)))
    assert cosine(gif, first) > 0.999
    assert cosine(gif, first) > cosine(gif, later) + 1e-3

    rotated = stored("exif-rotated-jpeg")
    with Image.open(paths["exif-rotated-jpeg"]) as raw:
        raw.load()
        upright = raw.transpose(Image.Transpose.ROTATE_270)
        as_stored = raw.copy()
    assert upright.size == (24, 40) and as_stored.size == (40, 24)
    assert cosine(rotated, embedding(encoder, upright)) > 0.999
    assert cosine(rotated, embedding(encoder, upright)) > cosine(
        rotated, embedding(encoder, as_stored)
    )


def count_points(client: QdrantClient, collection: str) -> int:
    return client.count(collection, exact=True).count


def folder_failures(failed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(s, r) for s, r in failed if r.startswith("cannot list the folder")]


def check_counts(summary: IndexSummary, files: int) -> None:
    images_failed = len(summary.failed) - len(folder_failures(summary.failed))
    assert summary.indexed_images + images_failed + summary.unchanged == files, str(summary)


KINDS: set[str] = set()
REFUSED: set[str] = set()


def note_kinds(figures, kinds: set[str], refused: set[str]) -> None:
    """Records the kinds tried and refused by the tests of this file so far."""
    KINDS.update(kinds)
    REFUSED.update(refused)
    figures.record(FAMILY, "kinds tried", len(KINDS))
    figures.record(FAMILY, "kinds", sorted(KINDS))
    figures.record(FAMILY, "kinds refused", len(REFUSED))
    figures.record(FAMILY, "refused kinds", sorted(REFUSED))
    figures.record(FAMILY, "kinds indexed", sorted(KINDS - REFUSED))


# -- the in-process run -----------------------------------------------------------------


def test_corpus_is_indexed_around_every_bad_file(
    tmp_path: Path, tiny_encoder: ClipEncoder, figures
) -> None:
    root = (tmp_path / "corpus").resolve()
    entries = build_corpus(root, unreadable=permissions_apply(tmp_path))
    files = list(iter_image_files(root))
    assert len(files) == len(entries)  # every file found once, dir.png is not a file
    refused = [e for e in entries if e.refused]
    acceptable = [e for e in entries if not e.refused]

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        indexer = Indexer(client, tiny_encoder, collection_name="bad", batch_size=8)
        crashes = 0
        start = time.perf_counter()
        try:
            with no_hang():
                first = indexer.index_folder(root, progress=False)
        except Exception:
            crashes += 1
            figures.record(FAMILY, "crashes", crashes)
            raise
        seconds = time.perf_counter() - start

        reasons = check_refusals(root, entries, first.failed)
        assert first.indexed_images == len(acceptable)
        assert first.unchanged == 0 and first.indexed_texts == 0
        check_counts(first, len(files))
        points = points_by_id(client, "bad")
        assert len(points) == len(acceptable)
        check_indexed(root, entries, points, tiny_encoder)
        check_unusual_pixels(root, entries, points, tiny_encoder)

        with no_hang():
            second = indexer.index_folder(root, progress=False)
        assert second.indexed_images == 0 and second.indexed_texts == 0
        assert second.unchanged == len(acceptable)
        assert sorted(second.failed) == sorted(first.failed)
        check_counts(second, len(files))
        again = points_by_id(client, "bad")
        assert again.keys() == points.keys()
        dupes = duplicates(again) + count_points(client, "bad") - len(points)
        assert dupes == 0
    finally:
        client.close()

    note_kinds(figures, {e.kind for e in entries}, set(reasons))
    figures.record(FAMILY, "files in corpus (in-process run)", len(files))
    figures.record(FAMILY, "refused (in-process run)", len(refused))
    figures.record(FAMILY, "indexed (in-process run)", first.indexed_images)
    figures.record(FAMILY, "unchanged on the second run", second.unchanged)
    figures.record(FAMILY, "crashes", crashes)
    figures.record(FAMILY, "duplicate points", dupes)
    figures.record(FAMILY, "time of the in-process run (s)", round(seconds, 2))


# -- the command line, as a user file permissions apply to --------------------------------


def permissions_apply(folder: Path) -> bool:
    """Whether this process is refused a ``chmod 000`` file (root is not, by default)."""
    probe = folder / "permission-probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o600)
        probe.unlink()
    return False


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
            dupes = duplicates(points) + count_points(client, "bad") - len(points)
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


# -- mutated files: only ImageLoadError may come out --------------------------------------


def test_mutated_files_load_or_raise_image_load_error(figures) -> None:
    """Random byte flips, cuts and splices of every format (and of EXIF) through load_image:
    each gives an image or an ImageLoadError; warnings are errors here, so none may leak."""
    seeds = mutation_seeds()
    cases = figures.count(FAMILY, "mutated files", reduced=3_000, full=30_000)
    rng = np.random.default_rng(0)
    names = sorted(seeds)
    outcomes: Counter[str] = Counter()
    crashes: list[str] = []
    for i in range(cases):
        name = names[i % len(names)]
        data = _mutate(bytearray(seeds[name]), rng)
        try:
            load_image(data)
            outcomes["loaded"] += 1
        except ImageLoadError:
            outcomes["refused"] += 1
        except Exception as exc:
            crashes.append(f"{name}: {type(exc).__name__}: {exc}")
    figures.record(
        FAMILY,
        "mutated files loaded / refused",
        f"{outcomes['loaded']:,} / {outcomes['refused']:,}",
    )
    figures.record(FAMILY, "mutated files crashing", len(crashes))
    assert not crashes, crashes[:10]


def _mutate(data: bytearray, rng: np.random.Generator) -> bytes:
    op = rng.integers(0, 3)
    if op == 0:  # flip bytes
        for _ in range(rng.integers(1, 10)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
    elif op == 1:  # cut
        data = data[: rng.integers(0, len(data))]
    else:  # splice random bytes in
        at = int(rng.integers(0, len(data)))
        data[at : at + int(rng.integers(1, 64))] = rng.integers(
            0, 256, int(rng.integers(0, 64)), dtype=np.uint8
        ).tobytes()
    return bytes(data)


def test_special_files_are_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO and a device are refused on the open descriptor; the check does not race."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with no_hang(20):
        with pytest.raises(ImageLoadError, match="FIFO"):
            load_image(fifo)
        with pytest.raises(ImageLoadError, match="character device"):
            load_image("/dev/zero")
        with pytest.raises(ImageLoadError, match="directory"):
            load_image(tmp_path)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
