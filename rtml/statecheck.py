"""Does a savepoint's state still fit an edited feature set? Decided before Flink restores it.

Flink maps savepoint state to operators by uid. SLIDING_WINDOW_FEATURES keeps its uid (the
function's name) whatever its arguments, so after an edit of the windows Flink happily loads state
built for the old windows into the new operator: wrong features for a while, or a job that fails
on every restart if the number of windows changed. So rtml records, with every feature job, a
**state manifest**: for each stateful operator of the feature set's compiled plan, a fingerprint
of everything that gives its state a meaning (the operator's own definition and all of its
inputs, back to the source topic), and compares it with the edited definition's manifest before it
restores a savepoint.

- An edit after the stateful operators (a derived column, a ratio, a renamed output) leaves the
  fingerprints alone: the state is kept.
- An edit of windows, keys, aggregated columns or anything upstream of them (the source's
  parsing, a filter) changes a fingerprint: `check` names the feature set and the operator and
  refuses, and the user chooses to start fresh or to backfill.

Connection options (bootstrap servers, group ids, startup mode) are left out of the
fingerprints: moving a job to another cluster does not change what its state means.

The manifest travels in the job's configuration (`pipeline.global-job-parameters`, key
`rtml.state-manifest`, so the REST API shows it) and is written next to a savepoint by
`rtml jobs stop --savepoint` (file `rtml-state.json`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtml import savepoints, versions

if TYPE_CHECKING:  # PyFlink is imported where a plan is compiled: the CLI stays quick
    from pyflink.table import StreamTableEnvironment, Table

MANIFEST_FILE = "rtml-state.json"
JOB_PARAMETER = "rtml.state-manifest"

# Node types (of Flink's compiled JSON plan) whose operators keep keyed or window state.
_STATEFUL = re.compile(
    r"process-table-function|aggregate|join|deduplicate|rank|changelog-normalize|match|limit|sort"
)
# Source options that say where the data is, not what it is.
_CONNECTION_OPTIONS = re.compile(
    r"^(properties\..*|scan\.startup\..*|scan\.bounded\..*|scan\.watermark\.idle-timeout"
    r"|sink\.transactional-id-prefix)$"
)
_NODE_VERSION = re.compile(r"_\d+$")
_SLIDING_WINDOW_FEATURES = re.compile(
    r"SLIDING_WINDOW_FEATURES|dev\.rtml\.udfs\.SlidingWindowFeatures"
)


class IncompatibleState(RuntimeError):
    """The savepoint's state does not fit the feature set as it is now."""


@dataclass(frozen=True)
class OperatorState:
    fingerprint: str
    detail: str  # what a person reads: the operator's description, shortened


