"""Unit tests of SQL file splitting and placeholder filling (pure; no Flink cluster)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobs.smoke import sql_params
from rtml import featuresets, flinkjob, sqlfiles
from rtml.settings import FeatureJobSettings, ScoringJobSettings, SmokeJobSettings
from rtml.sqlfiles import SqlFileError, Statement

SRC = Path("q.sql")


def texts(sql: str, params: dict[str, object] | None = None) -> list[str]:
    return [s.text for s in sqlfiles.render(sql, params or {}, SRC)]


def _code_only(sql: str) -> str:
    """`sql` without its comments (string literals and identifiers kept as they are)."""
    out, i, n = [], 0, len(sql)
    while i < n:
        if sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline
        elif sql.startswith("/*", i):
            i = sql.index("*/", i + 2) + 2
        elif sql[i] in "'`":
            close = sql.index(sql[i], i + 1)
            while sql[i] == "'" and sql.startswith("''", close):
                close = sql.index("'", close + 2)
            out.append(sql[i : close + 1])
            i = close + 1
        else:
            out.append(sql[i])
            i += 1
    return "".join(out)


# --- splitting ---------------------------------------------------------------------------------


def test_splits_on_semicolons_and_strips_whitespace() -> None:
    assert texts("SELECT 1;\n  SELECT 2 ;\n\nSELECT 3\n") == ["SELECT 1", "SELECT 2", "SELECT 3"]


def test_trailing_semicolon_and_blank_tail_make_no_empty_statement() -> None:
    assert texts("SELECT 1;\n\n   \n") == ["SELECT 1"]
    assert texts("") == []
    assert texts(";;\n;") == []


def test_semicolon_inside_string_literal_does_not_split() -> None:
    assert texts("SELECT 'a;b' AS x; SELECT 2") == ["SELECT 'a;b' AS x", "SELECT 2"]


def test_escaped_quotes_keep_the_literal_open() -> None:
    sql = "SELECT 'it''s; fine', '''' ; SELECT 'x'''"
    assert texts(sql) == ["SELECT 'it''s; fine', ''''", "SELECT 'x'''"]


def test_semicolons_and_quotes_in_comments_are_ignored() -> None:
    sql = (
        "-- don't split; here\n"
        "SELECT 1 /* nor; here, isn't it */ AS a;\n"
        "SELECT 2 -- trailing; comment's quote\n"
        ";"
    )
    # Leading comments are dropped (a statement starts with its keyword); inner ones are kept.
    assert texts(sql) == [
        "SELECT 1 /* nor; here, isn't it */ AS a",
        "SELECT 2 -- trailing; comment's quote",
    ]


def test_backtick_identifiers_may_hold_semicolons_quotes_and_dashes() -> None:
    sql = "SELECT `a;b`, `it's`, `x--y` FROM `t/*`; SELECT 2"
    assert texts(sql) == ["SELECT `a;b`, `it's`, `x--y` FROM `t/*`", "SELECT 2"]


def test_comment_markers_inside_literals_are_text() -> None:
    assert texts("SELECT '--not a comment; really', '/* nor; this */'; SELECT 2") == [
        "SELECT '--not a comment; really', '/* nor; this */'",
        "SELECT 2",
    ]


def test_comment_only_chunks_are_skipped() -> None:
    sql = (
        "-- header\n\nSELECT 1;\n-- between\n/* block\n; still comment */\n;\nSELECT 2;\n-- tail\n"
    )
    assert texts(sql) == ["SELECT 1", "SELECT 2"]


def test_statements_carry_source_and_start_line() -> None:
    sql = "SELECT 1;\n\n\n  SELECT\n  2;\nSELECT 'a\nb'; SELECT 4"
    assert sqlfiles.render(sql, {}, SRC) == [
        Statement("SELECT 1", SRC, 1),
        Statement("SELECT\n  2", SRC, 4),
        Statement("SELECT 'a\nb'", SRC, 6),
        Statement("SELECT 4", SRC, 7),
    ]


def test_line_of_a_statement_after_a_multiline_comment() -> None:
    sql = "/* one\ntwo\nthree */;\nSELECT 1;\n\nSELECT 2"
    assert [(s.text, s.line) for s in sqlfiles.render(sql, {}, SRC)] == [
        ("SELECT 1", 4),
        ("SELECT 2", 6),
    ]


def test_block_comment_containing_dashes_is_still_comment_only() -> None:
    assert texts("SELECT 1;\n/* --- end --- */\n") == ["SELECT 1"]


def test_insert_with_leading_comment_joins_the_statement_set() -> None:
    class FakeStatementSet:
        def __init__(self) -> None:
            self.inserts: list[str] = []

        def add_insert_sql(self, sql: str) -> None:
            self.inserts.append(sql)

        def execute(self) -> FakeResult:
            return FakeResult()

    class FakeResult:
        def get_job_client(self) -> None:
            return None

    class FakeTableEnv:
        def __init__(self) -> None:
            self.executed: list[str] = []
            self.statement_set = FakeStatementSet()

        def create_statement_set(self) -> FakeStatementSet:
            return self.statement_set

        def execute_sql(self, sql: str) -> None:
            self.executed.append(sql)

    statements = sqlfiles.render(
        "CREATE TABLE t (x INT);\n"
        "INSERT INTO t SELECT 1;\n"
        "-- a second output\n"
        "INSERT INTO t SELECT 2;",
        {},
        SRC,
    )
    t_env = FakeTableEnv()
    flinkjob.run_statements(t_env, statements, detached=True)  # type: ignore[arg-type]
    assert t_env.executed == ["CREATE TABLE t (x INT)"]
    assert len(t_env.statement_set.inserts) == 2


# --- placeholders ------------------------------------------------------------------------------


def test_placeholders_are_filled_inside_literals() -> None:
    sql = "CREATE TABLE t WITH ('topic' = '${topic}', 'n' = '${n}-${topic}');"
    assert texts(sql, {"topic": "events", "n": 3}) == [
        "CREATE TABLE t WITH ('topic' = 'events', 'n' = '3-events')"
    ]


def test_value_with_quote_cannot_break_out_of_the_literal() -> None:
    evil = "x'; DROP TABLE t; --"
    statements = sqlfiles.render("SELECT '${v}' AS a; SELECT 2", {"v": evil}, SRC)
    assert [s.text for s in statements] == ["SELECT 'x''; DROP TABLE t; --' AS a", "SELECT 2"]
    # Re-read, the filled statement is still one statement with one literal holding the value.
    again = sqlfiles.render(statements[0].text, {}, SRC)
    assert [s.text for s in again] == [statements[0].text]


def test_values_are_not_rescanned_for_placeholders_or_regex_escapes() -> None:
    assert texts("SELECT '${a}'", {"a": r"${b} \1 \n", "b": "no"}) == [r"SELECT '${b} \1 \n'"]


def test_value_with_semicolon_does_not_split() -> None:
    assert texts("SELECT '${v}'; SELECT 2", {"v": "a;b"}) == ["SELECT 'a;b'", "SELECT 2"]


def test_extra_params_are_allowed() -> None:
    assert texts("SELECT '${a}'", {"a": 1, "unused": 2}) == ["SELECT '1'"]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1;\nSELECT ${x}",  # bare
        "SELECT 1;\nSELECT `${x}`",  # in an identifier
        "SELECT 1;\nSELECT '${x}' || ${x}",  # one inside, one outside
    ],
)
def test_placeholder_outside_a_literal_is_an_error_with_file_and_line(sql: str) -> None:
    with pytest.raises(SqlFileError) as caught:
        sqlfiles.render(sql, {"x": "1"}, SRC)
    assert str(caught.value) == (
        "q.sql:2: placeholder ${x} must stand inside a quoted string literal"
    )


def test_placeholder_in_a_comment_is_documentation_left_alone() -> None:
    assert texts("-- fill ${x} here\nSELECT '${x}' /* or ${x} */", {"x": "v"}) == [
        "SELECT 'v' /* or ${x} */"
    ]


def test_malformed_placeholder_in_a_literal_is_an_error() -> None:
    with pytest.raises(SqlFileError, match=r"q.sql:2: malformed placeholder '\$\{input-topic\}'"):
        sqlfiles.render("SELECT 1;\nSELECT '${input-topic}'", {}, SRC)


def test_text_that_only_looks_like_a_split_placeholder_is_not_one() -> None:
    assert texts("SELECT '$'{x}''", {}) == ["SELECT '$'{x}''"]


def test_missing_value_names_the_placeholder_file_and_line() -> None:
    with pytest.raises(SqlFileError) as caught:
        sqlfiles.render("SELECT 1;\n\nSELECT '${topic}'", {"bootstrap": "b", "group": "g"}, SRC)
    assert str(caught.value) == (
        "q.sql:3: no value for placeholder ${topic} (known: bootstrap, group)"
    )


def test_missing_value_without_any_params() -> None:
    with pytest.raises(SqlFileError, match=r"^q\.sql:1: no value for .*\(known: none\)$"):
        sqlfiles.render("SELECT '${a}'", {}, SRC)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1;\nSELECT 'open\n;", "q.sql:2: unterminated string literal"),
        ("SELECT 'it''s\n", "q.sql:1: unterminated string literal"),
        ("SELECT 1;\n\n/* never closed;\nSELECT 2", "q.sql:3: unterminated /* comment"),
        ("SELECT 1;\nSELECT `col", "q.sql:2: unterminated `identifier`"),
    ],
)
def test_unterminated_tokens_are_errors_with_file_and_line(sql: str, expected: str) -> None:
    with pytest.raises(SqlFileError) as caught:
        sqlfiles.render(sql, {}, SRC)
    assert str(caught.value) == expected


def test_load_reads_relative_to_sql_dir(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "a.sql").write_text("SELECT '${v}';\n\nSELECT 2;\n")
    assert sqlfiles.load("job/a.sql", {"v": "x"}, sql_dir=tmp_path) == [
        Statement("SELECT 'x'", tmp_path / "job" / "a.sql", 1),
        Statement("SELECT 2", tmp_path / "job" / "a.sql", 3),
    ]


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(SqlFileError) as caught:
        sqlfiles.load("nope.sql", {}, sql_dir=tmp_path)
    assert str(caught.value) == f"{tmp_path / 'nope.sql'}: SQL file not found"

    (tmp_path / "bad.sql").write_text("SELECT 1;\nSELECT ${v};\n")
    with pytest.raises(SqlFileError, match=rf"^{re.escape(str(tmp_path / 'bad.sql'))}:2: "):
        sqlfiles.load("bad.sql", {"v": 1}, sql_dir=tmp_path)


# --- the real files ----------------------------------------------------------------------------

REAL_FILES = sorted(p.relative_to(sqlfiles.SQL_DIR) for p in sqlfiles.SQL_DIR.rglob("*.sql"))


def test_there_are_sql_files() -> None:
    assert Path("smoke/tables.sql") in REAL_FILES
    assert Path("smoke/pipeline.sql") in REAL_FILES


def real_params(relative: Path) -> dict[str, object]:
    """The values the job that owns `relative` fills its placeholders with."""
    definition = featuresets.load("fraud_card")
    if relative.parts[0] == "scoring":
        from jobs.scoring import params

        return params(definition, ScoringJobSettings(), "fraud")
    if relative.parts[0] in ("sources", "common"):
        from jobs.features import source_params

        params = source_params(definition, FeatureJobSettings())
        if relative == Path("common/backfill.sql"):  # the live job's, with --backfill
            params["start_ms"] = 1_763_700_000_000
        if relative == Path("common/bounded_range.sql"):  # rtml.offline's
            params["start_offsets"] = "partition:0,offset:0;partition:1,offset:0"
            params["end_offsets"] = "partition:0,offset:10;partition:1,offset:7"
            params["auto_commit"] = "true"
        return params
    return sql_params(SmokeJobSettings())


@pytest.mark.parametrize("relative", REAL_FILES, ids=str)
def test_real_sql_file_renders_without_leftover_placeholders(relative: Path) -> None:
    params = real_params(relative)
    statements = sqlfiles.load(str(relative), params)
    assert statements
    source_lines = (sqlfiles.SQL_DIR / relative).read_text().splitlines()
    for statement in statements:
        where = f"{statement.source}:{statement.line}"
        assert statement.source == sqlfiles.SQL_DIR / relative
        assert "${" not in _code_only(statement.text), where
        assert sqlfiles._PLACEHOLDER.search(statement.text) is None, where
        # the reported line is where the statement's text starts in the file
        line = source_lines[statement.line - 1]
        filled = sqlfiles._PLACEHOLDER.sub(lambda m: sqlfiles._escape(params[m[1]]), line)
        assert filled.strip() == statement.text.splitlines()[0].strip(), where
