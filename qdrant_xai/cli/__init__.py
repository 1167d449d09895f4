"""The ``qdrant-xai`` command line: index, search, explain, backfill, inspect, eval, demo.

Each subcommand is one module of this package, named after it, with ``add_parser(subparsers)``
(its arguments), ``run(args, client) -> exit status`` and ``NEEDS_CLIENT`` (whether
:func:`main` opens Qdrant for it); adding a subcommand is adding a module and its name to
:data:`COMMANDS`. Shared options and the builders of client, encoder and explainer are in
:mod:`.options`, printing of hits in :mod:`.output`.

Parsing loads no model code: ``--help`` and argument errors answer without importing torch
or transformers; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from qdrant_xai.cli.options import DEFAULT_PATH, layout_from_args, open_qdrant
from qdrant_xai.errors import QdrantUnavailableError, QdrantXaiError

__all__ = ["COMMANDS", "build_parser", "main"]

#: the subcommands, in the order ``--help`` lists them; each is the module of that name
COMMANDS = ("index", "search", "explain", "backfill", "inspect", "eval", "demo")

_EPILOG = f"""\
Qdrant: embedded at --path (default {DEFAULT_PATH}) unless --url or QDRANT_URL is set; the
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
  qdrant-xai search "a red car" --collection photos --explain --method grad-eclip \\
      --grounding --rationales --image-root photos/
  qdrant-xai explain 1b9d6bcd-bbfd-5b2d-9b5d-ab8dfbbd4bed --text "a dog" --collection photos
  qdrant-xai inspect products --image-root /data/images
  qdrant-xai backfill --collection products --image-root /data/images
  qdrant-xai search "a red car" --collection docs --vector '' --text-key page_content
  qdrant-xai eval Flickr8k/ --split test --model openai/clip-vit-base-patch32 --json eval.json
"""


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    args = build_parser().parse_args(argv)
    command = _command(args.command)
    try:
        if hasattr(args, "layout"):  # every command sees one layout: auto, preset or custom
            args.layout = layout_from_args(args)
    except QdrantXaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    from qdrant_xai.connection import strip_userinfo

    _show_retries()
    # qdrant-client warns when its version probe gets no answer; a server that does not
    # answer is reported once, clearly, after the retries
    warnings.filterwarnings("ignore", "Failed to obtain server version", UserWarning)
    try:
        if not command.NEEDS_CLIENT:
            return command.run(args, None)
        client = open_qdrant(args)
        try:
            return command.run(args, client)
        finally:
            client.close()
    except QdrantUnavailableError as exc:  # after the retries: one line, never the API key
        _print_error(str(exc))
        return 1
    except QdrantXaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ResponseHandlingException, UnexpectedResponse) as exc:
        url = getattr(args, "url", None)
        where = strip_userinfo(url) if url and getattr(args, "path", None) is None else "embedded"
        _print_error(f"the Qdrant request failed ({where}): {exc}")
        return 1


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
