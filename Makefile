# rtml: two commands from a fresh clone.
#   make demo   set everything up, start the local stack, run the main job on generated data
#   make test   set everything up and run the whole suite (what CI runs)
# Everything generated lives in .venv/ and .rtml/ (git-ignored).

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
RTML := $(VENV)/bin/rtml
MLSERVER_VENV := .rtml/venvs/mlserver
PYTEST_ARGS ?=

.PHONY: setup system-packages jars demo test unit lint up down status clean distclean

UDFS_JAR := .rtml/jars/flink/rtml-udfs.jar

setup: system-packages $(VENV)/.installed .rtml/jars/.resolved $(UDFS_JAR) $(MLSERVER_VENV)/.installed

# Java 17+, Maven and redis-server, from Debian's packages when missing.
system-packages:
	@bash scripts/install-system-packages.sh

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Connector, Kafka broker and Kafka tools jars from Maven Central, as pinned in pom.xml.
jars: .rtml/jars/.resolved
.rtml/jars/.resolved: pom.xml
	rm -rf .rtml/jars
	mvn -q -B -P flink dependency:copy-dependencies
	mvn -q -B -P kafka dependency:copy-dependencies
	touch $@

# rtml's Java UDFs (per-event sliding windows), shipped with every job like the connector.
$(UDFS_JAR): .rtml/jars/.resolved udfs/java/pom.xml $(shell find udfs/java/src -name '*.java')
	mvn -q -B -f udfs/java/pom.xml package
	cp udfs/java/target/rtml-udfs.jar $@

# The model server gets its own venv: MLServer's dependencies do not fit beside PyFlink's.
$(MLSERVER_VENV)/.installed: requirements/mlserver.txt
	test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install --quiet --upgrade pip
	$(MLSERVER_VENV)/bin/pip install --quiet -r requirements/mlserver.txt
	touch $@

demo: setup
	$(RTML) stack up
	$(RTML) demo

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(VENV)/.installed
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

up: setup
	$(RTML) stack up
down:
	$(RTML) stack down
status:
	$(RTML) stack status

# Stops the stack and removes its data (topics, Redis, checkpoints); keeps venvs and jars.
clean:
	-$(RTML) stack down
	rm -rf .rtml/stack .rtml/local

distclean: clean
	rm -rf .rtml $(VENV) udfs/java/target
