"""Unit tests of the pure parts of the Flink client: job names, `flink run` argv, failure text."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtml import flinkrest
from rtml.flinkrest import FlinkError
from rtml.settings import PROJECT_ROOT

FLINK = Path("/opt/flink/bin/flink")
PY = Path("/venv/bin/python")
ENV = {"PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize("job", ["smoke", "jobs.smoke", "jobs/smoke.py", "smoke.py", "jobs/smoke"])
def test_job_module_accepts_the_usual_spellings(job: str) -> None:
    assert flinkrest.job_module(job) == "jobs.smoke"


@pytest.mark.parametrize("job", ["nope", "jobs.nope", "jobs/nope.py", "rtml/cli", "__init__x"])
def test_job_module_rejects_unknown_jobs_listing_the_available_ones(job: str) -> None:
    available = sorted(
        p.stem for p in (PROJECT_ROOT / "jobs").glob("*.py") if not p.stem.startswith("_")
    )
    assert "smoke" in available
    with pytest.raises(FlinkError) as caught:
        flinkrest.job_module(job)
    message = str(caught.value)
    assert message.startswith(f"no job {job!r}: ")
    assert "does not exist" in message
    assert message.endswith(f"(jobs: {', '.join(available)})")
    assert "__init__" not in message.split("(jobs:")[1]


def test_submit_argv_attached() -> None:
    assert flinkrest.submit_argv(FLINK, "jobs.smoke", cluster="127.0.0.1:8081", python=PY) == [
        "/opt/flink/bin/flink",
        "run",
        "-m",
        "127.0.0.1:8081",
        "-pym",
        "jobs.smoke",
        "-pyclientexec",
        "/venv/bin/python",
    ]


def test_submit_argv_detached() -> None:
    argv = flinkrest.submit_argv(FLINK, "jobs.smoke", cluster="c:8081", python=PY, detached=True)
    assert argv == [
        "/opt/flink/bin/flink",
        "run",
        "-m",
        "c:8081",
        "-pym",
        "jobs.smoke",
        "-pyclientexec",
        "/venv/bin/python",
        "--detached",
    ]


def test_submit_argv_from_savepoint() -> None:
    argv = flinkrest.submit_argv(
        FLINK, "jobs.smoke", cluster="c:8081", python=PY, from_savepoint="file:///sp/savepoint-1"
    )
    assert argv[8:] == ["--fromSavepoint", "file:///sp/savepoint-1"]


def test_submit_argv_from_savepoint_allowing_non_restored_state_detached() -> None:
    argv = flinkrest.submit_argv(
        FLINK,
        "jobs.smoke",
        cluster="c:8081",
        python=PY,
        from_savepoint="s3://b/sp",
        allow_non_restored_state=True,
        detached=True,
    )
    assert argv[:8] == ["/opt/flink/bin/flink", "run", "-m", "c:8081", "-pym", "jobs.smoke"] + [
        "-pyclientexec",
        "/venv/bin/python",
    ]
    assert argv[8:] == ["--detached", "--fromSavepoint", "s3://b/sp", "--allowNonRestoredState"]


@pytest.mark.parametrize("savepoint", [None, ""])
def test_allow_non_restored_state_only_with_a_savepoint(savepoint: str | None) -> None:
    argv = flinkrest.submit_argv(
        FLINK,
        "jobs.smoke",
        cluster="c:8081",
        python=PY,
        from_savepoint=savepoint,
        allow_non_restored_state=True,
    )
    assert "--allowNonRestoredState" not in argv
    assert "--fromSavepoint" not in argv
    assert len(argv) == 8


def test_submit_argv_claims_the_savepoint_only_when_asked() -> None:
    def argv(**options: object) -> list[str]:
        return flinkrest.submit_argv(
            FLINK, "jobs.smoke", cluster="c:8081", python=PY, from_savepoint="file:///sp/x",
            **options,  # type: ignore[arg-type]
        )  # fmt: skip

    assert argv(claim=True)[8:] == ["--fromSavepoint", "file:///sp/x", "--claimMode", "claim"]
    assert "--claimMode" not in argv()
    no_savepoint = flinkrest.submit_argv(FLINK, "jobs.smoke", cluster="c", python=PY, claim=True)
    assert "--claimMode" not in no_savepoint


def test_flink_bin() -> None:
    assert flinkrest.flink_bin(Path("/p/pyflink")) == Path("/p/pyflink/bin/flink")


FAILED_RUN = """\
Job has been submitted with JobID 0123456789abcdef0123456789abcdef
Traceback (most recent call last):
  File "/work/main/jobs/smoke.py", line 48, in <module>
    main()
  File "/work/main/rtml/flinkjob.py", line 72, in run_statements
    raise SqlFileError(
rtml.sqlfiles.SqlFileError: sql/smoke/tables.sql:5: Object 'x' not found

org.apache.flink.client.program.ProgramAbortException: java.lang.RuntimeException: Python exited
\tat org.apache.flink.client.python.PythonDriver.main(PythonDriver.java:134)
\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)
Caused by: java.lang.RuntimeException: Python process exits with code: 1
        at org.apache.flink.client.python.PythonDriver.main(PythonDriver.java:124)
        ... 13 more