@dataclass(frozen=True)
class Manifest:
    featureset: str
    version: str
    operators: dict[str, OperatorState]

    def to_json(self) -> str:
        return json.dumps(
            {
                "featureset": self.featureset,
                "version": self.version,
                "operators": {
                    key: {"fingerprint": op.fingerprint, "detail": op.detail}
                    for key, op in sorted(self.operators.items())
                },
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        body = json.loads(text)
        return cls(
            featureset=body["featureset"],
            version=str(body["version"]),
            operators={
                key: OperatorState(op["fingerprint"], op["detail"])
                for key, op in body["operators"].items()
            },
        )

    def to_parameter(self) -> str:
        """Compact and free of ',' and ':' (the separators of global job parameters)."""
        return base64.urlsafe_b64encode(self.to_json().encode()).decode().rstrip("=")

    @classmethod
    def from_parameter(cls, value: str) -> Manifest:
        padded = value + "=" * (-len(value) % 4)
        return cls.from_json(base64.urlsafe_b64decode(padded).decode())


# The state layout rtml recorded for SLIDING_WINDOW_FEATURES before it recorded one at all: its
# manifests then had no layout, and its savepoints hold layout 2.
UNRECORDED_LAYOUT = 0


def describe_layout(layout: int) -> str:
    if layout == UNRECORDED_LAYOUT:
        return "layout 2 (saved by an rtml from before layouts were recorded, 2026-12-04)"
    return f"layout {layout}"


def _canonical(node: Mapping[str, Any], state_layout: int) -> Any:
    """The node without what changes when nothing that matters does (ids, names, options).

    A call of SLIDING_WINDOW_FEATURES also carries the function's state layout: its state means
    something else after the layout changed, though the plan is the same.
    """
    body = {k: v for k, v in node.items() if k not in ("id", "description")}
    body["type"] = _NODE_VERSION.sub("", str(body.get("type", "")))
    if (
        body["type"].endswith("process-table-function")
        and _SLIDING_WINDOW_FEATURES.search(json.dumps(node))
        and state_layout != UNRECORDED_LAYOUT
    ):
        body["rtml.sliding-window-state-layout"] = state_layout
    table = body.get("scanTableSource", {}).get("table", {}).get("resolvedTable")
    if table is not None:
        table = {**table, "options": {
            k: v for k, v in table.get("options", {}).items() if not _CONNECTION_OPTIONS.match(k)
        }}  # fmt: skip
        body["scanTableSource"] = {
            **body["scanTableSource"],
            "table": {**body["scanTableSource"]["table"], "resolvedTable": table},
        }
    return body


def _short(text: str, limit: int = 240) -> str:
    text = re.sub(r"_UTF-16LE'", "'", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def manifest(
    featureset: str, version: object, plan: Mapping[str, Any], *, state_layout: int | None = None
) -> Manifest:
    """The state manifest of a compiled plan (`CompiledPlan.as_json_string()`, parsed).

    `state_layout`: SLIDING_WINDOW_FEATURES' layout to record (default: this rtml's), e.g. an
    older one to tell whether a savepoint differs only by it (`layout_changes`).
    """
    if state_layout is None:
        state_layout = versions.SLIDING_WINDOW_STATE_LAYOUT
    nodes = {node["id"]: node for node in plan["nodes"]}
    inputs: dict[int, list[int]] = {node_id: [] for node_id in nodes}
    for edge in plan.get("edges", []):
        inputs[edge["target"]].append(edge["source"])
    memo: dict[int, str] = {}

    def fingerprint(node_id: int) -> str:
        if node_id not in memo:
            own = json.dumps(_canonical(nodes[node_id], state_layout), sort_keys=True)
            upstream = [fingerprint(source) for source in inputs[node_id]]
            memo[node_id] = hashlib.sha256("\n".join([own, *upstream]).encode()).hexdigest()[:16]
        return memo[node_id]

    operators: dict[str, OperatorState] = {}
    seen: dict[str, int] = {}
    for node_id in sorted(nodes):
        node = nodes[node_id]
        kind = _NODE_VERSION.sub("", str(node["type"])).removeprefix("stream-exec-")
        if not _STATEFUL.search(kind):
            continue
        name = str(node.get("uid") or kind)
        seen[name] = seen.get(name, 0) + 1
        key = name if seen[name] == 1 else f"{name}#{seen[name]}"
        operators[key] = OperatorState(fingerprint(node_id), _short(str(node.get("description"))))
    return Manifest(featureset, str(version), operators)


@dataclass(frozen=True)
class Change:
    operator: str
    kind: str  # "changed", "removed" or "added"
    before: str | None
    after: str | None


def changes(saved: Manifest, current: Manifest) -> list[Change]:
    """What differs between the savepoint's manifest and the current one, operator by operator."""
    found = []
    for key in sorted(saved.operators.keys() | current.operators.keys()):
        old, new = saved.operators.get(key), current.operators.get(key)
        if old is None:
            found.append(Change(key, "added", None, new.detail if new else None))
        elif new is None:
            found.append(Change(key, "removed", old.detail, None))
        elif old.fingerprint != new.fingerprint:
            found.append(Change(key, "changed", old.detail, new.detail))
    return found


def layout_changes(saved: Manifest, current: Manifest, plan: Mapping[str, Any]) -> dict[str, int]:
    """The saved operators that differ from `plan` (whose manifest is `current`) only by
    SLIDING_WINDOW_FEATURES' state layout: {operator: the savepoint's layout} (UNRECORDED_LAYOUT:
    saved before layouts were recorded).

    Their definition is the same; the rtml that saved them kept the function's state in an older
    layout. Operators that do not depend on the layout are left out.
    """
    found: dict[str, int] = {}
    for layout in (UNRECORDED_LAYOUT, *range(1, versions.SLIDING_WINDOW_STATE_LAYOUT)):
        older = manifest(saved.featureset, saved.version, plan, state_layout=layout)
        for key, op in older.operators.items():
            kept = saved.operators.get(key)
            if kept is None or key in found or op == current.operators[key]:
                continue
            if kept.fingerprint == op.fingerprint:
                found[key] = layout
    return found


def check(
    saved: Manifest,
    current: Manifest,
    *,
    savepoint: str,
    definition_file: Path,
    layouts: Mapping[str, int] | None = None,
) -> None:
    """Raise `IncompatibleState` with what to do when the state no longer fits; else return.

    An added operator is fine (it starts empty and Flink says nothing); a changed or removed one
    is not: Flink would load wrong state into it, or refuse the savepoint. `layouts` names the
    operators whose only change is SLIDING_WINDOW_FEATURES' state layout (`layout_changes`), so
    the message blames rtml's upgrade, not the definition.
    """
    if saved.featureset != current.featureset:
        raise IncompatibleState(
            f"the savepoint {savepoint} holds the state of feature set {saved.featureset!r}, "
            f"not {current.featureset!r}"
        )
    layouts = layouts or {}
    problems = [c for c in changes(saved, current) if c.kind != "added"]
    if not problems:
        return
    only_layouts = all(c.kind == "changed" and c.operator in layouts for c in problems)
    head = (
        f"feature set {current.featureset!r} (version {saved.version} in the savepoint, "
        f"{current.version} now) cannot keep its state: "
    )
    if only_layouts:
        head += (
            "its definition is the same, but this rtml keeps SLIDING_WINDOW_FEATURES' state in "
            f"layout {versions.SLIDING_WINDOW_STATE_LAYOUT}, not in the savepoint's."
        )
    else:
        head += f"{definition_file} changed what it holds."
    lines = [head]
    for change in problems:
        if change.kind == "changed" and change.operator in layouts:
            lines.append(f"  - {change.operator}: only its state layout changed")
            lines.append(f"      savepoint: {describe_layout(layouts[change.operator])}")
            lines.append(f"      now:       layout {versions.SLIDING_WINDOW_STATE_LAYOUT}")
            continue
        lines.append(f"  - {change.operator} {change.kind}:")
        lines.append(f"      savepoint: {change.before}")
        if change.after is not None:
            lines.append(f"      now:       {change.after}")
    name = current.featureset
    what = (
        "in the old layout into this rtml"
        if only_layouts
        else "built for the old definition into the new one"
    )
    lines += [
        f"Restoring it would load state {what}, so rtml",
        f"stops here. The savepoint is untouched ({savepoint}). Choose one:",
        f"  rtml submit features {name} --start-fresh   empty windows; reading resumes at the"
        " offsets the stopped job committed",
        f"  rtml submit features {name} --backfill      empty windows, rebuilt by re-reading the"
        " source topic for the longest window",
    ]
    if not only_layouts:
        lines.append(
            "and consider raising `version:` in the feature set's YAML: readers of Redis and of"
            " the features topic tell old values from new by it."
        )
    raise IncompatibleState("\n".join(lines))


def read_saved(savepoint: str) -> Manifest | None:
    """The manifest next to a savepoint (a local path or file: URI), None when there is none."""
    folder = savepoints.local_folder(savepoint)
    path = folder / MANIFEST_FILE if folder else None
    return Manifest.from_json(path.read_text()) if path and path.is_file() else None


def write_saved(savepoint: str, saved: Manifest) -> Path | None:
    """Put the manifest next to a savepoint on a local file system; None when it is remote."""
    folder = savepoints.local_folder(savepoint)
    if folder is None or not folder.is_dir():
        return None
    path = folder / MANIFEST_FILE
    path.write_text(saved.to_json() + "\n")
    return path


def compiled_plan(t_env: StreamTableEnvironment, table: Table) -> dict[str, Any]:
    """Flink's compiled plan of `table` written to a throw-away sink (no job runs)."""
    from pyflink.table import Schema, TableDescriptor

    schema = Schema.new_builder().from_row_data_type(table.get_schema().to_row_data_type()).build()
    sink = "rtml_statecheck_sink"
    t_env.create_temporary_table(
        sink, TableDescriptor.for_connector("blackhole").schema(schema).build()
    )
    try:
        statements = t_env.create_statement_set()
        statements.add_insert(sink, table)
        return json.loads(statements.compile_plan().as_json_string())
    finally:
        t_env.drop_temporary_table(sink)
