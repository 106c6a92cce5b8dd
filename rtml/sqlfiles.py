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


Span = tuple[int, int]


def _scan(text: str, source: Path) -> tuple[list[Span], list[Span], list[Span]]:
    """Find string literals, comments and statement boundaries in one pass.

    Returns (literal spans, comment spans, statement spans) as (start, end) character offsets.
    """
    literals: list[Span] = []
    comments: list[Span] = []
    statements: list[Span] = []
    i, start, n = 0, 0, len(text)
    while i < n:
        char = text[i]
        if text.startswith("--", i):
            newline = text.find("\n", i)
            end = n if newline < 0 else newline + 1
            comments.append((i, end))
            i = end
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                raise SqlFileError(f"{source}:{_line(text, i)}: unterminated /* comment")
            comments.append((i, close + 2))
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
    return literals, comments, statements


def _code_start(text: str, lo: int, hi: int, comments: list[Span]) -> int | None:
    """Where the code of statement span [lo, hi) begins, past blanks and comments; None if none."""
    i = lo
    while i < hi:
        if text[i].isspace():
            i += 1
            continue
        comment = next((end for begin, end in comments if begin == i), None)
        if comment is None:
            return i
        i = comment
    return None


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _escape(value: object) -> str:
    return str(value).replace("'", "''")


def render(text: str, params: Mapping[str, object], source: Path) -> list[Statement]:
    """Split `text` into statements with placeholders filled from `params`."""
    literals, comments, spans = _scan(text, source)
    for lo, hi in literals:
        for opening in re.finditer(r"\$\{", text[lo:hi]):
            offset = lo + opening.start()
            if not _PLACEHOLDER.match(text, offset):
                raise SqlFileError(
                    f"{source}:{_line(text, offset)}: malformed placeholder "
                    f"{text[offset : text.find('}', offset) + 1 or hi]!r}: use ${{name}} with "
                    "letters, digits and underscores"
                )
    for match in _PLACEHOLDER.finditer(text):
        if any(begin <= match.start() < end for begin, end in comments):
            continue  # a placeholder named in a comment is documentation, not a value
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
        begin = _code_start(text, lo, hi, comments)
        if begin is None:
            continue  # only blanks and comments
        # Leading comments are dropped so a statement starts with its keyword (INSERT, CREATE ...).
        filled = _fill(text, begin, hi, literals, params)
        statements.append(Statement(filled.strip(), source, _line(text, begin)))
    return statements


def _fill(text: str, lo: int, hi: int, literals: list[Span], params: Mapping[str, object]) -> str:
    """text[lo:hi] with the placeholders inside string literals replaced by escaped values."""
    parts, cursor = [], lo
    for match in _PLACEHOLDER.finditer(text, lo, hi):
        if any(begin <= match.start() < end for begin, end in literals):
            parts += [text[cursor : match.start()], _escape(params[match.group(1)])]
            cursor = match.end()
    return "".join(parts) + text[cursor:hi]


def load(relative: str, params: Mapping[str, object], sql_dir: Path = SQL_DIR) -> list[Statement]:
    """Read `sql_dir/relative` and render it (see `render`)."""
    path = sql_dir / relative
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SqlFileError(f"{path}: SQL file not found") from None
    return render(text, params, path)
