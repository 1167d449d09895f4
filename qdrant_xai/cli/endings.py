"""How a command ends when it does not finish: one line on stderr and a documented status.

- Ctrl-C (SIGINT) and SIGTERM raise :class:`Interrupted` (a ``KeyboardInterrupt``) while a
  command runs (:class:`StopSignals`), so an interrupted command unwinds like any other:
  Qdrant's client is closed (the embedded folder's lock released, its sqlite files closed)
  and one line says what was written (:class:`WriteTally`) and how to resume. Exit status
  :data:`EXIT_INTERRUPTED` (130) or :data:`EXIT_TERMINATED` (143), as a shell reports a
  process ended by that signal.
- Failures the user can act on (a full disk, an unreachable server, any error of the
  package, a file that cannot be read or written) are one line each (:func:`error_line`);
  anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "Interrupted",
    "StopSignals",
    "WriteTally",
    "close_progress_bars",
    "error_line",
    "interrupted_line",
]

#: exit status after Ctrl-C (128 + SIGINT)
EXIT_INTERRUPTED = 128 + signal.SIGINT
#: exit status after SIGTERM (128 + SIGTERM)
EXIT_TERMINATED = 128 + signal.SIGTERM

_STOPS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGINT or SIGTERM arrives while a command runs.

    Attributes:
        signum: the signal received.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While entered (in the main thread), SIGINT and SIGTERM raise :class:`Interrupted`;
    inside :meth:`deferred` they are held until its end, so cleanup (closing Qdrant's
    client) is not cut short by a second Ctrl-C. A signal the process inherited as ignored
    (a background job, ``nohup``) stays ignored; the previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.received: int | None = None  # the first stop signal received
        self._previous: dict[int, Any] = {}
        self._deferring = False
        self._held: int | None = None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are delivered to the main thread only
        for signum in _STOPS:
            current = signal.getsignal(signum)
            if current is signal.SIG_IGN:
                continue
            self._previous[signum] = current
            signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._deferring:
            self._held = self._held or signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Holds SIGINT and SIGTERM inside; one that arrived is raised at the end, unless
        the command was already interrupted (then it is the same stop, asked twice)."""
        already = self.received
        self._deferring, self._held = True, None
        try:
            yield
        finally:
            self._deferring = False
        if self._held is not None and already is None:
            raise Interrupted(self._held)


class WriteTally:
    """Counts the points a command wrote, as Qdrant confirmed them: :meth:`watch` wraps the
    client's ``upsert`` and ``batch_update_points`` (every write of the indexer, the
    backfill and the sidecar), and counts each call's points once it returned (a write cut
    short by an interrupt is not counted, whatever of it landed)."""

    def __init__(self) -> None:
        self.images = 0
        self.texts = 0
        self.points = 0  # every point written (or whose payload was set)
        self.writing = False  # a write was under way (part of it may have landed)

    def watch(self, client: Any) -> None:
        for name in ("upsert", "batch_update_points"):
            method = getattr(client, name, None)
            if callable(method):
                setattr(client, name, self._counting(method, name))

    def _counting(self, method: Any, name: str) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.writing = True
            result = method(*args, **kwargs)
            self.writing = False
            if name == "upsert":
                self._count(kwargs.get("points", args[1] if len(args) > 1 else None))
            else:
                operations = kwargs.get("update_operations", args[1] if len(args) > 1 else ())
                for operation in operations or ():
                    upsert = getattr(operation, "upsert", None)
                    set_payload = getattr(operation, "set_payload", None)
                    if upsert is not None:
                        self._count(getattr(upsert, "points", None))
                    elif set_payload is not None:
                        self.points += len(getattr(set_payload, "points", None) or ())
            return result

        return counted

    def _count(self, points: Any) -> None:
        from qdrant_xai.storage.schema import PayloadKeys

        if not isinstance(points, list):  # a Batch: columns, no kinds
            self.points += len(getattr(points, "ids", None) or ())
            return
        for point in points:
            kind = (getattr(point, "payload", None) or {}).get(PayloadKeys.KIND)
            self.images += kind == "image"
            self.texts += kind == "text"
            self.points += 1


def close_progress_bars() -> None:
    """Ends the progress bars an unfinished command left on stderr (each keeps its last
    state on its own line), so that the ending starts a line of its own."""
    std = sys.modules.get("tqdm.std")  # no bar was drawn if tqdm was never imported
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", ())):
        with contextlib.suppress(Exception):
            bar.close()


def interrupted_line(exc: KeyboardInterrupt, command: str | None, tally: WriteTally) -> str:
    """The one line an interrupted ``command`` ends with: what it wrote and how to resume."""
    signum = getattr(exc, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    head = "interrupted" if signum == signal.SIGINT else f"interrupted ({name})"
    if command == "index":
        done = _done(tally, f"{tally.images} images and {tally.texts} captions written")
        return (
            f"{head}: {done}; run the same command again to resume (images and captions "
            "already written are skipped)"
        )
    if command == "backfill":
        done = _done(tally, f"features of {tally.points} points written")
        return (
            f"{head}: {done}; run the same command again to resume (points with current "
            "features are skipped)"
        )
    return head


def _done(tally: WriteTally, written: str) -> str:
    if not tally.points:
        return "stopped while writing the first batch" if tally.writing else "nothing written yet"
    return f"{written} (and part of the next batch)" if tally.writing else written


def exit_status(exc: KeyboardInterrupt) -> int:
    """130 after Ctrl-C, 143 after SIGTERM."""
    return EXIT_TERMINATED if getattr(exc, "signum", None) == signal.SIGTERM else EXIT_INTERRUPTED


def error_line(exc: Exception, args: argparse.Namespace | None) -> str | None:
    """The one line (without ``error: ``) for an error the user can act on, or ``None`` for
    one that is a bug (its traceback is then shown): a full disk anywhere (naming the file
    or Qdrant's storage), Qdrant unreachable or refusing a request, any error of the
    package, a file that cannot be read or written."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    from qdrant_xai.errors import QdrantXaiError
    from qdrant_xai.files import disk_full_error

    full = disk_full_error(exc, _written(exc, args))
    if full is not None:
        return str(full)
    if isinstance(exc, QdrantXaiError):
        return str(exc)
    if isinstance(exc, ResponseHandlingException | UnexpectedResponse):
        return f"the Qdrant request failed ({_storage(args)}): {exc}"
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot use{where}: {exc.strerror or exc}"
    return None


def _written(exc: BaseException, args: argparse.Namespace | None) -> str:
    """What a disk-full ``exc`` failed to write: the file it names, else Qdrant's storage."""
    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, OSError) and link.filename:
            return str(link.filename)
        link = link.__cause__ or link.__context__
    return _storage(args)


def _storage(args: argparse.Namespace | None) -> str:
    from qdrant_xai.cli.options import DEFAULT_PATH
    from qdrant_xai.connection import strip_userinfo

    url = getattr(args, "url", None)
    path = getattr(args, "path", None)
    if url and path is None:
        return f"the Qdrant server at {strip_userinfo(url)}"
    return f"the embedded Qdrant folder {path or DEFAULT_PATH}"
