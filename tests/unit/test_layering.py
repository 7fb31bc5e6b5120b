"""The import rules of DEVELOPERS.md as a failing test (AST walk, no imports executed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_LIBS = {"discord", "slack_bolt", "slack_sdk", "aiohttp"}
# Core modules allowed aiohttp, which is in PLATFORM_LIBS because platforms' clients run
# on it: the transport under the httpx client (issue 14), moving bytes for the model
# API, and the operators' HTTP endpoint (issue 15); neither names a platform.
PLATFORM_LIB_EXCEPTIONS = {"bot/llm/transport.py": {"aiohttp"}, "bot/ops.py": {"aiohttp"}}
CORE_INTERNALS = {"httpx", "aiosqlite", "sqlite3", "asyncpg", "bot.store", "bot.llm", "bot.limits"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _hits(names: set[str], banned: set[str]) -> set[str]:
    return {n for n in names if any(n == b or n.startswith(b + ".") for b in banned)}


def test_core_never_imports_platform_libraries() -> None:
    offenders = {
        name: _hits(_imports(p), PLATFORM_LIBS) - PLATFORM_LIB_EXCEPTIONS.get(name, set())
        for p in (ROOT / "bot").rglob("*.py")
        if (name := str(p.relative_to(ROOT)))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_cli_imports_adapters() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "bot").rglob("*.py")
        if p.name != "__main__.py" and _hits(_imports(p), {"adapters"})
    ]
    assert offenders == []


def test_adapters_never_touch_sqlite_http_or_core_internals() -> None:
    offenders = {
        str(p.relative_to(ROOT)): _hits(_imports(p), CORE_INTERNALS)
        for p in (ROOT / "adapters").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


_PLATFORM_NAMES = re.compile(r"discord|slack", re.I)


def _code_words(path: Path) -> set[str]:
    """Identifiers and non-docstring string literals: what the code does, not its prose."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.arg):
            words.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            words.add(node.name)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            words.add(node.value)
    return words


def test_core_names_no_platform_in_settings_or_code() -> None:
    """A new platform needs no edit to bot/: no setting, branch or string names one."""
    offenders = {
        str(p.relative_to(ROOT)): sorted(w for w in _code_words(p) if _PLATFORM_NAMES.search(w))
        for p in (ROOT / "bot").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_layering_check_detects_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""Mentions Slack in prose only."""\n'
        "import discord\nfrom bot.store.sqlite import SqliteStore\n"
        "if platform == 'slack':\n    pass\n"
    )
    assert _hits(_imports(bad), PLATFORM_LIBS) == {"discord"}
    assert _hits(_imports(bad), CORE_INTERNALS) == {"bot.store.sqlite"}
    assert [w for w in _code_words(bad) if _PLATFORM_NAMES.search(w)] == ["slack"]
