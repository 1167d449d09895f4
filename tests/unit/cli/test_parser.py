"""The parser: one subcommand per module of ``qdrant_xai.cli``, and the options they share."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import pytest

import qdrant_xai.cli
from qdrant_xai.cli import COMMANDS, build_parser
from qdrant_xai.cli.options import DEFAULT_COLLECTION

#: modules of the package that are not subcommands
HELPERS = {"options", "output"}


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_build_parser_lists_exactly_the_subcommand_modules() -> None:
    modules = {m.name for m in pkgutil.iter_modules(qdrant_xai.cli.__path__)}
    assert modules - set(COMMANDS) == HELPERS
    assert _subcommands(build_parser()) == list(COMMANDS)
    for name in COMMANDS:
        module = importlib.import_module(f"qdrant_xai.cli.{name}")
        assert callable(module.add_parser) and callable(module.run), name
        assert isinstance(module.NEEDS_CLIENT, bool), name
        assert module.__doc__, name


def test_aliases_reach_the_settled_names() -> None:
    parser = build_parser()
    args = parser.parse_args(["search", "x", "--method", "gae", "--target", "text"])
    assert (args.heatmap_method, args.hit_kind) == ("gae", "text")
    args = parser.parse_args(["search", "x", "--heatmap-method", "patch", "--hit-kind", "image"])
    assert (args.heatmap_method, args.hit_kind) == ("patch", "image")
    args = parser.parse_args(["eval", "data", "--method", "occlusion"])
    assert args.heatmap_method == "occlusion"


@pytest.mark.parametrize("command", ["index", "search", "backfill"])
def test_collection_defaults(command: str) -> None:
    argv = {"index": ["index", "dir"], "search": ["search", "x"], "backfill": ["backfill"]}
    assert build_parser().parse_args(argv[command]).collection == DEFAULT_COLLECTION


def test_eval_derives_its_collection_name() -> None:
    parser = build_parser()
    assert parser.parse_args(["eval", "data"]).collection is None
    assert parser.parse_args(["eval", "data", "--collection", "c"]).collection == "c"
