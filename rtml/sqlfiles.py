"""Load SQL files: split them into statements and fill `${name}` placeholders safely.

Placeholders are allowed only inside single-quoted SQL string literals (connector options, interval
lengths), and every value is escaped as a literal's content, so a setting can never change the shape
of a statement. Errors name the file and line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rtml.settings import PROJECT_ROOT

SQL_DIR = PROJECT_ROOT / "sql"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class SqlFileError(ValueError):
    """A SQL file cannot be used as written; the message starts with `file:line:`."""


@dataclass(frozen=True)
class Statement:
    """One statement of a SQL file and the line it starts on."""

    text: str
    source: Path
    line: int


def _scan(text: str, source: Path) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Find string literals and statement boundaries, skipping comments.

    Returns (literal spans, statement spans) as (start, end) character offsets.
    """
    literals: list[tuple[int, int]] = []
    statements: list[tuple[int, int]] = []
    i, start, n = 0, 0, len(text)
    while i < n:
        char = text[i]
        if text.startswith("--", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                raise SqlFileError(f"{source}:{_line(text, i)}: unterminated /* comment")
            i = close + 2
        elif char == "'":
            j = i + 1
            while True:
                j = text.find("'", j)
                if j < 0:
                    raise SqlFileError(f"{source}:{_line(text, i)}: unterminated string literal")
                if text.startswith("''", j):  # an escaped quote inside the literal
                    j += 2
                    continue
                break
            literals.append((i + 1, j))
            i = j + 1
        elif char == "`":
            close = text.find("`", i + 1)
            if close < 0:
                raise SqlFileError(f"{source}:{_line(text, i)}: unterminated `identifier`")
            i = close + 1
        elif char == ";":
            statements.append((start, i))
            start = i = i + 1
        else:
            i += 1
    statements.append((start, n))
    return literals, statements


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _escape(value: object) -> str:
    return str(value).replace("'", "''")


def render(text: str, params: Mapping[str, object], source: Path) -> list[Statement]:
    """Split `text` into statements with placeholders filled from `params`."""
    literals, spans = _scan(text, source)
    for match in _PLACEHOLDER.finditer(text):
        offset = match.start()
        if not any(lo <= offset and match.end() <= hi for lo, hi in literals):
            raise SqlFileError(
                f"{source}:{_line(text, offset)}: placeholder {match.group(0)} must stand inside "
                "a quoted string literal"
            )
        if match.group(1) not in params:
            raise SqlFileError(
                f"{source}:{_line(text, offset)}: no value for placeholder {match.group(0)} "
                f"(known: {', '.join(sorted(params)) or 'none'})"
            )
    statements = []
    for lo, hi in spans:
        chunk = text[lo:hi]
        if not _has_code(chunk, source):
            continue
        filled = _PLACEHOLDER.sub(lambda m: _escape(params[m.group(1)]), chunk)
        leading = len(chunk) - len(chunk.lstrip())
        statements.append(Statement(filled.strip(), source, _line(text, lo + leading)))
    return statements


def _has_code(chunk: str, source: Path) -> bool:
    """False for a chunk that holds only whitespace and comments."""
    stripped = re.sub(r"--[^\n]*", "", chunk)
    stripped = re.sub(r"/\*.*?\*/", "", stripped, flags=re.S)
    return bool(stripped.strip())


def load(relative: str, params: Mapping[str, object], sql_dir: Path = SQL_DIR) -> list[Statement]:
    """Read `sql_dir/relative` and render it (see `render`)."""
    path = sql_dir / relative
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SqlFileError(f"{path}: SQL file not found") from None
    return render(text, params, path)
