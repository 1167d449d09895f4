"""``qdrant-xai serve`` as a command: its help names the API, a missing extra is one line
that names it, the accepted Host headers follow ``--host``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from qdrant_xai.cli import main
from qdrant_xai.cli.serve import allowed_hosts


def test_help_names_the_api_and_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for part in ("/api/search", "/api/explain", "--image-root", "--allow-host", "[serve]"):
        assert part in text


def test_without_the_serve_extra_one_line_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    status = main(["serve", "--path", str(tmp_path / "q"), "--collection", "x"])
    error = capsys.readouterr().err.strip()
    assert status == 1
    assert error.count("\n") == 0 and "pip install 'qdrant-xai[serve]'" in error


@pytest.mark.parametrize(
    ("host", "extra", "accepted", "refused"),
    [
        ("127.0.0.1", [], ["127.0.0.1", "localhost"], ["*", "evil.example"]),
        ("::1", [], ["[::1]"], ["*"]),
        ("0.0.0.0", [], ["*"], []),
        ("0.0.0.0", ["photos.internal"], ["photos.internal", "localhost"], ["*"]),
        ("192.168.1.5", [], ["192.168.1.5"], ["*"]),
        ("photos.internal", [], ["photos.internal"], ["*"]),
    ],
)
def test_allowed_hosts(
    host: str, extra: list[str], accepted: list[str], refused: list[str]
) -> None:
    hosts = allowed_hosts(host, extra)
    assert all(h in hosts for h in accepted)
    assert not any(h in hosts for h in refused)