"""


def test_explain_failure_keeps_python_traceback_and_drops_java_frames() -> None:
    assert flinkrest.explain_failure(FAILED_RUN) == "\n".join(
        [
            "Traceback (most recent call last):",
            '  File "/work/main/jobs/smoke.py", line 48, in <module>',
            "    main()",
            '  File "/work/main/rtml/flinkjob.py", line 72, in run_statements',
            "    raise SqlFileError(",
            "rtml.sqlfiles.SqlFileError: sql/smoke/tables.sql:5: Object 'x' not found",
            "org.apache.flink.client.program.ProgramAbortException: "
            "java.lang.RuntimeException: Python exited",
            "Caused by: java.lang.RuntimeException: Python process exits with code: 1",
        ]
    )


def test_explain_failure_limits_from_the_traceback_start() -> None:
    output = "noise before\nTraceback (most recent call last):\n" + "".join(
        f"line {i}\n" for i in range(100)
    )
    assert flinkrest.explain_failure(output, limit=3) == (
        "Traceback (most recent call last):\nline 0\nline 1"
    )


def test_explain_failure_without_traceback_keeps_the_last_lines_without_frames() -> None:
    output = "\n".join(
        ["Starting job", "", "java.lang.IllegalStateException: no slots"]
        + ["\tat org.apache.flink.Foo.bar(Foo.java:1)"] * 50
        + ["Caused by: java.net.ConnectException: Connection refused", "\t... 7 more", ""]
    )
    assert flinkrest.explain_failure(output) == "\n".join(
        [
            "Starting job",
            "java.lang.IllegalStateException: no slots",
            "Caused by: java.net.ConnectException: Connection refused",
        ]
    )
    assert flinkrest.explain_failure(output, limit=1) == (
        "Caused by: java.net.ConnectException: Connection refused"
    )


def test_explain_failure_of_empty_output() -> None:
    assert flinkrest.explain_failure("") == ""


def test_submit_detached_returns_the_printed_job_id_and_marks_the_env() -> None:
    job_id = "0123456789abcdef0123456789abcdef"
    script = (
        '[ "$RTML_TARGET" = cluster ] && [ "$RTML_DETACHED" = true ] && '
        f'echo "Job has been submitted with JobID {job_id}"'
    )
    argv = ["sh", "-c", script]
    assert flinkrest.submit(argv, ENV, detached=True) == job_id


def test_submit_detached_failure_explains_itself() -> None:
    argv = [
        "sh",
        "-c",
        'printf "Traceback (most recent call last):\\nValueError: bad\\n'
        '\\tat org.Foo.bar(Foo.java:1)\\n"; exit 3',
    ]
    with pytest.raises(FlinkError) as caught:
        flinkrest.submit(argv, ENV, detached=True)
    assert str(caught.value) == (
        "`flink run` failed (exit 3):\nTraceback (most recent call last):\nValueError: bad"
    )


def test_submit_detached_without_job_id_is_an_error_even_on_exit_0() -> None:
    with pytest.raises(FlinkError, match=r"^`flink run` failed \(exit 0\):\nsubmitted\?$"):
        flinkrest.submit(["sh", "-c", "echo 'submitted?'"], ENV, detached=True)


def test_dead_letter_counts_sum_each_reason_over_subtasks_and_ignore_other_metrics() -> None:
    metrics = {
        "0.Calc[4].rtml_dead_letters.reason.invalid_json.count": "2",
        "1.Calc[4].rtml_dead_letters.reason.invalid_json.count": "3",
        "0.Calc[4].rtml_dead_letters.reason.late_event.count": "1",
        "0.Calc[4].rtml_dead_letters.reason.odd.reason.with.dots.count": "4",
        "0.Calc[4].numRecordsIn": "100",
        "0.Calc[4].rtml_dead_letters.reason.invalid_json.countPerSecond": "7",
    }
    assert flinkrest.dead_letter_counts(metrics) == {
        "invalid_json": 5,
        "late_event": 1,
        "odd.reason.with.dots": 4,
    }
    assert flinkrest.dead_letter_counts({}) == {}


def test_dead_letter_counts_of_a_job_asks_every_vertex_for_only_its_counters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listed = {
        "v1": ["0.Source.numRecordsOut", "0.Calc[2].rtml_dead_letters.reason.missing_key.count"],
        "v2": ["0.Sink.numRecordsIn"],
    }
    values = {"0.Calc[2].rtml_dead_letters.reason.missing_key.count": "6"}
    calls: list[tuple[str, dict | None]] = []

    def fake_call(method: str, path: str, **kwargs: object) -> object:
        params = kwargs.get("params")
        calls.append((path, params))  # type: ignore[arg-type]
        if path == "/jobs/j1":
            return {"vertices": [{"id": "v1"}, {"id": "v2"}]}
        vertex = path.split("/")[4]
        if params is None:
            return [{"id": name} for name in listed[vertex]]
        return [{"id": name, "value": values[name]} for name in params["get"].split(",")]  # type: ignore[index]

    rest = flinkrest.FlinkRest("http://jm:8081")
    monkeypatch.setattr(rest, "_call", fake_call)
    assert rest.dead_letter_counts("j1") == {"missing_key": 6}
    asked = [params["get"] for _, params in calls if params]
    assert asked == ["0.Calc[2].rtml_dead_letters.reason.missing_key.count"]  # v2: no request


def test_matching_vertex_metrics_lists_again_when_the_values_came_from_a_newer_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The JobManager answers each request from its last fetch: here a fetch lands between the
    # first listing and the values, and brings a counter first incremented meanwhile.
    old = {"0.Op.g.rows": "300"}
    new = {"0.Op.g.rows": "800", "0.Op.g.probes": "1", "0.Op.numRecordsIn": "800"}
    stores = iter([old] + [new] * 9)  # the first listing is old, every later answer new
    store: dict[str, str] = {}
    asked: list[str] = []

    def fake_call(method: str, path: str, **kwargs: object) -> object:
        nonlocal store
        store = next(stores)
        params = kwargs.get("params")
        if params is None:
            return [{"id": name} for name in store]
        names = params["get"].split(",")  # type: ignore[index]
        asked.append(params["get"])  # type: ignore[index]
        return [{"id": name, "value": store[name]} for name in names if name in store]

    rest = flinkrest.FlinkRest("http://jm:8081")
    monkeypatch.setattr(rest, "_call", fake_call)
    got = rest.matching_vertex_metrics("j1", "v1", lambda name: ".g." in name)
    assert got == {"0.Op.g.rows": "800", "0.Op.g.probes": "1"}
    assert asked == ["0.Op.g.rows", "0.Op.g.probes,0.Op.g.rows"]
    # nothing matching: one listing, no values asked
    stores, asked[:] = iter([new]), []
    assert rest.matching_vertex_metrics("j1", "v1", lambda name: ".h." in name) == {}
    assert asked == []


def test_wait_for_dead_letter_counts_polls_until_equal_or_returns_the_last_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter([{}, {"late_event": 1}, {"late_event": 2}])
    rest = flinkrest.FlinkRest("http://jm:8081")
    monkeypatch.setattr(rest, "dead_letter_counts", lambda job_id: next(answers))
    monkeypatch.setattr(flinkrest.time, "sleep", lambda seconds: None)
    assert rest.wait_for_dead_letter_counts("j1", {"late_event": 1}) == {"late_event": 1}
    # never equal: the last counts come back once the time is up
    monkeypatch.setattr(rest, "dead_letter_counts", lambda job_id: {"late_event": 2})
    assert rest.wait_for_dead_letter_counts("j1", {"late_event": 1}, timeout_s=0) == {
        "late_event": 2
    }


def test_alive_job_is_the_newest_running_or_restarting_job_of_that_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def job(jid: str, name: str, state: str, start: int) -> dict:
        return {"jid": jid, "name": name, "state": state, "start-time": start, "duration": 1}

    overview = {"jobs": [
        job("old", "rtml-smoke", "RUNNING", 1), job("new", "rtml-smoke", "RESTARTING", 2),
        job("done", "rtml-smoke", "CANCELED", 3), job("other", "rtml-scoring-fraud", "RUNNING", 4),
    ]}  # fmt: skip
    rest = flinkrest.FlinkRest("http://127.0.0.1:1")
    monkeypatch.setattr(rest, "_call", lambda method, path, **_: overview)
    assert rest.alive_job("rtml-smoke") == "new"
    assert rest.alive_job("rtml-scoring-fraud") == "other"
    assert rest.alive_job("rtml-features-fraud_card") is None
    overview["jobs"] = [job("done", "rtml-smoke", "FAILED", 1)]
    assert rest.alive_job("rtml-smoke") is None
