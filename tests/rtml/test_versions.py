"""rtml/versions.py, pom.xml and pyproject.toml pin the same versions."""

from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET
from importlib import metadata

from rtml import versions
from rtml.settings import PROJECT_ROOT

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def _pom_properties() -> dict[str, str]:
    root = ET.parse(PROJECT_ROOT / "pom.xml").getroot()
    properties = root.find("m:properties", POM_NS)
    assert properties is not None, "pom.xml has no top-level <properties>"
    return {child.tag.split("}", 1)[1]: (child.text or "").strip() for child in properties}


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", requirement)
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def test_pom_properties_match_versions_py() -> None:
    properties = _pom_properties()
    assert properties["flink.kafka.connector.version"] == versions.FLINK_KAFKA_CONNECTOR
    assert properties["kafka.version"] == versions.KAFKA


def test_pom_dependencies_use_the_properties() -> None:
    root = ET.parse(PROJECT_ROOT / "pom.xml").getroot()
    found = {}
    for dep in root.iterfind(".//m:dependency", POM_NS):
        artifact = dep.findtext("m:artifactId", namespaces=POM_NS)
        found[artifact] = dep.findtext("m:version", namespaces=POM_NS)
    assert found["flink-sql-connector-kafka"] == "${flink.kafka.connector.version}"
    assert found["kafka_2.13"] == "${kafka.version}"
    assert found["kafka-tools"] == "${kafka.version}"


def test_pyproject_pins_the_same_flink() -> None:
    pins = _pyproject_pins()
    assert pins["apache-flink"] == versions.FLINK
    assert pins["apache-flink-libraries"] == versions.FLINK


def test_installed_pyflink_is_the_pinned_one() -> None:
    assert metadata.version("apache-flink") == versions.FLINK


def test_kafka_connector_is_built_for_this_flink_minor() -> None:
    connector, _, flink_minor = versions.FLINK_KAFKA_CONNECTOR.rpartition("-")
    assert re.fullmatch(r"\d+\.\d+\.\d+", connector)
    assert versions.FLINK.startswith(f"{flink_minor}.")


def test_connector_jar_name() -> None:
    jar = versions.FLINK_KAFKA_CONNECTOR_JAR
    assert jar == f"flink-sql-connector-kafka-{versions.FLINK_KAFKA_CONNECTOR}.jar"
    assert re.fullmatch(r"\d+\.\d+\.\d+", versions.KAFKA)


def test_the_sliding_window_state_layout_is_the_java_functions() -> None:
    java = PROJECT_ROOT / "udfs/java/src/main/java/dev/rtml/udfs/SlidingWindowFeatures.java"
    match = re.search(r"static final int STATE_LAYOUT = (\d+);", java.read_text())
    assert match, "STATE_LAYOUT not found in SlidingWindowFeatures.java"
    assert int(match[1]) == versions.SLIDING_WINDOW_STATE_LAYOUT
