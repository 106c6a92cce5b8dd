"""Submit PyFlink jobs with Flink's CLI and manage them through the JobManager's REST API."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from rtml.settings import PROJECT_ROOT

_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
# COUNT_DEAD_LETTER's counters (udfs/java/.../CountDeadLetter.java), as the REST API names them:
# `<subtask>.<operator>.rtml_dead_letters.reason.<reason>.count`.
DEAD_LETTER_GROUP = "rtml_dead_letters"
_DEAD_LETTER_METRIC = re.compile(rf"(?:^|\.){DEAD_LETTER_GROUP}\.reason\.(.+)\.count$")


# Listings of a vertex's metrics before its values are taken as they are (see
# FlinkRest.matching_vertex_metrics); the JobManager fetches anew at most every 10 s, so the
# second listing already agrees unless a request takes that long.
_METRIC_LISTINGS = 3

ALIVE_STATES = frozenset({"CREATED", "INITIALIZING", "RUNNING", "RESTARTING"})


class FlinkError(RuntimeError):
    """A cluster call failed; the message says which call and what the cluster answered."""


@dataclass(frozen=True)
class JobSummary:
    job_id: str
    name: str
    state: str
    start_time_ms: int
    duration_ms: int


def job_module(job: str) -> str:
    """`smoke` or `jobs.smoke` or `jobs/smoke.py` -> `jobs.smoke`, checked to exist."""
    name = job.removesuffix(".py").replace("/", ".")
    module = name if name.startswith("jobs.") else f"jobs.{name}"
    path = PROJECT_ROOT / (module.replace(".", "/") + ".py")
    if not path.is_file():
        available = sorted(
            p.stem for p in (PROJECT_ROOT / "jobs").glob("*.py") if not p.stem.startswith("_")
        )
        raise FlinkError(f"no job {job!r}: {path} does not exist (jobs: {', '.join(available)})")
    return module


def submit_argv(
    flink_bin: Path,
    module: str,
    *,
    cluster: str,
    python: Path,
    from_savepoint: str | None = None,
    allow_non_restored_state: bool = False,
    claim: bool = False,
    detached: bool = False,
    job_args: list[str] | None = None,
) -> list[str]:
    """The `flink run` command line for a PyFlink job module and its arguments (pure).

    `claim` restores the savepoint in CLAIM mode (the job owns it and deletes it once replaced).
    """
    argv = [str(flink_bin), "run", "-m", cluster, "-pym", module, "-pyclientexec", str(python)]
    if detached:
        argv.append("--detached")
    if from_savepoint:
        argv += ["--fromSavepoint", from_savepoint]
        if allow_non_restored_state:
            argv.append("--allowNonRestoredState")
        if claim:
            argv += ["--claimMode", "claim"]
    return argv + list(job_args or [])


def submit(argv: list[str], env: dict[str, str], *, detached: bool) -> str | None:
    """Run `flink run`; in detached mode return the job id it printed.

    Attached, the command's output streams to the terminal and this returns when the job ends.
    """
    env = {**env, "RTML_TARGET": "cluster", "RTML_DETACHED": "true" if detached else "false"}
    if not detached:
        subprocess.run(argv, env=env, cwd=PROJECT_ROOT, check=True)
        return None
    result = subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    output = result.stdout + result.stderr
    match = _JOB_ID.search(output)
    if result.returncode != 0 or match is None:
        raise FlinkError(
            f"`flink run` failed (exit {result.returncode}):\n{explain_failure(output)}"
        )
    return match.group(1)


class FlinkRest:
    """A small client of the JobManager REST API (`/jobs`, savepoints, cancel)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = requests.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.RequestException as error:
            raise FlinkError(f"Flink REST API at {self.base_url} not reachable: {error}") from None
        if not response.ok:
            raise FlinkError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def jobs(self) -> list[JobSummary]:
        """All jobs the cluster knows, newest first."""
        body = self._call("GET", "/jobs/overview")
        summaries = [
            JobSummary(j["jid"], j["name"], j["state"], j["start-time"], j["duration"])
            for j in body.get("jobs", [])
        ]
        return sorted(summaries, key=lambda j: j.start_time_ms, reverse=True)

    def alive_job(self, name: str) -> str | None:
        """The id of the newest job named `name` that is running or about to (created,
        initializing, restarting); None if there is none, so submitting it again is safe."""
        for job in self.jobs():
            if job.name == name and job.state in ALIVE_STATES:
                return job.job_id
        return None

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}")

    def user_config(self, job_id: str) -> dict[str, str]:
        """The job's global job parameters (`pipeline.global-job-parameters`)."""
        body = self._call("GET", f"/jobs/{job_id}/config")
        return dict(body.get("execution-config", {}).get("user-config", {}) or {})

    def cluster_config(self) -> dict[str, str]:
        """The JobManager's configuration (`/jobmanager/config`), key by key."""
        return {entry["key"]: entry["value"] for entry in self._call("GET", "/jobmanager/config")}

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}/checkpoints")

    def vertex_metrics(self, job_id: str, vertex_id: str, names: Sequence[str]) -> dict[str, str]:
        """Current values of the named metrics of a job vertex, by id (`<subtask>.<operator>.
        <metric>`, as the REST API names them); a name it does not have is left out. To find the
        names, `matching_vertex_metrics`: listing them is a request of its own.

        The JobManager answers from its last fetch of the TaskManagers' metrics and starts the
        next one (at most every `metrics.fetcher.update-interval`, 10 s by default) only when
        asked, so the first answer after a quiet spell is as old as the spell: poll.
        """
        if not names:
            return {}
        path = f"/jobs/{job_id}/vertices/{vertex_id}/metrics"
        answer = self._call("GET", path, params={"get": ",".join(names)})
        return {metric["id"]: metric["value"] for metric in answer}

    def matching_vertex_metrics(
        self, job_id: str, vertex_id: str, matches: Callable[[str], bool]
    ) -> dict[str, str]:
        """Current values of the vertex's metrics whose id `matches`, all from one fetch.

        Names and values are two requests, and the JobManager may answer them from two fetches
        (it answers from its last one and, when asked, starts the next, at most every
        `metrics.fetcher.update-interval`). Values from a newer fetch than the names would leave
        out the metrics registered in between, such as a counter first incremented then. So the
        names are listed again after the values, and the values asked again if new ones came.
        """
        path = f"/jobs/{job_id}/vertices/{vertex_id}/metrics"
        asked: set[str] = set()
        values: dict[str, str] = {}
        for _ in range(_METRIC_LISTINGS):
            names = {m["id"] for m in self._call("GET", path) if matches(m["id"])}
            if names <= asked:
                break
            asked |= names
            values = self.vertex_metrics(job_id, vertex_id, sorted(asked))
        return values

    def dead_letter_counts(self, job_id: str) -> dict[str, int]:
        """Dead letters per reason, as COUNT_DEAD_LETTER counted them in every vertex and subtask
        of the job (since each task started)."""
        values: dict[str, str] = {}
        for vertex in self.job(job_id).get("vertices", []):
            values.update(
                self.matching_vertex_metrics(
                    job_id, vertex["id"], lambda name: bool(_DEAD_LETTER_METRIC.search(name))
                )
            )
        return dead_letter_counts(values)

    def wait_for_dead_letter_counts(
        self, job_id: str, expected: Mapping[str, int], timeout_s: float = 60.0
    ) -> dict[str, int]:
        """Poll `dead_letter_counts` until it equals `expected` or the time is up; returns the
        last counts (the JobManager serves metrics it fetched up to 10 s ago)."""
        deadline = time.monotonic() + timeout_s
        counts = self.dead_letter_counts(job_id)
        while counts != expected and time.monotonic() < deadline:
            time.sleep(1.0)
            counts = self.dead_letter_counts(job_id)
        return counts

    def wait_for_state(self, job_id: str, states: set[str], timeout_s: float = 60.0) -> str:
        """Poll until the job reaches one of `states`; returns the state."""
        deadline = time.monotonic() + timeout_s
        state = "UNKNOWN"
        while time.monotonic() < deadline:
            state = self.job(job_id)["state"]
            if state in states:
                return state
            time.sleep(0.5)
        raise FlinkError(f"job {job_id} is {state}, not {sorted(states)} after {timeout_s:.0f} s")

    def stop_with_savepoint(
        self, job_id: str, target_directory: str | None = None, timeout_s: float = 300.0
    ) -> str:
        """Stop the job gracefully with a savepoint; returns the savepoint's path."""
        body: dict[str, Any] = {"drain": False, "formatType": "CANONICAL"}
        if target_directory:
            body["targetDirectory"] = target_directory
        trigger = self._call("POST", f"/jobs/{job_id}/stop", json=body)["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger}")
            if answer["status"]["id"] == "COMPLETED":
                operation = answer.get("operation", {})
                if "failure-cause" in operation:
                    cause = operation["failure-cause"].get("stack-trace", "")
                    raise FlinkError(f"savepoint of job {job_id} failed:\n{_last_lines(cause)}")
                return operation["location"]
            time.sleep(0.5)
        raise FlinkError(f"savepoint of job {job_id} not finished after {timeout_s:.0f} s")

    def cancel(self, job_id: str) -> None:
        self._call("PATCH", f"/jobs/{job_id}", params={"mode": "cancel"})


def dead_letter_counts(metrics: Mapping[str, str]) -> dict[str, int]:
    """Sum COUNT_DEAD_LETTER's counters per reason over subtasks and operators (pure).

    `metrics` maps REST metric ids to values; ids of other metrics are ignored.
    """
    counts: dict[str, int] = {}
    for name, value in metrics.items():
        match = _DEAD_LETTER_METRIC.search(name)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + int(float(value))
    return counts


def flink_bin(pyflink_home: Path) -> Path:
    return pyflink_home / "bin" / "flink"


def explain_failure(output: str, limit: int = 40) -> str:
    """The useful part of a failed `flink run`: the Python traceback and Java causes, no frames."""
    start = output.find("Traceback (most recent call last)")
    text = output[start:] if start >= 0 else output
    lines = [
        line
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("at ", "... "))
    ]
    return "\n".join(lines[-limit:] if start < 0 else lines[:limit])


def _last_lines(text: str, count: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-count:])
