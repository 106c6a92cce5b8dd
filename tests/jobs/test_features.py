"""jobs.features wiring that needs no services: placeholders and ids."""

from __future__ import annotations

import re

from jobs.features import source_params
from rtml import featuresets
from rtml.settings import FeatureJobSettings
from rtml.sqlfiles import SQL_DIR

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def test_source_params_fill_exactly_the_placeholders_of_the_source_sql() -> None:
    definition = featuresets.load("fraud_card")
    loaded = (
        SQL_DIR / "common" / "raw_source.sql",
        definition.source.sql,
        SQL_DIR / "common" / "dead_letters.sql",
    )
    code = "\n".join(
        line for path in loaded for line in path.read_text().splitlines()
        if not line.lstrip().startswith("--")
    )  # fmt: skip
    used = set(PLACEHOLDER.findall(code))
    assert used == set(source_params(definition, FeatureJobSettings()))


def test_ids_and_intervals_come_from_the_definition_and_settings() -> None:
    definition = featuresets.load("fraud_card")
    settings = FeatureJobSettings(features_id_prefix="team-a", kafka_bootstrap="broker:9092")
    params = source_params(definition, settings)
    assert params["group_id"] == "team-a-fraud_card"
    assert params["transactional_id_prefix"] == "team-a-fraud_card"
    assert params["bootstrap"] == "broker:9092"
    assert params["out_of_orderness_seconds"] == "2.000"
    assert params["topic"] == definition.source.topic
