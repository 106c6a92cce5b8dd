"""Checks of ``docker-compose.yml``, the Docker twin of rtml's local stack.

Two kinds of checks, neither of which needs a Docker engine:

* the file is valid under the Compose Specification JSON schema that Debian's
  ``docker-compose`` package ships (installed by ``make setup``), and
  deliberately broken copies of it are not, so the validation can fail; the
  package's own ``docker-compose config`` accepts it too;
* the services carry the same settings as the local (no-Docker) stack, read
  from rtml's own code and files where they live (``rtml.versions``,
  ``rtml.settings``, ``rtml.stack``, ``rtml.flinkconf``, ``flink-conf/``):
  the same components and versions, Kafka without automatic topic creation and
  with a one-hour transaction cap, Redis with AOF, Flink on RocksDB with
  incremental exactly-once checkpoints on storage that both Flink processes
  share, and an Open Inference Protocol model server on the same ports.
  Only addresses and paths differ, by design.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from rtml import flinkconf, versions
from rtml.settings import StackSettings
from rtml.stack import kafka_server_properties

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# The Compose Specification schema as Debian's docker-compose package ships it.
SCHEMA_FILE = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
FLINK_DOCKERFILE = REPO_ROOT / "docker" / "flink.Dockerfile"
FLINK_CONF = REPO_ROOT / "flink-conf" / "config.yaml"
FLINK_REMOTE_CONF = REPO_ROOT / "flink-conf" / "remote" / "config.yaml"
MLSERVER_DOCKERFILE = REPO_ROOT / "docker" / "mlserver.Dockerfile"
MLSERVER_REQUIREMENTS = REPO_ROOT / "requirements" / "mlserver.txt"

EXPECTED_SERVICES = {"kafka", "redis", "jobmanager", "taskmanager", "mlserver"}

Compose = dict[str, Any]


# --------------------------------------------------------------------------- #
# Fixtures and helpers
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The Compose Specification schema from Debian's docker-compose package."""
    if not SCHEMA_FILE.is_file():
        pytest.fail(f"{SCHEMA_FILE} missing: run `make setup` (installs Debian's docker-compose)")
    with SCHEMA_FILE.open(encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """A validator for the draft the schema declares.

    Debian's copy names draft 2019-09 with a spelling of its URI that jsonschema does not look
    up, so the draft is chosen here after checking the declaration.
    """
    assert "json-schema.org/draft/2019-09/schema" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


@pytest.fixture(scope="module")
def local() -> StackSettings:
    """The local stack's settings with their defaults (no RTML_* overrides)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("RTML_")]:
            mp.delenv(name)
        return StackSettings()


@pytest.fixture(scope="module")
def compose() -> Compose:
    """``docker-compose.yml`` as Compose sees it (anchors and aliases resolved).

    PyYAML implements YAML 1.1 while Compose reads YAML 1.2; the file avoids the
    scalars on which they differ (unquoted yes/no/on/off, unquoted ``a:b`` ports).
    """
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    assert isinstance(doc, dict)
    return doc


def schema_errors(validator: jsonschema.protocols.Validator, doc: Any) -> list[str]:
    """Every schema violation in ``doc``, one readable line each."""
    return [
        f"{'/'.join(map(str, err.absolute_path)) or '<root>'}: {err.message}"
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def service(compose: Compose, name: str) -> dict[str, Any]:
    """One service definition."""
    return compose["services"][name]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings, whichever of the two Compose forms it uses."""
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_args(svc: dict[str, Any]) -> list[str]:
    """A service's command as a list of arguments."""
    cmd = svc.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(arg) for arg in cmd]


def published_ports(svc: dict[str, Any]) -> dict[int, str]:
    """Container port -> host binding (``ip:port``) for short-syntax port entries."""
    result: dict[int, str] = {}
    for entry in svc.get("ports", []):
        host_ip, host_port, container_port = str(entry).rsplit(":", 2)
        result[int(container_port)] = f"{host_ip}:{host_port}"
    return result


