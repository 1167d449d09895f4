"""The output matrix through the command line (issue 14): ``search --explain`` as text lines,
JSON lines and the HTML report, and ``explain POINT --json --html``, for every (query kind,
hit kind) pair on a qdrant-xai collection and on collections langchain-qdrant wrote; hits,
order and scores checked against the plain Qdrant search (see :mod:`._matrix`).

The CLI runs in process (``qdrant_xai.cli.main``); one smoke test runs the real command.
It takes image queries as paths only (``--image PATH``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qdrant_xai import ClipEncoder
from qdrant_xai.cli import main
from qdrant_xai.cli.output import EXIT_PARTIAL
from tests.integration._matrix import (
    LIMIT,
    TEXT_QUERY,
    UNROOTED,
    Case,
    Page,
    World,
    assert_record,
    assert_same_hits,
    build_world,
    cases,
    markup_shown,
    plain_hits,
)

CLI_CASES = cases("text", "path")
_HIT_LINE = re.compile(r"^\s*(\d+)\. (-?\d+\.\d{4})  (\S+)  ")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: ClipEncoder) -> World:
    return build_world(tmp_path_factory.mktemp("matrix-cli"), tiny_encoder)


@pytest.fixture(scope="module")
def plain(world: World, tiny_encoder: ClipEncoder) -> dict[str, list[tuple[str, float]]]:
    """The plain Qdrant search of every case, by case id (read before any CLI run: the
    embedded Qdrant folder is open in one client at a time)."""
    with world.open() as client:
        return {c.id: plain_hits(client, tiny_encoder, world, c) for c in map(_case, CLI_CASES)}


def _case(param: object) -> Case:
    case = param.values[0]  # type: ignore[attr-defined]
    assert isinstance(case, Case)
    return case


def common(world: World, case: Case, model_dir: Path) -> list[str]:
    return [
        *("--path", str(world.qdrant_path), "--collection", case.collection_name()),
        *("--model", str(model_dir), "--image-root", str(world.root)),
    ]


def query_args(world: World, case: Case, *, option: str = "") -> list[str]:
    """The query: positional text for ``search`` (``--text`` for ``explain``), or
    ``--image PATH``."""
    if case.form == "text":
        return [option, TEXT_QUERY] if option else [TEXT_QUERY]
    return ["--image", world.query(case)]


def search_args(world: World, case: Case, model_dir: Path) -> list[str]:
    return [
        "search",
        *query_args(world, case),
        *("--hit-kind", case.hit_kind, "--limit", str(LIMIT), "--explain"),
        *common(world, case, model_dir),
    ]


def run(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize("case", CLI_CASES)
def test_search_explain_text_lines(
    case: Case,
    world: World,
    plain: dict[str, list[tuple[str, float]]],
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = run(capsys, search_args(world, case, tiny_model_dir))
    lines = out.splitlines()
    hits = [m for m in map(_HIT_LINE.match, lines) if m]
    expected = plain[case.id]
    assert [int(m[1]) for m in hits] == list(range(1, len(expected) + 1))
    assert [m[3] for m in hits] == [str(_cli_id(i)) for i, _ in expected]
    assert [m[2] for m in hits] == [f"{s:.4f}" for _, s in expected]
    assert "not explained" not in out
    assert sum("heatmap peak" in line for line in lines) == (len(hits) if case.heatmap else 0)
    assert sum("top words" in line for line in lines) == (len(hits) if case.words else 0)


@pytest.mark.parametrize("case", CLI_CASES)
def test_search_explain_json_lines(
    case: Case,
    world: World,
    plain: dict[str, list[tuple[str, float]]],
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = run(capsys, [*search_args(world, case, tiny_model_dir), "--json"])
    records = [json.loads(line) for line in out.splitlines()]
    assert_same_hits([(r["id"], r["score"]) for r in records], plain[case.id])
    for rank, record in enumerate(records):
        assert record["rank"] == rank
        assert (record["query_kind"], record["hit_kind"]) == (case.query_kind, case.hit_kind)
        assert_record(record, case)


@pytest.mark.parametrize("case", CLI_CASES)
def test_search_explain_html_report(
    case: Case,
    world: World,
    plain: dict[str, list[tuple[str, float]]],
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = tmp_path / "r.html"
    run(capsys, [*search_args(world, case, tiny_model_dir), "--html", str(report)])
    page = Page(report.read_text(encoding="utf-8"))
    hits = len(plain[case.id])
    assert page.hits == hits
    assert not page.shows("not explained") and not page.shows("no overlay")
    assert page.alts.count("heatmap") == (hits if case.heatmap else 0)
    assert (page.words > 0) == case.words
    for point, _ in plain[case.id]:
        assert page.shows(f"id {_cli_id(point)}")
    page.assert_escaped()
    markup = markup_shown(case)
    assert markup is None or page.shows(markup)


@pytest.mark.parametrize("case", CLI_CASES)
def test_explain_point_json_and_html(
    case: Case,
    world: World,
    plain: dict[str, list[tuple[str, float]]],
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The best and the worst hit of the search, each explained on its own, with the
    score the search gave it."""
    expected = plain[case.id]
    for point, score in (expected[0], expected[-1]):
        report = tmp_path / f"{point}.html"
        args = ["explain", str(_cli_id(point)), *query_args(world, case, option="--text")]
        out = run(
            capsys,
            [*args, *common(world, case, tiny_model_dir), "--json", "--html", str(report)],
        )
        (record,) = [json.loads(line) for line in out.splitlines()]
        assert_same_hits([(record["id"], record["score"])], [(point, score)])
        assert record["hit_kind"] == case.hit_kind
        assert_record(record, case)
        page = Page(report.read_text(encoding="utf-8"))
        assert page.hits == 1 and page.alts.count("heatmap") == int(case.heatmap)
        page.assert_escaped()


