"""The captions CSV as people write it: long fields refused row by row, image paths written
relative to the folder or to the CSV, or absolute."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from qdrant_xai import QdrantXaiError, TextLimits
from qdrant_xai.storage.captions import (
    captions_by_source,
    list_folder,
    read_captions,
    read_captions_csv,
)


def write_csv(path: Path, rows: list[tuple[str, str]], *, header: str = "image,caption") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        handle.write(header + "\r\n")
        csv.writer(handle).writerows(rows)
    return path


# -- long fields ----------------------------------------------------------------------------


def test_a_field_over_pythons_csv_limit_is_refused_on_its_own_row(tmp_path: Path) -> None:
    # 200,000 characters: over csv's default 131,072 (which aborted the whole file before)
    # and over TextLimits.max_chars; the rows around it are read
    path = write_csv(
        tmp_path / "c.csv", [("a.png", "a red circle"), ("b.png", "x" * 200_000), ("c.png", "ok")]
    )
    table = read_captions(path)
    assert [(r.row, r.image, r.caption) for r in table.rows] == [
        (2, "a.png", "a red circle"),
        (4, "c.png", "ok"),
    ]
    [(row, reason)] = table.refused
    assert row == 3
    assert "200,000 characters" in reason and "TextLimits.max_chars" in reason
    assert table.label(row) == f"{path} row 3"
    assert csv.field_size_limit() == 131_072  # the process-wide limit is left as it was


def test_a_long_caption_under_the_limit_is_read_whole(tmp_path: Path) -> None:
    caption = "word " * 30_000  # 150,000 characters: over csv's default, under this limit
    path = write_csv(tmp_path / "c.csv", [("a.png", caption)])
    table = read_captions(path, text_limits=TextLimits(max_chars=200_000, max_words=50_000))
    assert [r.caption for r in table.rows] == [caption] and not table.refused


def test_a_megabyte_line_is_skipped_without_being_held(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("image,caption\na.png,first\n")
        handle.write("b.png," + "y" * 1_048_576 + "\n")
        handle.write('c.png,"a quoted, multi-line\ncaption"\nd.png,last\n')
    table = read_captions(path)
    assert [(r.row, r.image) for r in table.rows] == [(2, "a.png"), (4, "c.png"), (5, "d.png")]
    assert table.rows[1].caption == "a quoted, multi-line\ncaption"
    [(row, reason)] = table.refused
    assert row == 3 and "1,048,582 characters" in reason and "left out" in reason


def test_a_caption_over_the_word_limit_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [("a.png", "w " * 600), ("b.png", "fine")])
    table = read_captions(path, text_limits=TextLimits(max_chars=10_000, max_words=500))
    assert [r.image for r in table.rows] == ["b.png"]
    assert table.refused[0][0] == 2 and "TextLimits.max_words" in table.refused[0][1]


def test_rows_without_an_image_or_with_a_caption_in_it_are_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [("", "orphan"), ("z" * 5000, "x"), ("a.png", "ok")])
    table = read_captions(path)
    assert [r.image for r in table.rows] == ["a.png"]
    reasons = dict(table.refused)
    assert "image column is empty" in reasons[2]
    assert "not a file path" in reasons[3]


def test_the_strict_reader_names_the_refused_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [("a.png", "ok"), ("b.png", "x" * 200_000)])
    with pytest.raises(QdrantXaiError, match=r"c\.csv row 3: .*200,000 characters"):
        read_captions_csv(path)
    fine = write_csv(tmp_path / "d.csv", [("a.png", "one"), ("a.png", "two")])
    assert read_captions_csv(fine) == {"a.png": ["one", "two"]}


def test_a_header_without_the_columns_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [("a.png", "x")], header="file,text")
    with pytest.raises(QdrantXaiError, match="columns 'image' and 'caption'"):
        read_captions(path)


# -- image paths ----------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        (root / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


def files_of(root: Path) -> list[tuple[Path, str]]:
    return [(p, str(p.resolve())) for p in sorted(root.rglob("*.png"))]


def match(root: Path, csv_path: Path) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    return captions_by_source(read_captions(csv_path), root, files_of(root))


def test_paths_relative_to_the_folder_the_csv_or_absolute_are_matched(
    folder: Path, tmp_path: Path
) -> None:
    beside = write_csv(  # the CSV next to the folder: paths relative to it name imgs/...
        tmp_path / "captions.csv",
        [
            ("a.png", "relative to the folder"),
            ("./b.png", "dot slash, relative to the folder"),
            ("imgs/sub/c.png", "relative to the CSV"),
            (str((folder / "a.png").resolve()), "absolute"),
            ("sub\\c.png", "written on Windows"),
        ],
    )
    by_source, failed = match(folder, beside)
    assert failed == []
    a, b, c = (str((folder / n).resolve()) for n in ("a.png", "b.png", "sub/c.png"))
    assert by_source == {
        a: ["relative to the folder", "absolute"],
        b: ["dot slash, relative to the folder"],
        c: ["relative to the CSV", "written on Windows"],
    }
    inside = write_csv(folder / "captions.csv", [("./sub/c.png", "inside"), ("b.png", "b")])
    assert match(folder, inside) == ({c: ["inside"], b: ["b"]}, [])


def test_an_absolute_path_outside_the_folder_is_refused_saying_so(
    folder: Path, tmp_path: Path
) -> None:
    stray = tmp_path / "elsewhere.png"
    stray.write_bytes(b"")
    path = write_csv(
        tmp_path / "c.csv",
        [(str(stray), "outside"), ("../elsewhere.png", "climbs out"), ("nope.png", "missing")],
    )
    by_source, failed = match(folder, path)
    assert by_source == {}
    reasons = dict(failed)
    assert reasons[str(stray)].startswith(f"{path} row 2: ")
    assert "outside the indexed folder" in reasons[str(stray)]
    assert "outside the indexed folder" in reasons["../elsewhere.png"]
    assert "row 4: no such image under" in reasons["nope.png"]


def test_a_symlinked_folder_matches_paths_written_through_either_name(
    folder: Path, tmp_path: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    path = write_csv(
        tmp_path / "c.csv", [(str(folder / "a.png"), "real"), (str(link / "b.png"), "linked")]
    )
    by_source, failed = captions_by_source(read_captions(path), link, files_of(link))
    assert failed == [] and sorted(by_source) == [
        str((folder / "a.png").resolve()),
        str((folder / "b.png").resolve()),
    ]


def test_list_folder_lists_unsupported_formats_and_unmatched_rows(folder: Path) -> None:
    (folder / "drawing.svg").write_text("<svg/>")
    (folder / "notes.txt").write_text("not an image")
    path = write_csv(folder / "captions.csv", [("a.png", "a"), ("drawing.svg", "vector")])
    contents = list_folder(folder, captions=path)
    assert [p.name for p, _ in contents.files] == ["a.png", "b.png", "c.png"]
    reasons = dict(contents.failed)
    assert set(reasons) == {str((folder / "drawing.svg").resolve()), "drawing.svg"}
    assert "unsupported format" in reasons[str((folder / "drawing.svg").resolve())]
    assert "not an image this run indexed" in reasons["drawing.svg"]


def test_a_megabyte_quoted_field_across_lines_is_refused_and_the_next_row_read(
    tmp_path: Path,
) -> None:
    path = write_csv(
        tmp_path / "c.csv",
        [("a.png", 'said "hi":\n' + "z" * 1_000_000 + "\nend"), ("b.png", "next")],
    )
    table = read_captions(path)
    assert [(r.row, r.image, r.caption) for r in table.rows] == [(3, "b.png", "next")]
    assert [row for row, _ in table.refused] == [2]


def test_a_bad_header_is_quoted_briefly(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("q" * 300_000 + ",other\na.png,x\n", encoding="utf-8")
    with pytest.raises(QdrantXaiError, match="columns 'image' and 'caption'") as info:
        read_captions(path)
    assert len(str(info.value)) < 400
