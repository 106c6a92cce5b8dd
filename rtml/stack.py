"""The local stack: Kafka (KRaft), Redis, a Flink session cluster and a V2 model server on loopback.

`up` is idempotent: services already running are left alone, the rest are checked first (Java, jars,
binaries, free ports), then started in order and waited for. If one fails, everything this call
started is stopped again and the error names the service and its log file. `down` stops only the
processes rtml started (by pid file), with their children.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyflink
import requests

from rtml import flinkconf, flinkrest, model_repo, processes, savepoints, v2client
from rtml.settings import LOOPBACK, StackSettings
from rtml.versions import FLINK_KAFKA_CONNECTOR_JAR

PYFLINK_HOME = Path(pyflink.__file__).parent
MIN_JAVA = 17


class StackError(RuntimeError):
    """A stack operation failed; the message says which service, why, and where its log is."""


@dataclass(frozen=True)
class Service:
    """One process of the stack and how to prepare, start and probe it."""

    name: str
    ports: tuple[int, ...]
    needs_java: bool
    argv: Callable[[], list[str]]
    ready: Callable[[processes.Owned], bool]
    prepare: Callable[[], None] = lambda: None
    env: Callable[[], dict[str, str]] = lambda: dict(os.environ)  # the process's whole environment
    cwd: Callable[[], Path | None] = lambda: None
    info: Callable[[], dict[str, str]] = dict
    requirements: Callable[[], list[str]] = list  # problems that stop it from starting
    stop_grace_s: float = 30.0
    # Some servers report ready and then exit when a later step fails; watch them this long.
    settle_s: float = 0.0
    depends_on: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # "healthy", "starting/unhealthy", "stopped"
    pid: int | None
    ports: tuple[int, ...]
    log: Path


def find_java(env: Mapping[str, str]) -> Path | None:
    """The `java` Flink and Kafka would run: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = env.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return Path(java_home) / "bin" / "java"
    found = shutil.which("java", path=env.get("PATH", ""))
    return Path(found) if found else None


def java_major(version_output: str) -> int | None:
    """The major version from `java -version` output ('openjdk version "17.0.15"' -> 17)."""
    for line in version_output.splitlines():
        if "version" in line and '"' in line:
            number = line.split('"')[1]
            head = number.split(".")[0]
            if head == "1":  # Java 8 and older: "1.8.0_392"
                head = number.split(".")[1]
            return int(head) if head.isdigit() else None
    return None


