# syntax=docker/dockerfile:1
#
# Flink 2.2.1 (JobManager and TaskManager) with PyFlink and the rtml project.
# Build context is the repository root (see docker-compose.yml):
#   docker build -f docker/flink.Dockerfile -t rtml-flink .

ARG FLINK_IMAGE=flink:2.2.1-scala_2.12-java17
ARG UV_VERSION=0.13.8
ARG MAVEN_IMAGE=maven:3.9-eclipse-temurin-17

# uv is only used to obtain a CPython 3.11 build (see below).
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# The jars come from the repository's own Maven files, as on the local stack: the Kafka connector
# pinned in pom.xml (profile "flink") and rtml's Java UDFs built from udfs/java.
FROM ${MAVEN_IMAGE} AS jars
WORKDIR /src
COPY pom.xml ./
COPY udfs/java/ ./udfs/java/
RUN mvn -q -B -P flink dependency:copy-dependencies \
 && mvn -q -B -f udfs/java/pom.xml package \
 && cp udfs/java/target/rtml-udfs.jar .rtml/jars/flink/

FROM ${FLINK_IMAGE}

ARG PYTHON_VERSION=3.11
ARG PYFLINK_VERSION=2.2.1

# The Flink 2.x image runs as the unprivileged "flink" user; installing needs root.
USER root

# curl: what the compose healthchecks call, so they do not depend on what the base
# image happens to ship.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    rm -rf /var/lib/apt/lists/*

# Python 3.11, not the distribution's python3: the Flink 2.2 image is Ubuntu 24.04,
# whose python3 is 3.12 and which has no 3.11 package, while rtml requires 3.11
# (pyproject.toml). It also has to match the client: PyFlink pickles Python UDFs
# on the client (rtml on the host) and unpickles them in the TaskManager's Python
# workers, which can break across minor versions.
# uv installs a relocatable CPython build under /opt/python, readable by "flink".
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed
RUN set -eux; \
    uv python install "${PYTHON_VERSION}"; \
    uv venv --seed --python "${PYTHON_VERSION}" /opt/rtml-venv; \
    /opt/rtml-venv/bin/python --version
# The venv first on PATH: "python"/"pip" are 3.11 for everyone, including
# "flink run -py" inside the containers. pip is seeded in the venv because PyFlink's
# python.requirements option runs pip with python.executable.
ENV VIRTUAL_ENV=/opt/rtml-venv \
    PATH=/opt/rtml-venv/bin:${PATH}

RUN pip install --no-cache-dir "apache-flink==${PYFLINK_VERSION}"

# Kafka connector and rtml's UDFs into lib/, not usrlib/: lib/ is on the classpath of
# every JobManager and TaskManager of this *session* cluster, so any job submitted to it
# (PyFlink DataStream, Table API or SQL) finds them without pipeline.jars.
# usrlib/ is only read by application-mode clusters (standalone-job), for their job.
COPY --from=jars --chown=flink:flink /src/.rtml/jars/flink/ ${FLINK_HOME}/lib/

# Checkpoint and savepoint directories on the volume shared by JobManager and
# TaskManager. Created here, owned by "flink", because Docker seeds a new named
# volume from the image's directory, ownership included; otherwise the volume
# would be root-owned and "flink" could not write checkpoints.
RUN mkdir -p /data/flink/checkpoints /data/flink/savepoints \
    && chown -R flink:flink /data/flink

# The rtml project itself, last because it changes most (layers above stay cached).
# Its UDFs must be importable by the Python workers. Installed editable so that
# rtml finds sql/ and flink-conf/ next to its sources, as in a checkout (a plain
# install would look for them in site-packages). README.md*: copied when present,
# pyproject.toml names it as the readme.
WORKDIR /opt/rtml
COPY pyproject.toml README.md* ./
COPY rtml/ ./rtml/
COPY jobs/ ./jobs/
COPY udfs/ ./udfs/
COPY sql/ ./sql/
RUN pip install --no-cache-dir -e .

# Same Flink settings as the local stack, merged the way rtml's local stack merges
# them (rtml.flinkconf): Flink's defaults (here: the image's config.yaml, already
# set up for containers), then flink-conf/config.yaml on top. What depends on the
# machine (addresses, paths, python.executable) is added at start-up from
# FLINK_PROPERTIES in docker-compose.yml, as rtml adds its local overrides.
COPY flink-conf/config.yaml ./flink-conf/config.yaml
RUN python -c "import pathlib, yaml; from rtml import flinkconf; \
conf = flinkconf.load(pathlib.Path('/opt/flink/conf')) | flinkconf.load(pathlib.Path('flink-conf')); \
pathlib.Path('/opt/flink/conf/config.yaml').write_text(yaml.safe_dump(conf, sort_keys=True, width=10_000))"

WORKDIR /opt/flink
USER flink
