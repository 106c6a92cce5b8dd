"""JSON_FIELDS (udfs/java) on the embedded MiniCluster: one parse gives what JSON_VALUE gives."""

from __future__ import annotations

import pytest
from pyflink.table import StreamTableEnvironment

from rtml import flinkjob
from rtml.settings import JobSettings

FIELDS = ["ts", "id", "amount", "flag", "nested", "list", "gone"]

# Every kind of value, and every way a record can fail to be one JSON object.
BODIES = [
    '{"ts": 1763700000000, "id": "c-1", "amount": 12.5, "flag": true}',
    '{"ts": "1763700000000", "id": 42, "amount": "12.50", "flag": false}',
    '{"ts": 1.7637E12, "amount": 1e3, "id": ""}',
    '{"ts": -0, "amount": -12, "id": "a\\"b\\u00e9"}',
    '{"ts": null, "id": null, "amount": 123456789012345678901234567890}',
    '{"nested": {"ts": 5, "deep": [1, {"x": 2}]}, "list": [1, 2], "id": "x"}',
    '{"id": "first", "id": "second"}',
    '{"other": {"a": [1, 2, {"b": null}]}, "id": "skipped-children"}',
    "{}",
    '  {"id" : "spaces" }  ',
    "[1, 2, 3]",
    '"just a string"',
    "42",
    "null",
    "not json at all",
    '{"id": "truncated"',
    '{"id": "x"} trailing',
    '{"id": "x"}{"id": "y"}',
    '{"id": "x", "bad": [1, 2}',
    '{"id": "x",}',
    "",
]
# Flink's IS JSON OBJECT and JSON_VALUE accept a document followed by more text (Jackson ignores
# trailing tokens); JSON_FIELDS does not: such a record is garbage to dead-letter, not an event.
TRAILING = {'{"id": "x"} trailing', '{"id": "x"}{"id": "y"}'}


@pytest.fixture(scope="module")
def t_env() -> StreamTableEnvironment:
    return flinkjob.table_environment(JobSettings(), "test-json-fields")


def test_json_fields_equal_json_value_for_every_field_and_body(t_env) -> None:
    rows = ", ".join(
        f"({i}, '{body.replace(chr(39), chr(39) * 2)}')" for i, body in enumerate(BODIES)
    )
    names = ", ".join(FIELDS)
    pairs = ", ".join(
        f"f['{name}'] AS got_{name}, JSON_VALUE(body, '$.{name}') AS want_{name}" for name in FIELDS
    )
    result = t_env.sql_query(
        f"SELECT i, f IS NULL AS not_object, NOT (body IS JSON OBJECT) AS want_not_object, {pairs} "
        f"FROM (SELECT i, body, JSON_FIELDS(body, '{names}') AS f "
        f"FROM (VALUES {rows}) AS t(i, body))"
    )
    with result.execute().collect() as results:
        got = sorted((tuple(row) for row in results), key=lambda row: row[0])
    assert len(got) == len(BODIES)
    for row in got:
        body = BODIES[row[0]]
        if body in TRAILING:
            assert row[1] and not row[2], f"trailing text: {body!r}"
            continue
        assert row[1] == row[2], f"object or not: {body!r}"
        for k, name in enumerate(FIELDS):
            assert row[3 + 2 * k] == row[4 + 2 * k], f"{name} of {body!r}"
    # not vacuous: the comparison covered values, NULLs and non-objects
    values = [row[3 + 2 * k] for row in got for k in range(len(FIELDS))]
    assert any(v is not None for v in values) and any(v is None for v in values)
    assert sum(row[1] for row in got) == 11


def test_json_fields_report_each_field_json_type(t_env) -> None:
    body = '{"s": "x", "i": 1, "d": 1.5, "t": true, "n": null, "o": {"a": 1}, "a": [1]}'
    names = "s, i, d, t, n, o, a, missing"
    result = t_env.sql_query(f"SELECT JSON_FIELDS('{body}', '{names}') AS f")
    with result.execute().collect() as results:
        (row,) = list(results)
    fields = row[0]
    assert {k: v for k, v in fields.items() if k.endswith(":type")} == {
        "s:type": "string", "i:type": "number", "d:type": "number", "t:type": "boolean",
        "n:type": "null", "o:type": "object", "a:type": "array",
    }  # fmt: skip
    assert {k: v for k, v in fields.items() if not k.endswith(":type")} == {
        "s": "x", "i": "1", "d": "1.5", "t": "true",
    }  # fmt: skip
