"""What every rtml job shares: the table environment and running SQL files in it."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterable, Iterator, Mapping

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import StatementSet, StreamTableEnvironment, TableResult

from rtml import flinkconf, sqlfiles
from rtml.settings import JobSettings, StackSettings
from rtml.sqlfiles import SqlFileError, Statement
from rtml.versions import FLINK_KAFKA_CONNECTOR_JAR, UDFS_JAR


@contextlib.contextmanager
def java_calls_on_one_thread() -> Iterator[None]:
    """While in the block, Python's cyclic garbage collector is off, so that one Python thread's
    Py4J calls all run on one Java thread even while other Python threads run.

    Why: Flink's planner finds its Calcite metadata provider in a thread-local set on the Java
    thread that created the table environment; planning on another Java thread fails with
    "NullPointerException: metadataHandlerProvider". Py4J serves each of its connections on a
    Java thread of its own and hands a thread the last connection given back. A collection in
    another Python thread (a progress ticker, a Kafka poller) that frees Java objects sends
    their release on a new connection while the main thread is in a call, and the main thread
    may pick that connection next: seen in 2 of 3 `rtml backtest` test runs once offline runs
    made a few more calls. With the collector off, only the thread that holds Java objects
    frees them, between its own calls, on its own connection.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def job_configuration(settings: JobSettings, job_name: str) -> dict[str, str]:
    """The configuration a job sets on itself.

    On a cluster (`rtml submit`) the cluster's config.yaml decides checkpointing and state; a job
    only names itself and its jars. On the embedded MiniCluster the job brings the project profile
    from flink-conf/ and keeps its checkpoints under .rtml/local/.
    """
    jars = [settings.jars_dir / "flink" / name for name in (FLINK_KAFKA_CONNECTOR_JAR, UDFS_JAR)]
    for jar in jars:
        if not jar.is_file():
            raise FileNotFoundError(f"{jar} is missing: run `make setup`")
    conf = {
        "pipeline.name": job_name,
        "pipeline.jars": ";".join(jar.resolve().as_uri() for jar in jars),
        "parallelism.default": str(settings.parallelism),
        "table.local-time-zone": "UTC",
    }
    if settings.target == "local":
        local = StackSettings().home / "local" / job_name
        conf = {
            **flinkconf.job_level(flinkconf.load(settings.flink_conf_dir)),
            "execution.checkpointing.dir": (local / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (local / "savepoints").as_uri(),
            flinkconf.CHANGELOG_FOLDER_KEY: (local / "changelog").as_uri(),
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
            **conf,
        }
    return conf


def table_environment(
    settings: JobSettings, job_name: str, *, overrides: Mapping[str, str | None] | None = None
) -> StreamTableEnvironment:
    """A streaming table environment configured by `job_configuration`, rtml's functions known.

    `overrides` change that configuration (a None value removes the key), e.g. for offline runs.
    """
    conf: dict[str, str | None] = {**job_configuration(settings, job_name), **(overrides or {})}
    config = Configuration()
    for key, value in conf.items():
        if value is not None:
            config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    t_env = StreamTableEnvironment.create(env)
    for statement in sqlfiles.load("functions.sql", {}):
        t_env.execute_sql(statement.text)
    return t_env


def statement_set(t_env: StreamTableEnvironment, statements: Iterable[Statement]) -> StatementSet:
    """Run the DDL among `statements` at once; collect their INSERTs into one statement set."""
    inserts = t_env.create_statement_set()
    for statement in statements:
        try:
            if statement.text.upper().startswith("INSERT"):
                inserts.add_insert_sql(statement.text)
            else:
                t_env.execute_sql(statement.text)
        except Exception as error:  # noqa: BLE001 - Py4J wraps the planner's errors; add the place
            raise SqlFileError(
                f"{statement.source}:{statement.line}: {_first_line(error)}"
            ) from error
    return inserts


def execute(inserts: StatementSet, *, detached: bool, sources: Iterable[str] = ()) -> TableResult:
    """Submit the statement set as one job; wait for it unless `detached`."""
    try:
        result = inserts.execute()
    except Exception as error:  # noqa: BLE001 - the planner's message is the useful part
        where = ", ".join(sorted(set(sources))) or "the job"
        raise SqlFileError(f"{where}: the job cannot be planned: {_first_line(error)}") from error
    job_client = result.get_job_client()
    if job_client is not None:
        print(f"rtml: submitted job {job_client.get_job_id()}", flush=True)
    if not detached:
        result.wait()
    return result


def run_statements(
    t_env: StreamTableEnvironment, statements: Iterable[Statement], *, detached: bool
) -> TableResult:
    """Run DDL at once and submit all INSERTs as one job; wait for it unless `detached`."""
    statements = list(statements)
    if not any(s.text.upper().startswith("INSERT") for s in statements):
        raise SqlFileError("no INSERT statement: the job would do nothing")
    inserts = statement_set(t_env, statements)
    return execute(inserts, detached=detached, sources=[str(s.source) for s in statements])


def _first_line(error: Exception) -> str:
    """The first line that says what went wrong (Py4J puts the Java message after a header)."""
    for line in str(error).splitlines():
        line = line.strip()
        if line and not line.startswith("An error occurred while calling"):
            return line.removeprefix(": ")
    return type(error).__name__
