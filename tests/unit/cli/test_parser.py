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
HELPERS = {"options", "output", "endings", "engine"}


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


# -- layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["search x", "explain 1 --text x", "backfill", "inspect c"])
def test_layout_is_detected_unless_named(command: str) -> None:
    from qdrant_xai.cli.options import layout_from_args

    args = build_parser().parse_args(command.split())
    assert args.layout == "auto" and layout_from_args(args) == "auto"
    args = build_parser().parse_args([*command.split(), "--layout", "llamaindex"])
    assert layout_from_args(args) == "llamaindex"


def test_custom_layout_flags_build_one_layout() -> None:
    from qdrant_xai.cli.options import layout_from_args
    from qdrant_xai.storage.layouts import CollectionLayout

    parser = build_parser()
    argv = ["search", "x", "--vector", "", "--image-key", "meta.img", "--image-key", "img"]
    layout = layout_from_args(parser.parse_args([*argv, "--text-key", "body"]))
    assert isinstance(layout, CollectionLayout)
    assert (layout.name, layout.image_vector, layout.text_vector) == ("custom", "", "")
    assert (layout.image_keys, layout.text_keys) == (("meta.img", "img"), ("body",))
    on_preset = layout_from_args(
        parser.parse_args(["backfill", "--layout", "langchain", "--vector", "dense"])
    )
    assert isinstance(on_preset, CollectionLayout)
    assert on_preset.using("image") == "dense" and on_preset.text_keys == ("page_content",)
    assert layout_from_args(argparse.Namespace(layout=on_preset)) is on_preset


def test_a_bad_custom_layout_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    from qdrant_xai.cli import main

    assert main(["search", "x", "--text-key", ".body"]) == 2
    assert "--text-key" in capsys.readouterr().err


def test_every_layout_and_inspect_option_is_described() -> None:
    (action,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    inspect = action.choices["inspect"]
    assert [a.dest for a in inspect._actions if not a.option_strings] == ["collection"]
    assert "collection" not in [a.dest for a in inspect._actions if a.option_strings]
    for action_ in inspect._actions:
        assert action_.help, action_.dest
    args = inspect.parse_args(["docs", "--sample", "5", "--json", "--no-model"])
    assert (args.collection, args.sample, args.json, args.no_model) == ("docs", 5, True, True)
    with pytest.raises(SystemExit):
        inspect.parse_args(["docs", "--sample", "0"])
    layout_flags = {"--layout", "--vector", "--image-key", "--text-key"}
    for name in ("search", "explain", "backfill"):
        for action_ in action.choices[name]._actions:
            if layout_flags & set(action_.option_strings):
                assert action_.help, (name, action_.dest)


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "x", "--limit", "0"],
        ["search", "x", "--limit", "-1"],
        ["index", "imgs", "--batch-size", "0"],
        ["backfill", "--batch-size", "zero"],
        ["backfill", "--max-points", "0"],
        ["search", "x", "--threads", "0"],
        ["eval", "data", "--max-images", "-3"],
    ],
)
def test_counts_below_one_are_argument_errors_not_tracebacks(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "must be a whole number of at least 1" in err and "Traceback" not in err
