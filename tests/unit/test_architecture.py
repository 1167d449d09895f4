"""The house rules: data flows one way through the rooms, and no file grows past 500 lines.

Rooms in the order data flows through them (docs/architecture.md): a module may import from
its own room and from rooms before it, never from a room after it, at module level or
inside a function (imports only for type checkers are exempt).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "qdrant_xai"

#: the rooms, in the order data flows through them
ROOMS = (
    "errors",
    "_lazy",
    "files",
    "connection",
    "serial_client",
    "retry",
    "progress",
    "images",
    "encoding",
    "storage",
    "search",
    "explain",
    "eval",
    "render",
    "demo",
    "testing",
    "serve",
    "cli",
)
MAX_LINES = 500


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "qdrant_xai":
        return None
    return parts[1] if len(parts) > 1 else ""


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, module)`` of every import outside ``if TYPE_CHECKING:`` blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_imports_from_a_later_room(path: Path) -> None:
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    own = _room(module)
    if own in ("", "__main__", "__init__"):  # the package front imports lazily from all rooms
        return
    assert own in ROOMS, f"{module}: room {own!r} is not in ROOMS; add it in flow order"
    rank = ROOMS.index(own)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    later = [
        (line, name)
        for line, name in _runtime_imports(tree)
        if (room := _room(name)) and room in ROOMS and ROOMS.index(room) > rank
    ]
    assert not later, f"{module} ({own}) imports from later rooms: {later}"


def test_every_room_exists() -> None:
    for room in ROOMS:
        assert (PACKAGE / room).is_dir() or (PACKAGE / f"{room}.py").is_file(), room


def test_no_python_file_is_over_500_lines() -> None:
    roots = ("qdrant_xai", "integrations", "examples", "tests", "docker")
    long = {
        str(p.relative_to(REPO)): n
        for root in roots
        for p in (REPO / root).rglob("*.py")
        if "__pycache__" not in p.parts
        and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines (split them by responsibility): {long}"
