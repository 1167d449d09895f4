"""The ``qdrant-xai`` command line: index, search, explain, serve, backfill, inspect, eval,
demo.

Each subcommand is one module of this package, named after it, with ``add_parser(subparsers)``
(its arguments), ``run(args, client) -> exit status`` and ``NEEDS_CLIENT`` (whether
:func:`main` opens Qdrant for it); adding a subcommand is adding a module and its name to
:data:`COMMANDS`. Shared options and the builders of client, encoder and explainer are in
:mod:`.options`, printing of hits in :mod:`.output`.

Parsing loads no model code: ``--help`` and argument errors answer without importing torch
or transformers; each command imports what it needs when it runs.

Every ending is one line on stderr (:mod:`.endings`): an error the user can act on (exit
1; argument errors 2), a full disk (:class:`~qdrant_xai.DiskFullError`, exit 1), Ctrl-C
(exit 130) or SIGTERM (exit 143) with what was written and how to resume. The options (and
qdrant-client) are imported once :func:`main` holds the stop signals, so an early Ctrl-C
ends in one line too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from qdrant_xai.cli.endings import (
    StopSignals,
    WriteTally,
    close_progress_bars,
    exit_status,
    interrupted_line,
)

__all__ = ["COMMANDS", "build_parser", "main"]

#: the subcommands, in the order ``--help`` lists them; each is the module of that name
COMMANDS = ("index", "search", "explain", "serve", "backfill", "inspect", "eval", "demo")

_EPILOG = """\
Qdrant: embedded at --path (default ./qdrant_data) unless --url or QDRANT_URL is set; the
API key is read from QDRANT_API_KEY. Requests to a server are retried with backoff when it
is unreachable or busy (--retries, --timeout); the API key is never printed. --model takes a
Hugging Face hub id (weights download on first use), a directory saved with save_pretrained,
or "shapes" for the bundled demo model. Collections written by LangChain, LlamaIndex,
FastEmbed / mcp-server-qdrant or Qdrant's multimodal tutorial are read where their writer
keeps vectors, images and texts, detected unless --layout (or --vector, --image-key,
--text-key) says otherwise; `qdrant-xai inspect COLLECTION` shows what was found.

examples:
  qdrant-xai demo
  qdrant-xai index photos/ --captions photos/captions.csv --collection photos
  qdrant-xai search "a dog on a beach" --collection photos --explain --html report.html
  qdrant-xai search --image query.jpg --collection photos --explain --json
  qdrant-xai serve --collection photos --image-root photos/      # then open the printed URL
  qdrant-xai search "a red car" --collection photos --explain --method grad-eclip \\
      --grounding --rationales --image-root photos/
  qdrant-xai explain 1b9d6bcd-bbfd-5b2d-9b5d-ab8dfbbd4bed --text "a dog" --collection photos
  qdrant-xai inspect products --image-root /data/images
  qdrant-xai backfill --collection products --image-root /data/images
  qdrant-xai search "a red car" --collection docs --vector '' --text-key page_content
  qdrant-xai eval Flickr8k/ --split test --model openai/clip-vit-base-patch32 --json eval.json

Ctrl-C or SIGTERM stops a command with one line (exit 130 or 143); index and backfill
resume where they stopped when run again.
"""


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


class _Parser(argparse.ArgumentParser):
    """An argument error in two lines (the usage in short, then the error), not the whole
    usage of a command with thirty options; ``--help`` shows them all."""

    def error(self, message: str) -> NoReturn:
        positionals = " ".join(
            f"[{a.metavar or a.dest}]" if a.nargs == "?" else str(a.metavar or a.dest)
            for a in self._get_positional_actions()
        )
        self.exit(
            2,
            f"usage: {' '.join(filter(None, [self.prog, '[options]', positionals]))} "
            "(--help lists the options)\n"
            f"{self.prog}: error: {' '.join(message.split())}\n",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qdrant-xai",
        description="Explainable CLIP retrieval for Qdrant: index images and captions, "
        "search them, and see why each hit matched.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        _command(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tally = WriteTally()
    name: list[str] = []  # the command's name, once parsed
    with StopSignals() as stops:
        try:
            return _main(argv, stops, tally, name)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: one line, what was written
            with stops.deferred():
                close_progress_bars()
                line = interrupted_line(exc, name[0] if name else None, tally)
                print(line, file=sys.stderr)
            return exit_status(exc)


def _main(
    argv: Sequence[str] | None, stops: StopSignals, tally: WriteTally, name: list[str]
) -> int:
    from qdrant_xai.cli.endings import error_line
    from qdrant_xai.cli.options import layout_from_args, open_qdrant
    from qdrant_xai.errors import QdrantXaiError

    args = build_parser().parse_args(argv)
    name.append(args.command)
    command = _command(args.command)
    try:
        if hasattr(args, "layout"):  # every command sees one layout: auto, preset or custom
            args.layout = layout_from_args(args)
    except QdrantXaiError as exc:
        _print_error(str(exc))
        return 2
    _show_retries()
    # qdrant-client warns when its version probe gets no answer; a server that does not
    # answer is reported once, clearly, after the retries
    warnings.filterwarnings("ignore", "Failed to obtain server version", UserWarning)
    client = None
    try:
        if command.NEEDS_CLIENT:
            client = open_qdrant(args)
            tally.watch(client)
        status: int = command.run(args, client)
        return status
    except Exception as exc:  # one line (never the API key) for what the user can act on
        line = error_line(exc, args)
        if line is None:
            raise
        close_progress_bars()
        _print_error(line)
        return 1
    finally:
        if client is not None:
            with stops.deferred():  # closed whole: the embedded folder's lock released
                client.close()


def _print_error(message: str) -> None:
    """``error: message`` on one line of stderr, the API key replaced by ``***``."""
    from qdrant_xai.connection import redact

    message = redact(message, secrets=(os.environ.get("QDRANT_API_KEY"),))
    print(f"error: {' '.join(message.split())}", file=sys.stderr)


def _show_retries() -> None:
    """Prints each retry of a Qdrant request to stderr (``retrying: ...``), so a user
    waiting on a busy or restarting server sees why; the final error follows if they fail."""
    import logging

    class ToStderr(logging.Handler):  # the sys.stderr of the moment, not of the first call
        def emit(self, record: logging.LogRecord) -> None:
            print(f"retrying: {record.getMessage()}", file=sys.stderr)

    retries = logging.getLogger("qdrant_xai.retry")
    if not any(type(h).__name__ == "ToStderr" for h in retries.handlers):
        retries.addHandler(ToStderr())
    retries.setLevel(logging.INFO)