@pytest.mark.parametrize("case", CLI_CASES)
def test_text_lines_label_each_hit_by_its_own_content(
    case: Case, world: World, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image hit is named by its file (an inline one by anything but the query), a text
    hit by its text: never by the query."""
    records = [
        json.loads(line)
        for line in run(capsys, [*search_args(world, case, tiny_model_dir), "--json"]).splitlines()
    ]
    out = run(capsys, search_args(world, case, tiny_model_dir))
    labels = [line.split("  ", 2)[2] for line in out.splitlines() if _HIT_LINE.match(line)]
    assert len(labels) == len(records)
    for label, record in zip(labels, records, strict=True):
        if case.hit_kind == "text":
            assert label[:20] == " ".join(record["text"].split())[:20]
            continue
        assert label != TEXT_QUERY
        source = record["image_source"] or ""
        if source.startswith("/"):
            assert Path(source).name in label


def test_a_report_without_image_roots_gives_each_unreadable_hit_its_reason(
    world: World, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """LangChain image hits with no ``--image-root``: the inline ones are explained, those
    named by path come with a typed reason (exit status 3), in JSON and in the report, and
    no output quotes a whole inline image."""
    args = ["search", TEXT_QUERY, "--limit", str(LIMIT), "--explain"]
    args += ["--path", str(world.qdrant_path), "--collection", UNROOTED]
    args += ["--model", str(tiny_model_dir)]
    inline = {i.base64()[:60] for i in world.scenes.items}
    for _ in range(2):  # the second run reads the features the first stored in the sidecar
        capsys.readouterr()
        assert main([*args, "--json"]) == EXIT_PARTIAL
        out, err = capsys.readouterr()
        records = [json.loads(line) for line in out.splitlines()]
        assert len(records) == len(world.scenes.items)
        for record in records:
            source = record["image_source"]
            if source.startswith("/"):
                assert record["status"] == "failed" and record["heatmap"] is None
                assert record["error"]["type"] == "FeaturesMissingError"
                assert "--image-root" in record["error"]["message"]
            else:
                assert source[:60] in inline
                assert_record(record, Case("langchain", "text", "image"))
        assert not any(prefix in err for prefix in inline)
        report = tmp_path / "r.html"
        assert main([*args, "--html", str(report)]) == EXIT_PARTIAL
        page = Page(report.read_text(encoding="utf-8"))
        assert page.hits == len(records)
        assert "".join(page.text).count("not explained (FeaturesMissingError)") == sum(
            r["status"] == "failed" for r in records
        )
        assert not any(page.shows(prefix) for prefix in inline)
        assert max(map(len, page.text)) < 1500  # no reason quotes a whole inline image
        page.assert_escaped()


def test_a_report_without_image_roots_draws_the_inline_hits_explained_from_the_sidecar(
    world: World, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["search", TEXT_QUERY, "--limit", str(LIMIT), "--explain"]
    args += ["--path", str(world.qdrant_path), "--collection", UNROOTED]
    args += ["--model", str(tiny_model_dir), "--json"]
    assert main(args) == EXIT_PARTIAL  # stores the inline images' features in the sidecar
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    report = tmp_path / "r.html"
    assert main([*args, "--html", str(report)]) == EXIT_PARTIAL
    page = Page(report.read_text(encoding="utf-8"))
    assert not page.shows("no overlay")
    assert page.alts.count("heatmap") == sum(r["status"] == "ok" for r in records)


@pytest.mark.parametrize("case", cases("base64"))
def test_search_and_explain_take_an_inline_image_query(
    case: Case,
    world: World,
    tiny_model_dir: Path,
    tiny_encoder: ClipEncoder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--image`` given the image inline, as the adapters take it (raw base64 here)."""
    with world.open() as client:
        expected = plain_hits(client, tiny_encoder, world, case)
    out = run(capsys, [*search_args(world, case, tiny_model_dir), "--json"])
    records = [json.loads(line) for line in out.splitlines()]
    assert_same_hits([(r["id"], r["score"]) for r in records], expected)
    for record in records:
        assert_record(record, case)
    point = str(_cli_id(expected[0][0]))
    args = ["explain", point, *query_args(world, case), *common(world, case, tiny_model_dir)]
    (record,) = [json.loads(line) for line in run(capsys, [*args, "--json"]).splitlines()]
    assert_same_hits([(record["id"], record["score"])], expected[:1])


def test_a_broken_inline_image_query_is_refused_briefly(
    world: World, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = Case("qdrant-xai", "base64", "text")
    broken = "data:image/png;base64," + "A" * 20_000
    capsys.readouterr()
    args = ["search", "--image", broken, "--explain", *common(world, case, tiny_model_dir)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "AAAA" * 50 not in err and len(err) < 1000, err[:300]
    assert "not an image" in err


@pytest.mark.slow
def test_the_real_command_writes_the_report_of_an_image_query_for_text_hits(
    world: World, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The cell issue 14 found crashing, through the installed command in a subprocess."""
    case = Case("qdrant-xai", "path", "text")
    report = tmp_path / "r.html"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "qdrant_xai", *search_args(world, case, tiny_model_dir)),
            *("--json", "--html", str(report)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert records and all(r["status"] == "ok" for r in records)
    assert Page(report.read_text(encoding="utf-8")).hits == len(records)


def _cli_id(key: str) -> str | int:
    """A point key as the CLI prints it (integers as digits, uuids dashed)."""
    return int(key) if key.isdigit() else key