def volume_mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (named volume or host path) for short-syntax volumes."""
    result: dict[str, str] = {}
    for entry in svc.get("volumes", []):
        source, target = str(entry).split(":")[:2]
        result[target] = source
    return result


def flink_properties(svc: dict[str, Any]) -> dict[str, str]:
    """Parse FLINK_PROPERTIES the way the Flink 2.x image's entrypoint does.

    The entrypoint takes each non-blank line, splits it at the first ``:`` into
    key and value, and hands ``-Dkey=value`` to Flink's config parser. Lines must
    hold no whitespace: one entrypoint version deletes all of it, another keeps a
    space after the colon, which Flink's scripts then split off, emptying the value.
    """
    props: dict[str, str] = {}
    for line in environment(svc)["FLINK_PROPERTIES"].splitlines():
        if not line.strip():
            continue
        assert not re.search(r"\s", line.strip()), f"whitespace in FLINK_PROPERTIES line {line!r}"
        key, sep, value = line.strip().partition(":")
        assert sep and key and value, f"not a key:value line: {line!r}"
        props[key] = value
    return props


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested or dotted Flink YAML -> dotted keys with string values (``true``, not ``True``)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


def flink_conf(path: Path) -> dict[str, str]:
    """A checked-in Flink config.yaml as dotted keys."""
    return flatten(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def kafka_listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    result: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        match = re.fullmatch(r"([A-Z_]+)://([^:]*):(\d+)", item.strip())
        assert match, f"unparseable listener {item!r}"
        result[match.group(1)] = (match.group(2), int(match.group(3)))
    return result


# --------------------------------------------------------------------------- #
# Compose Specification
# --------------------------------------------------------------------------- #


def test_schema_is_the_compose_specification(schema: dict[str, Any]) -> None:
    """The schema file is the Compose Specification's, not something else."""
    assert schema["title"] == "Compose Specification"
    assert schema["id"] == "compose_spec.json"
    assert {"service", "healthcheck", "volume", "network"} <= set(schema["definitions"])


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """Debian's docker-compose parses and validates the file without a Docker engine."""
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.fail("docker-compose missing: run `make setup` (installs Debian's docker-compose)")
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("services:", "servics:", 1))
    result = subprocess.run(
        [docker_compose, "-f", str(broken), "config", "-q"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode != 0


def test_compose_file_is_valid(validator: jsonschema.protocols.Validator, compose: Compose) -> None:
    """docker-compose.yml has no violation of the Compose Specification schema."""
    errors = schema_errors(validator, compose)
    assert not errors, "\n".join(errors)


def _unknown_top_level_key(doc: Compose) -> None:
    doc["servics"] = doc.pop("services")


def _ports_not_a_list(doc: Compose) -> None:
    doc["services"]["redis"]["ports"] = "abc"


def _bad_depends_on_condition(doc: Compose) -> None:
    doc["services"]["taskmanager"]["depends_on"]["jobmanager"]["condition"] = "service_ready"


def _misspelt_healthcheck_key(doc: Compose) -> None:
    doc["services"]["kafka"]["healthcheck"]["intervall"] = "10s"


def _environment_value_is_a_mapping(doc: Compose) -> None:
    doc["services"]["kafka"]["environment"]["KAFKA_NODE_ID"] = {"id": 1}


@pytest.mark.parametrize(
    "break_it",
    [
        _unknown_top_level_key,
        _ports_not_a_list,
        _bad_depends_on_condition,
        _misspelt_healthcheck_key,
        _environment_value_is_a_mapping,
    ],
)
def test_broken_copies_are_rejected(
    validator: jsonschema.protocols.Validator,
    compose: Compose,
    break_it: Callable[[Compose], None],
) -> None:
    """The schema check can fail: each deliberately broken copy has errors."""
    broken = copy.deepcopy(compose)
    break_it(broken)
    assert schema_errors(validator, broken)


def test_no_obsolete_version_key(compose: Compose) -> None:
    """``version:`` is obsolete in the Compose Specification (Compose warns about it)."""
    assert "version" not in compose


# --------------------------------------------------------------------------- #
# Consistency the schema cannot see
# --------------------------------------------------------------------------- #


def test_services_are_those_of_the_local_stack(compose: Compose) -> None:
    """Kafka, Redis, Flink JobManager and TaskManager, and the model server."""
    assert set(compose["services"]) == EXPECTED_SERVICES


def test_every_service_has_a_healthcheck(compose: Compose) -> None:
    """Each service says how to tell it is ready (``docker compose up --wait`` uses it)."""
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable", False), f"{name} disables its healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name


def test_dependencies_wait_for_health(compose: Compose) -> None:
    """Dependencies exist, have healthchecks, and are awaited as healthy."""
    services = compose["services"]
    for name, svc in services.items():
        for dep, spec in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec["condition"] == "service_healthy", f"{name} -> {dep}"
            assert "healthcheck" in services[dep], (
                f"{name} waits for {dep}, which has no healthcheck"
            )
    # The TaskManager must find a JobManager to register with.
    assert "jobmanager" in services["taskmanager"]["depends_on"]


def test_named_volumes_are_declared(compose: Compose) -> None:
    """Every named volume a service mounts is declared at the top level."""
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for source in volume_mounts(svc).values():
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_builds_point_at_files_in_the_repo(compose: Compose) -> None:
    """Build contexts and Dockerfiles named in the compose file exist."""
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build is None:
            continue
        context = REPO_ROOT / build["context"]
        assert context.is_dir(), name
        assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_published_ports_match_the_local_stack(compose: Compose, local: StackSettings) -> None:
    """Same host ports as the local stack, and, like it, on 127.0.0.1 only."""
    expected = {
        "kafka": {local.kafka_port},
        "redis": {local.redis_port},
        "jobmanager": {local.flink_rest_port},
        "mlserver": {local.model_http_port, local.model_grpc_port, local.model_metrics_port},
    }
    for name, ports in expected.items():
        published = published_ports(service(compose, name))
        assert set(published) == ports, name
        for container_port, binding in published.items():
            assert binding == f"127.0.0.1:{container_port}", f"{name}: {binding}"


# --------------------------------------------------------------------------- #
# Equivalence with the local stack, service by service
# --------------------------------------------------------------------------- #

# Broker properties that name addresses or paths: they differ by design between
# loopback processes and containers, and are checked separately below.
KAFKA_ADDRESS_KEYS = {
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "controller.quorum.voters",
    "log.dirs",
}


def kafka_properties(env: dict[str, str]) -> dict[str, str]:
    """The broker properties the apache/kafka image derives from KAFKA_* variables.

    KAFKA_FOO_BAR becomes foo.bar (the image's rule; none of these names needs
    its ``__`` -> ``_`` or ``___`` -> ``-`` escapes).
    """
    return {
        name[len("KAFKA_") :].lower().replace("_", "."): value
        for name, value in env.items()
        if name.startswith("KAFKA_")
    }


def test_kafka_matches_local_stack(compose: Compose, local: StackSettings) -> None:
    """Kafka 4.2.1, single-node KRaft, with exactly the local broker's settings."""
    kafka = service(compose, "kafka")
    env = environment(kafka)
    assert kafka["image"] == f"apache/kafka:{versions.KAFKA}"

    ours = kafka_properties(env)
    theirs = kafka_server_properties(local)
    same = {k: v for k, v in theirs.items() if k not in KAFKA_ADDRESS_KEYS}
    assert {k: v for k, v in ours.items() if k not in KAFKA_ADDRESS_KEYS} == same
    # Spelled out, the settings rtml depends on most:
    assert ours["auto.create.topics.enable"] == "false"
    assert int(ours["transaction.max.timeout.ms"]) == 3_600_000
    assert env["CLUSTER_ID"], "KRaft storage needs a cluster id"

    listeners = kafka_listeners(env["KAFKA_LISTENERS"])
    advertised = kafka_listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controller = ours["controller.listener.names"]

    # Every listener has a protocol; all are PLAINTEXT, as in the local stack.
    assert set(listeners) <= set(protocols)
    assert set(protocols.values()) == {"PLAINTEXT"}
    # Controller on the local stack's controller port, voted for by node 1 through it.
    assert listeners[controller][1] == local.kafka_controller_port
    assert ours["controller.quorum.voters"] == f"1@kafka:{local.kafka_controller_port}"
    assert controller not in advertised
    # Host clients: the local stack's port, advertised as localhost.
    host_listener = next(n for n, (_, port) in advertised.items() if port == local.kafka_port)
    assert advertised[host_listener] == ("localhost", local.kafka_port)
    assert listeners[host_listener][1] == local.kafka_port
    # Other containers: an advertised listener on the service name.
    assert any(host == "kafka" for host, _ in advertised.values())
    assert ours["inter.broker.listener.name"] in advertised

    # Data survives restarts: log dirs on a named volume.
    assert volume_mounts(kafka)[ours["log.dirs"]] in compose["volumes"]
    assert kafka["healthcheck"]["test"][1].startswith("/opt/kafka/bin/")


def test_redis_matches_local_stack(compose: Compose) -> None:
    """Redis 7 with AOF persistence (fsync every second) on a named data volume."""
    redis = service(compose, "redis")
    assert redis["image"].split(":")[0] == "redis"
    assert redis["image"].split(":")[1].startswith("7")
    args = command_args(redis)
    assert args[0] == "redis-server"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "everysec"
    assert volume_mounts(redis)["/data"] in compose["volumes"]


def test_flink_matches_local_stack(compose: Compose, local: StackSettings) -> None:
    """Session cluster: RocksDB, incremental exactly-once checkpoints, 4 slots.

    The image carries flink-conf/config.yaml (the local stack's profile) and
    FLINK_PROPERTIES adds cluster-specific keys on top, as rtml adds its local
    overrides; the effective configuration is the union, FLINK_PROPERTIES winning.
    """
    jobmanager = service(compose, "jobmanager")
    taskmanager = service(compose, "taskmanager")
    assert command_args(jobmanager) == ["jobmanager"]
    assert command_args(taskmanager) == ["taskmanager"]
    assert jobmanager["image"] == taskmanager["image"]

    props = flink_properties(jobmanager)
    assert flink_properties(taskmanager) == props, "JobManager and TaskManager disagree"
    profile = flink_conf(FLINK_CONF)
    # FLINK_PROPERTIES only sets what the local stack also sets per machine, or
    # repeats the profile; it never changes how jobs behave.
    machine_specific = set(flinkconf.local_overrides(local))
    contradicted = {
        k: v for k, v in props.items() if k not in machine_specific and profile.get(k) != v
    }
    assert not contradicted, f"FLINK_PROPERTIES departs from flink-conf/config.yaml: {contradicted}"
    effective = profile | props
    assert effective["jobmanager.rpc.address"] == "jobmanager"
    assert effective["taskmanager.numberOfTaskSlots"] == "4"
    assert effective["state.backend.type"] == "rocksdb"
    assert effective["execution.checkpointing.incremental"] == "true"
    assert effective["execution.checkpointing.mode"] == "EXACTLY_ONCE"

    # Checkpoints and savepoints on one volume mounted at the same path in both.
    jm_mounts, tm_mounts = volume_mounts(jobmanager), volume_mounts(taskmanager)
    for key in (
        "execution.checkpointing.dir",
        "execution.checkpointing.savepoint-dir",
        flinkconf.CHANGELOG_FOLDER_KEY,
    ):
        assert props[key].startswith("file:///"), key
        path = props[key][len("file://") :]
        mount = next((target for target in jm_mounts if path.startswith(target + "/")), None)
        assert mount is not None, f"{key} is not on a volume"
        assert jm_mounts[mount] in compose["volumes"], f"{key} is not on a named volume"
        assert tm_mounts.get(mount) == jm_mounts[mount], f"{key} is not shared with the TaskManager"

    # Python workers run the interpreter the image installs PyFlink and rtml into,
    # which is also the one the remote-cluster profile documents for this image.
    venv = re.search(r"uv venv .*?(/\S+)\s*;", FLINK_DOCKERFILE.read_text(encoding="utf-8"))
    assert venv, "docker/flink.Dockerfile no longer creates the venv with uv"
    assert props["python.executable"] == f"{venv.group(1)}/bin/python"
    assert props["python.executable"] == flink_conf(FLINK_REMOTE_CONF)["python.executable"]


def test_flink_image_matches_local_stack(compose: Compose) -> None:
    """The image: Flink and PyFlink of rtml's version, Python 3.11, rtml, the jars."""
    dockerfile = FLINK_DOCKERFILE.read_text(encoding="utf-8")
    args = dict(re.findall(r"^ARG (\w+)=(\S*)", dockerfile, flags=re.MULTILINE))
    assert args["FLINK_IMAGE"] == f"flink:{versions.FLINK}-scala_2.12-java17"
    assert args["PYFLINK_VERSION"] == versions.FLINK
    assert args["PYTHON_VERSION"] == "3.11"
    # The jars are resolved and built from the repository's Maven files, as `make setup` does.
    assert "mvn -q -B -P flink dependency:copy-dependencies" in dockerfile
    assert "mvn -q -B -f udfs/java/pom.xml package" in dockerfile
    assert re.search(r"^COPY --from=jars .* \$\{FLINK_HOME\}/lib/$", dockerfile, flags=re.MULTILINE)
    assert '"apache-flink==${PYFLINK_VERSION}"' in dockerfile
    for source in ("pyproject.toml", "rtml/", "jobs/", "udfs/", "sql/"):
        assert re.search(rf"^COPY {re.escape(source)} ", dockerfile, flags=re.MULTILINE), source
    assert re.search(r"^RUN pip install .*\s\.$", dockerfile, flags=re.MULTILINE)
    # The local stack's Flink profile goes into the image's config.yaml, merged by
    # the same code that renders the local stack's configuration.
    assert re.search(r"^COPY flink-conf/config\.yaml ", dockerfile, flags=re.MULTILINE)
    assert "flinkconf.load(pathlib.Path('/opt/flink/conf'))" in dockerfile
    for name in ("jobmanager", "taskmanager"):
        build = service(compose, name)["build"]
        assert build["dockerfile"] == "docker/flink.Dockerfile"


def test_model_server_matches_local_stack(compose: Compose, local: StackSettings) -> None:
    """MLServer 1.7.1 serving rtml's model repository over the Open Inference Protocol."""
    mlserver = service(compose, "mlserver")
    env = environment(mlserver)
    assert env["MLSERVER_HTTP_PORT"] == str(local.model_http_port)
    assert env["MLSERVER_GRPC_PORT"] == str(local.model_grpc_port)
    assert env["MLSERVER_METRICS_PORT"] == str(local.model_metrics_port)
    assert command_args(mlserver) == ["mlserver", "start", "/mnt/models"]
    assert mlserver["working_dir"] == "/mnt/models"  # rtml runs it with cwd=repository
    # The folder rtml writes its models and settings.json into.
    repo = volume_mounts(mlserver)["/mnt/models"]
    assert (REPO_ROOT / repo).resolve() == local.model_repo.resolve()
    assert "/v2/health/ready" in " ".join(mlserver["healthcheck"]["test"])
    # Built from the same requirements as the local model server's venv.
    assert mlserver["build"]["dockerfile"] == "docker/mlserver.Dockerfile"
    assert "requirements/mlserver.txt" in MLSERVER_DOCKERFILE.read_text(encoding="utf-8")
    pins = MLSERVER_REQUIREMENTS.read_text(encoding="utf-8").split()
    assert "mlserver==1.7.1" in pins and "mlserver-sklearn==1.7.1" in pins