def kafka_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's Uuid).

    Like Kafka's `Uuid.randomUuid`, never one that starts with '-': the storage tool would read
    `-t -BAv...` as an unknown option and refuse to format (one start in 64).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_server_properties(settings: StackSettings) -> dict[str, str]:
    """Broker+controller settings for one loopback node, ready for Flink's exactly-once sink."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK}:{settings.kafka_controller_port}",
        "listeners": (
            f"PLAINTEXT://{LOOPBACK}:{settings.kafka_port},"
            f"CONTROLLER://{LOOPBACK}:{settings.kafka_controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{settings.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(settings.runtime / "kafka" / "data"),
        # rtml creates each topic with the partitions it needs; a typo must not create a topic.
        "auto.create.topics.enable": "false",
        # Flink's transactional sink asks for up to 1 h; the broker's default cap is 15 min.
        "transaction.max.timeout.ms": "3600000",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        "log.retention.hours": "168",
    }


KAFKA_LOG4J2 = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class Stack:
    """The services of one local stack, described by `StackSettings`."""

    def __init__(self, settings: StackSettings | None = None) -> None:
        self.settings = settings or StackSettings()
        self.services: dict[str, Service] = {
            service.name: service
            for service in (
                self._kafka(),
                self._redis(),
                self._model_server(),
                self._flink_jobmanager(),
                self._flink_taskmanager(),
            )
        }

    # -- paths -----------------------------------------------------------------------------------

    def pid_file(self, name: str) -> Path:
        return self.settings.pids_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"

    def owned(self, name: str) -> processes.Owned | None:
        """The live process rtml started for service `name`, if any."""
        owned = processes.read_pid_file(self.pid_file(name))
        return owned if owned and processes.is_alive(owned) else None

    # -- operations ------------------------------------------------------------------------------

    def up(self, only: Iterable[str] | None = None) -> list[str]:
        """Start what is not running yet (all services, or `only` and what they depend on).

        Returns the names of the services this call started.
        """
        wanted = self._with_dependencies(only)
        to_start = [name for name in self.services if name in wanted and not self.owned(name)]
        problems = self._preflight(to_start)
        if problems:
            raise StackError("cannot start the stack:\n  - " + "\n  - ".join(problems))
        started: list[str] = []
        try:
            for name in to_start:
                self._start(self.services[name])
                started.append(name)
        except BaseException:
            for name in reversed(started):
                self._stop(self.services[name])
            raise
        return started

    def down(self, only: Iterable[str] | None = None) -> list[str]:
        """Stop the processes rtml started (all, or `only`); returns the names it stopped."""
        names = set(self.services) if only is None else set(only)
        unknown = names - set(self.services)
        if unknown:
            raise StackError(
                f"unknown service(s) {sorted(unknown)} (known: {', '.join(self.services)})"
            )
        stopped = []
        for service in reversed(list(self.services.values())):
            if service.name in names and self._stop(service):
                stopped.append(service.name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        """Each service's state, pid, ports and log file."""
        rows = []
        for service in self.services.values():
            owned = self.owned(service.name)
            if owned is None:
                state = "stopped"
            else:
                state = "healthy" if _safe(service.ready, owned) else "starting/unhealthy"
            rows.append(
                ServiceStatus(
                    service.name,
                    state,
                    owned.pid if owned else None,
                    service.ports,
                    self.log_file(service.name),
                )
            )
        return rows

    # -- internals -------------------------------------------------------------------------------

    def _with_dependencies(self, only: Iterable[str] | None) -> set[str]:
        if only is None:
            return set(self.services)
        wanted: set[str] = set()
        pending = list(only)
        while pending:
            name = pending.pop()
            if name not in self.services:
                known = ", ".join(self.services)
                raise StackError(f"unknown service {name!r} (known: {known})")
            if name not in wanted:
                wanted.add(name)
                pending.extend(self.services[name].depends_on)
        return wanted

    def _preflight(self, names: list[str]) -> list[str]:
        """Everything that would stop `names` from starting, found before anything starts."""
        problems: list[str] = []
        env = os.environ
        if any(self.services[name].needs_java for name in names):
            java = find_java(env)
            needers = ", ".join(n for n in names if self.services[n].needs_java)
            if java is None:
                problems.append(
                    f"Java {MIN_JAVA}+ is needed by {needers} but was not found "
                    "(no $JAVA_HOME/bin/java, no java on PATH): install a JDK/JRE "
                    "(e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
                )
            else:
                major = _java_major_of(java)
                if major is None or major < MIN_JAVA:
                    problems.append(
                        f"Java {MIN_JAVA}+ is needed by {needers}; {java} is version {major}"
                    )
        for name in names:
            service = self.services[name]
            problems.extend(f"{name}: {problem}" for problem in service.requirements())
            for port in service.ports:
                if processes.port_in_use(port):
                    problems.append(
                        f"{name}: port {LOOPBACK}:{port} is already in use by another process "
                        f"(free it, or choose another port with the RTML_*_PORT settings)"
                    )
        return problems

    def _start(self, service: Service) -> None:
        log = self.log_file(service.name)
        try:
            service.prepare()
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            raise StackError(
                f"{service.name} could not be prepared: {error} (log: {log})"
            ) from None
        # A predecessor that died (kill -9, OOM) may have left its children running in its process
        # group, e.g. a TaskManager's Python workers; its pid file is the only record of that
        # group, and the new process's replaces it: stop what is left first.
        self._stop(service)
        argv = service.argv()
        owned = processes.spawn(
            argv,
            pid_file=self.pid_file(service.name),
            log_file=log,
            env=service.env(),
            cwd=service.cwd() or self.settings.runtime,
            info=service.info(),
        )
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            if not processes.is_alive(owned):
                raise StackError(
                    f"{service.name} exited during start-up; see its log {log}:\n" + _tail(log, 15)
                )
            if _safe(service.ready, owned):
                time.sleep(service.settle_s)
                if processes.is_alive(owned):
                    return
                continue  # reported ready, then exited: the next turn of the loop says so
            time.sleep(0.5)
        processes.terminate(owned, grace_s=5)
        raise StackError(
            f"{service.name} was not ready after {self.settings.start_timeout_s:.0f} s; "
            f"see its log {log}:\n" + _tail(log, 15)
        )

    def _stop(self, service: Service) -> bool:
        owned = processes.read_pid_file(self.pid_file(service.name))
        if owned is None:
            return False
        was_alive = processes.is_alive(owned)
        processes.terminate(owned, grace_s=service.stop_grace_s)
        self.pid_file(service.name).unlink(missing_ok=True)
        return was_alive

    # -- the services ----------------------------------------------------------------------------

    def _java_env(self) -> dict[str, str]:
        java = find_java(os.environ)
        env = {"PATH": f"{self.settings.python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        if java is not None and "JAVA_HOME" not in os.environ:
            env["JAVA_HOME"] = str(java.resolve().parent.parent)
        return env

    def _kafka(self) -> Service:
        s = self.settings
        home = s.runtime / "kafka"
        jars = s.jars_dir / "kafka"

        def prepare() -> None:
            home.mkdir(parents=True, exist_ok=True)
            props = home / "server.properties"
            props.write_text("".join(f"{k}={v}\n" for k, v in kafka_server_properties(s).items()))
            (home / "log4j2.properties").write_text(KAFKA_LOG4J2)
            if not (home / "data" / "meta.properties").exists():
                subprocess.run(
                    [*self._kafka_java(), "kafka.tools.StorageTool", "format",
                     "-t", kafka_cluster_id(), "-c", str(props)],
                    check=True, capture_output=True, text=True,
                    env={**os.environ, **self._java_env()},
                )  # fmt: skip

        def ready(_: processes.Owned) -> bool:
            from kafka import KafkaAdminClient

            admin = KafkaAdminClient(
                bootstrap_servers=s.kafka_bootstrap, request_timeout_ms=3000,
                client_id="rtml-stack-probe",
            )  # fmt: skip
            try:
                admin.list_topics()
                return True
            finally:
                admin.close()

        def requirements() -> list[str]:
            if not list(jars.glob("kafka_2.13-*.jar")):
                return [f"Kafka jars missing in {jars}: run `make jars`"]
            return []

        return Service(
            name="kafka",
            ports=(s.kafka_port, s.kafka_controller_port),
            needs_java=True,
            prepare=prepare,
            argv=lambda: [*self._kafka_java(), "kafka.Kafka", str(home / "server.properties")],
            env=lambda: {**os.environ, **self._java_env()},
            ready=ready,
            requirements=requirements,
        )

    def _kafka_java(self) -> list[str]:
        java = find_java({**os.environ, **self._java_env()}) or Path("java")
        home = self.settings.runtime / "kafka"
        return [
            str(java), "-Xms256m", "-Xmx1g", "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            "-cp", str(self.settings.jars_dir / "kafka" / "*"),
        ]  # fmt: skip

    def _redis(self) -> Service:
        s = self.settings
        data = s.runtime / "redis"

        def argv() -> list[str]:
            data.mkdir(parents=True, exist_ok=True)
            return [
                shutil.which("redis-server") or "redis-server",
                "--bind", LOOPBACK, "--port", str(s.redis_port), "--dir", str(data),
                # Features survive a Redis restart: AOF, fsync every second.
                "--appendonly", "yes", "--appendfsync", "everysec",
                "--daemonize", "no", "--protected-mode", "yes",
            ]  # fmt: skip

        def ready(_: processes.Owned) -> bool:
            import redis

            client = redis.Redis(host=LOOPBACK, port=s.redis_port, socket_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()

        def requirements() -> list[str]:
            if shutil.which("redis-server") is None:
                return [
                    "redis-server not found on PATH: run `make setup` "
                    "(it installs Debian's redis-server)"
                ]
            return []

        return Service(
            name="redis", ports=(s.redis_port,), needs_java=False, argv=argv, ready=ready,
            requirements=requirements, stop_grace_s=15,
        )  # fmt: skip

    def _model_server(self) -> Service:
        s = self.settings

        def prepare() -> None:
            model_repo.write_server_settings(s.model_repo)
            model_repo.ensure_smoke_model(s.model_repo)

        def ready(_: processes.Owned) -> bool:
            return v2client.server_ready(s.model_url) and v2client.model_ready(s.model_url, "smoke")

        def requirements() -> list[str]:
            command = model_repo.mlserver_command(s.mlserver_venv, s.model_repo)[0]
            if not Path(command).exists():
                return [f"model server not installed ({command} missing): run `make setup`"]
            return []

        return Service(
            name="model-server",
            ports=(s.model_http_port, s.model_grpc_port, s.model_metrics_port),
            needs_java=False,
            prepare=prepare,
            argv=lambda: model_repo.mlserver_command(s.mlserver_venv, s.model_repo),
            # Inherited MLSERVER_* variables would override ours: mlserver_env drops them.
            env=lambda: model_repo.mlserver_env(
                s.model_http_port, s.model_grpc_port, s.model_metrics_port, base=os.environ
            ),
            cwd=lambda: s.model_repo,  # MLServer reads .env from its working directory
            ready=ready,
            requirements=requirements,
            stop_grace_s=15,
            settle_s=3.0,  # MLServer exits ~2 s in (code 0) when a model fails to load
        )

    def flink_env(self) -> dict[str, str]:
        """Environment for Flink's scripts (cluster processes and the `flink` CLI)."""
        return {
            **self._java_env(),
            "FLINK_HOME": str(PYFLINK_HOME),
            "FLINK_CONF_DIR": str(self.settings.runtime / "flink-conf"),
            "FLINK_LIB_DIR": str(self.settings.runtime / "flink-lib"),
            "FLINK_LOG_DIR": str(self.settings.logs_dir),
            "FLINK_PID_DIR": str(self.settings.pids_dir / "flink"),
            "PYFLINK_CLIENT_EXECUTABLE": str(self.settings.python),
            # Python workers score with the in-process fallback model: one native thread each.
            **{k: v for k, v in model_repo.MODEL_THREADS.items() if k not in os.environ},
        }

    def submit(
        self,
        job: str,
        *,
        cluster: str | None = None,
        detached: bool = False,
        from_savepoint: str | None = None,
        allow_non_restored_state: bool = False,
        job_args: list[str] | None = None,
    ) -> str | None:
        """Submit `jobs/JOB.py` with Flink's CLI (to this stack unless `cluster` names another).

        Detached, returns the job id; attached, returns when the job ends. On a cluster with the
        changelog state backend a savepoint is restored in CLAIM mode from a copy of it
        (`rtml.savepoints`), and the savepoint itself stays as it was.
        """
        cluster = cluster or f"{LOOPBACK}:{self.settings.flink_rest_port}"
        restore_from, claim = from_savepoint, False
        if from_savepoint:
            config = flinkrest.FlinkRest(f"http://{cluster}").cluster_config()
            if savepoints.needs_claim(config):
                stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{uuid.uuid4().hex[:6]}"
                restore_from, claim = savepoints.claimable(from_savepoint, stamp), True
        argv = flinkrest.submit_argv(
            flinkrest.flink_bin(PYFLINK_HOME),
            flinkrest.job_module(job),
            cluster=cluster,
            python=self.settings.python,
            from_savepoint=restore_from,
            allow_non_restored_state=allow_non_restored_state,
            claim=claim,
            detached=detached,
            job_args=job_args,
        )
        env = {**os.environ, **self.flink_client_env()}
        env.pop("RTML_RESTORE_FROM", None)
        if from_savepoint:  # the job checks that the savepoint's state still fits it
            env["RTML_RESTORE_FROM"] = from_savepoint
        try:
            return flinkrest.submit(argv, env, detached=detached)
        except flinkrest.FlinkError:
            copy = savepoints.local_folder(restore_from) if restore_from != from_savepoint else None
            if copy:  # no job was submitted to claim rtml's copy
                shutil.rmtree(copy, ignore_errors=True)
            raise

    def flink_client_env(self) -> dict[str, str]:
        """`flink_env` for the `flink` CLI, which also runs where no local stack was ever started.

        Without a rendered stack (a remote cluster only), the checked-in profile and PyFlink's
        own lib/ serve the client.
        """
        env = self.flink_env()
        if not (self.settings.runtime / "flink-conf" / "config.yaml").is_file():
            env["FLINK_CONF_DIR"] = str(self.settings.flink_conf_dir)
        if not (self.settings.runtime / "flink-lib").is_dir():
            env["FLINK_LIB_DIR"] = str(PYFLINK_HOME / "lib")
        return env

    def _flink_requirements(self) -> list[str]:
        jar = self.settings.jars_dir / "flink" / FLINK_KAFKA_CONNECTOR_JAR
        problems = []
        if not jar.is_file():
            problems.append(f"Flink Kafka connector {jar} missing: run `make jars`")
        try:
            flinkconf.load(self.settings.flink_conf_dir)
        except (OSError, ValueError) as error:
            problems.append(str(error))
        return problems

    def _flink_jobmanager(self) -> Service:
        s = self.settings

        def prepare() -> None:
            flinkconf.render(s, PYFLINK_HOME / "conf")
            link_flink_lib(s.runtime / "flink-lib")
            for folder in ("checkpoints", "savepoints", "flink-tmp"):
                (s.runtime / folder).mkdir(parents=True, exist_ok=True)

        def ready(_: processes.Owned) -> bool:
            return requests.get(f"{s.flink_rest_url}/overview", timeout=2).ok

        return Service(
            name="flink-jobmanager",
            ports=(s.flink_rest_port, s.flink_rpc_port),
            needs_java=True,
            prepare=prepare,
            argv=lambda: [str(PYFLINK_HOME / "bin" / "jobmanager.sh"), "start-foreground"],
            env=lambda: {**os.environ, **self.flink_env()},
            ready=ready,
            requirements=self._flink_requirements,
        )

    def _flink_taskmanager(self) -> Service:
        s = self.settings
        # A fresh id per start, so readiness means *this* TaskManager registered, not a dead one.
        resource_id = f"rtml-tm-{time.time_ns()}"

        def argv() -> list[str]:
            nonlocal resource_id
            resource_id = f"rtml-tm-{time.time_ns()}"
            return [
                str(PYFLINK_HOME / "bin" / "taskmanager.sh"),
                "start-foreground",
                f"-Dtaskmanager.resource-id={resource_id}",
            ]

        def ready(owned: processes.Owned) -> bool:
            expected = owned.info.get("resource_id", resource_id)
            listed = requests.get(f"{s.flink_rest_url}/taskmanagers", timeout=2).json()
            return any(tm["id"] == expected for tm in listed.get("taskmanagers", []))

        return Service(
            name="flink-taskmanager",
            ports=(),
            needs_java=True,
            argv=argv,
            env=lambda: {**os.environ, **self.flink_env()},
            info=lambda: {"resource_id": resource_id},
            ready=ready,
            depends_on=("flink-jobmanager",),
        )


def link_flink_lib(target: Path) -> Path:
    """The cluster's lib/: PyFlink's lib/ plus flink-python from its opt/.

    The pip package keeps flink-python in opt/, where only clients look; a session cluster needs
    it in lib/ to run jobs with Python functions (their operators are its classes). Links, so the
    venv itself stays as pip installed it.
    """
    target.mkdir(parents=True, exist_ok=True)
    jars = [
        *(PYFLINK_HOME / "lib").glob("*.jar"),
        *(PYFLINK_HOME / "opt").glob("flink-python-*.jar"),
    ]
    for stale in target.glob("*.jar"):
        stale.unlink()
    for jar in jars:
        (target / jar.name).symlink_to(jar)
    return target


def _safe(probe: Callable[[processes.Owned], bool], owned: processes.Owned) -> bool:
    """A readiness probe that treats any failure to answer as "not ready yet"."""
    try:
        return probe(owned)
    except Exception:  # noqa: BLE001 - a probe may fail in many ways while a service starts
        return False


def _java_major_of(java: Path) -> int | None:
    try:
        result = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return java_major(result.stderr + result.stdout)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no log written)"
    return "\n".join(f"  | {line}" for line in text[-lines:])
