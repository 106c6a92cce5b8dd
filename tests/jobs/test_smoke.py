"""The smoke job's SQL placeholders and its sql_params agree exactly."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from jobs import smoke
from rtml import sqlfiles
from rtml.settings import SmokeJobSettings

SMOKE_SQL = [sqlfiles.SQL_DIR / name for name in smoke.SQL_FILES]
# Looser than sqlfiles' own pattern on purpose: a malformed `${input-topic}` must show up here.
ANY_PLACEHOLDER = re.compile(r"\$\{([^}\n]*)\}?")


@pytest.fixture(autouse=True)
def _no_rtml_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RTML_"):
            monkeypatch.delenv(name)


def _placeholders(path: Path) -> set[str]:
    """Names of `${name}` placeholders in the file's code (the header comment's `${...}` aside)."""
    names = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("--"):
            continue
        for match in ANY_PLACEHOLDER.finditer(line):
            assert sqlfiles._PLACEHOLDER.fullmatch(match[0]), f"{path}:{number}: {match[0]!r}"
            names.add(match[1])
    return names


def test_there_are_smoke_sql_files() -> None:
    assert sorted((sqlfiles.SQL_DIR / "smoke").glob("*.sql")) == sorted(
        p for p in SMOKE_SQL if p.parent.name == "smoke"
    )  # every smoke file is loaded by the job
    assert all(p.is_file() for p in SMOKE_SQL)


def test_sql_params_cover_every_placeholder_and_nothing_more() -> None:
    used = set().union(*(_placeholders(path) for path in SMOKE_SQL))
    assert used == set(smoke.sql_params(SmokeJobSettings()))


def test_sql_params_values() -> None:
    settings = SmokeJobSettings(
        kafka_bootstrap="b:9092",
        smoke_input_topic="in",
        smoke_output_topic="out",
        smoke_dead_letter_topic="dlq",
        smoke_group_id="g",
        smoke_transactional_id_prefix="tx",
        smoke_window_seconds=7,
        smoke_out_of_orderness_seconds=3,
        smoke_idle_timeout_seconds=4,
    )
    assert smoke.sql_params(settings) == {
        "bootstrap": "b:9092",
        "topic": "in",
        "output_topic": "out",
        "dead_letter_topic": "dlq",
        "group_id": "g",
        "transactional_id_prefix": "tx",
        "transaction_timeout_ms": 900_000,
        "window_seconds": 7,
        "out_of_orderness_seconds": 3,
        "idle_timeout": "4 s",
    }


def test_transaction_timeout_stays_within_the_brokers_one_hour_cap() -> None:
    assert smoke.sql_params(SmokeJobSettings())["transaction_timeout_ms"] <= 3_600_000


def test_rendered_smoke_sql_uses_the_settings() -> None:
    settings = SmokeJobSettings(
        kafka_bootstrap="b:1", smoke_window_seconds=7, smoke_idle_timeout_seconds=5
    )
    params = smoke.sql_params(settings)
    statements = [s for name in smoke.SQL_FILES for s in sqlfiles.load(name, params)]
    assert len(statements) == 7
    text = "\n".join(s.text for s in statements)
    assert text.count("'properties.bootstrap.servers' = 'b:1'") == 3
    assert "INTERVAL '7' SECOND" in text
    assert "'scan.watermark.idle-timeout' = '5 s'" in text
    assert "'sink.transactional-id-prefix' = 'rtml-smoke-counts'" in text
    assert "'sink.transactional-id-prefix' = 'rtml-smoke-dead-letters'" in text
    inserts = [s for s in statements if s.text.startswith("INSERT INTO")]
    assert [s.text.split()[2] for s in inserts] == ["smoke_counts", "dead_letters"]
