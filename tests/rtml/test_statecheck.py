"""State manifests: which edits of a feature set keep its savepoint state, which cannot."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from rtml import featuresets, flinkjob, sqlfiles, statecheck, versions
from rtml.settings import FeatureJobSettings
from rtml.statecheck import IncompatibleState, Manifest, OperatorState

FEATURES_DIR = Path(__file__).resolve().parents[2] / "sql" / "features"


def node(node_id: int, kind: str, **fields: object) -> dict:
    return {"id": node_id, "type": f"stream-exec-{kind}_1", "description": f"{kind} {node_id}",
            **fields}  # fmt: skip


def plan(*nodes: dict) -> dict:
    edges = [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return {"flinkVersion": "2.2", "nodes": list(nodes), "edges": edges}


def source(topic: str = "events", group: str = "g1", bootstrap: str = "127.0.0.1:9092") -> dict:
    options = {
        "connector": "kafka",
        "topic": topic,
        "properties.group.id": group,
        "properties.bootstrap.servers": bootstrap,
        "scan.startup.mode": "group-offsets",
    }
    return node(1, "table-source-scan", scanTableSource={
        "table": {"identifier": "raw", "resolvedTable": {"schema": {}, "options": options}}
    })  # fmt: skip


def ptf(windows: str, uid: str = "SLIDING_WINDOW_FEATURES") -> dict:
    return node(3, "process-table-function", uid=uid, functionCall={"operands": [windows]})


BASE = plan(source(), node(2, "calc", projection=["a"]), ptf("1 min"), node(4, "calc"),
            node(5, "sink"))  # fmt: skip


def test_manifest_lists_stateful_operators_only() -> None:
    manifest = statecheck.manifest("fs", 1, BASE)
    assert list(manifest.operators) == ["SLIDING_WINDOW_FEATURES"]
    assert manifest.operators["SLIDING_WINDOW_FEATURES"].detail == "process-table-function 3"


def test_edits_after_the_state_and_of_connection_options_keep_it() -> None:
    moved = source(group="other", bootstrap="10.0.0.1:9092")
    edited = plan(moved, node(2, "calc", projection=["a"]), ptf("1 min"),
                  node(4, "calc", projection=["x * 2"]), node(5, "sink"))  # fmt: skip
    saved = statecheck.manifest("fs", 1, BASE)
    assert statecheck.changes(saved, statecheck.manifest("fs", 2, edited)) == []
    statecheck.check(saved, statecheck.manifest("fs", 2, edited), savepoint="sp",
                     definition_file=Path("fs.sql"))  # fmt: skip


@pytest.mark.parametrize(
    "edited",
    [
        plan(source(), node(2, "calc", projection=["a"]), ptf("2 min"), node(4, "calc"),
             node(5, "sink")),  # the windows
        plan(source(), node(2, "calc", projection=["a + 1"]), ptf("1 min"), node(4, "calc"),
             node(5, "sink")),  # what feeds the windows
        plan(source(topic="other"), node(2, "calc", projection=["a"]), ptf("1 min"),
             node(4, "calc"), node(5, "sink")),  # the data itself
    ],
)  # fmt: skip
def test_edits_of_the_state_or_upstream_are_refused_by_name(edited: dict) -> None:
    saved = statecheck.manifest("fraud_card", 1, BASE)
    with pytest.raises(IncompatibleState) as refused:
        statecheck.check(saved, statecheck.manifest("fraud_card", 1, edited), savepoint="/sp/1",
                         definition_file=Path("sql/features/fraud_card.sql"))  # fmt: skip
    message = str(refused.value)
    assert "feature set 'fraud_card'" in message
    assert "SLIDING_WINDOW_FEATURES changed" in message
    assert "sql/features/fraud_card.sql" in message
    assert "--start-fresh" in message and "--backfill" in message
    assert "/sp/1" in message


def test_a_savepoint_of_an_older_sliding_window_state_layout_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(versions, "SLIDING_WINDOW_STATE_LAYOUT", 2)
    saved = statecheck.manifest("fs", 1, BASE)
    monkeypatch.setattr(versions, "SLIDING_WINDOW_STATE_LAYOUT", 3)
    current = statecheck.manifest("fs", 1, BASE)
    (change,) = statecheck.changes(saved, current)
    assert change.operator == "SLIDING_WINDOW_FEATURES" and change.kind == "changed"
    # other stateful operators do not depend on it
    grouped = plan(source(), node(2, "group-aggregate"), node(5, "sink"))
    monkeypatch.setattr(versions, "SLIDING_WINDOW_STATE_LAYOUT", 2)
    saved = statecheck.manifest("fs", 1, grouped)
    monkeypatch.setattr(versions, "SLIDING_WINDOW_STATE_LAYOUT", 3)
    assert statecheck.changes(saved, statecheck.manifest("fs", 1, grouped)) == []


@pytest.mark.parametrize(
    ("layout", "shown"),
    [(statecheck.UNRECORDED_LAYOUT, "layout 2 (saved by an rtml from before layouts were recorded"),
     (2, "savepoint: layout 2\n")],
)  # fmt: skip
def test_a_change_of_state_layout_alone_is_told_apart_from_an_edit(layout: int, shown: str) -> None:
    saved = statecheck.manifest("fraud_card", 1, BASE, state_layout=layout)
    current = statecheck.manifest("fraud_card", 1, BASE)
    layouts = statecheck.layout_changes(saved, current, BASE)
    assert layouts == {"SLIDING_WINDOW_FEATURES": layout}
    with pytest.raises(IncompatibleState) as refused:
        statecheck.check(saved, current, savepoint="/sp/2", definition_file=Path("fc.sql"),
                         layouts=layouts)  # fmt: skip
    message = str(refused.value)
    assert "its definition is the same" in message
    assert "SLIDING_WINDOW_FEATURES: only its state layout changed" in message
    assert shown in message
    assert f"now:       layout {versions.SLIDING_WINDOW_STATE_LAYOUT}" in message
    assert "fc.sql" not in message and "raising `version:`" not in message
    assert "--start-fresh" in message and "--backfill" in message and "/sp/2" in message

    # an edit of the windows in an older layout is an edit: the message shows the definitions
    edited = plan(source(), node(2, "calc", projection=["a"]), ptf("2 min"), node(4, "calc"),
                  node(5, "sink"))  # fmt: skip
    edited_now = statecheck.manifest("fraud_card", 1, edited)
    assert statecheck.layout_changes(saved, edited_now, edited) == {}
    with pytest.raises(IncompatibleState, match="fc.sql changed what it holds") as refused:
        statecheck.check(saved, edited_now, savepoint="/sp/2", definition_file=Path("fc.sql"),
                         layouts={})  # fmt: skip
    assert "SLIDING_WINDOW_FEATURES changed:" in str(refused.value)
    # operators that keep no layout are never blamed on one
    grouped = plan(source(), node(2, "group-aggregate"), node(5, "sink"))
    old_grouped = statecheck.manifest("fraud_card", 1, grouped, state_layout=layout)
    grouped_now = statecheck.manifest("fraud_card", 1, grouped)
    assert statecheck.layout_changes(old_grouped, grouped_now, grouped) == {}


def test_removed_state_is_refused_and_added_state_is_fine() -> None:
    saved = statecheck.manifest("fs", 1, BASE)
    without = statecheck.manifest("fs", 1, plan(source(), node(2, "calc"), node(5, "sink")))
    with pytest.raises(IncompatibleState, match="SLIDING_WINDOW_FEATURES removed"):
        statecheck.check(saved, without, savepoint="sp", definition_file=Path("fs.sql"))
    statecheck.check(without, saved, savepoint="sp", definition_file=Path("fs.sql"))


def test_two_calls_of_one_function_are_told_apart() -> None:
    two = plan(source(), ptf("1 min"), {**ptf("1 h"), "id": 4}, node(5, "sink"))
    manifest = statecheck.manifest("fs", 1, two)
    assert list(manifest.operators) == ["SLIDING_WINDOW_FEATURES", "SLIDING_WINDOW_FEATURES#2"]


def test_a_savepoint_of_another_feature_set_is_refused() -> None:
    with pytest.raises(IncompatibleState, match="holds the state of feature set 'a', not 'b'"):
        statecheck.check(statecheck.manifest("a", 1, BASE), statecheck.manifest("b", 1, BASE),
                         savepoint="sp", definition_file=Path("b.sql"))  # fmt: skip


def test_manifest_round_trips_as_job_parameter_and_file(tmp_path: Path) -> None:
    manifest = Manifest("fs", "3", {"op": OperatorState("abc", "a, b: c")})
    parameter = manifest.to_parameter()
    assert "," not in parameter and ":" not in parameter
    assert Manifest.from_parameter(parameter) == manifest
    assert statecheck.read_saved(f"file:{tmp_path}") is None
    assert statecheck.write_saved(f"file:{tmp_path}", manifest) == tmp_path / "rtml-state.json"
    assert statecheck.read_saved(str(tmp_path)) == manifest
    assert statecheck.write_saved("s3://bucket/savepoints/sp-1", manifest) is None


def test_canonical_form_ignores_ids_and_descriptions() -> None:
    renumbered = copy.deepcopy(BASE)
    for n in renumbered["nodes"]:
        n["id"] += 10
        n["description"] = "another name"
    for e in renumbered["edges"]:
        e["source"] += 10
        e["target"] += 10
    assert statecheck.changes(
        statecheck.manifest("fs", 1, BASE), statecheck.manifest("fs", 1, renumbered)
    ) == []  # fmt: skip


# -- the real planner: fraud_card and edits of it -------------------------------------------------


def fraud_card_manifest(tmp_path: Path, name: str, edit) -> Manifest:  # noqa: ANN001
    folder = tmp_path / name
    folder.mkdir()
    shutil.copy(FEATURES_DIR / "fraud_card.yaml", folder / "fraud_card.yaml")
    sources = (FEATURES_DIR.parent / "sources").resolve()
    yaml_path = folder / "fraud_card.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("../sources", str(sources)))
    query = (FEATURES_DIR / "fraud_card.sql").read_text()
    edited = edit(query)
    assert edited != query or name.startswith("same"), f"the edit {name} did not apply"
    (folder / "fraud_card.sql").write_text(edited)

    from jobs.features import source_params

    settings = FeatureJobSettings()
    definition = featuresets.load("fraud_card", folder)
    t_env = flinkjob.table_environment(settings, f"statecheck-{name}")
    params = source_params(definition, settings)
    for statement in [
        *sqlfiles.load("common/raw_source.sql", params),
        *sqlfiles.render(definition.source.sql.read_text(), params, definition.source.sql),
    ]:
        t_env.execute_sql(statement.text)
    (query_statement,) = sqlfiles.render(definition.query.read_text(), {}, definition.query)
    table = t_env.sql_query(query_statement.text)
    return statecheck.manifest(
        "fraud_card", definition.version, statecheck.compiled_plan(t_env, table)
    )


def test_fraud_card_edits_through_flinks_planner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = fraud_card_manifest(tmp_path, "same", lambda q: q)
    assert "SLIDING_WINDOW_FEATURES" in base.operators
    call = "\nFROM SLIDING_WINDOW_FEATURES("
    doubled = ",\n  counts[1] * 2 AS doubled_1m" + call
    derived = fraud_card_manifest(tmp_path, "derived", lambda q: q.replace(call, doubled))
    old, new = "'1 min, 5 min, 1 h, 24 h'", "'2 min, 5 min, 1 h, 24 h'"
    windows = fraud_card_manifest(tmp_path, "windows", lambda q: q.replace(old, new))
    assert statecheck.changes(base, derived) == []
    (change,) = statecheck.changes(base, windows)
    assert change.operator == "SLIDING_WINDOW_FEATURES" and change.kind == "changed"
    assert "'1 min, 5 min, 1 h, 24 h'" in (change.before or "")
    assert "'2 min, 5 min, 1 h, 24 h'" in (change.after or "")
    # the manifest survives JSON, as it does in a savepoint folder
    assert Manifest.from_json(json.dumps(json.loads(base.to_json()))) == base
    # the planner's node for the call is recognised: an older state layout is refused
    monkeypatch.setattr(versions, "SLIDING_WINDOW_STATE_LAYOUT", 2)
    older = fraud_card_manifest(tmp_path, "same-older-layout", lambda q: q)
    (change,) = statecheck.changes(older, base)
    assert change.operator == "SLIDING_WINDOW_FEATURES" and change.kind == "changed"
