#!/usr/bin/env bash
# Installs what rtml needs from Debian's packages, only when it is missing:
# Java 17+ (Flink, Kafka), Maven (resolves jars from Maven Central) and redis-server.
set -euo pipefail

missing=()
java_major() { java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'; }
if ! command -v java >/dev/null 2>&1 && [ ! -x "${JAVA_HOME:-/nonexistent}/bin/java" ]; then
  missing+=(openjdk-17-jre-headless)
elif [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  missing+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# Only for checking docker-compose.yml (its schema and `docker-compose config`); no engine needed.
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "rtml: installing from Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "rtml: need root (or sudo) to install ${missing[*]}; install them and run make again" >&2
  exit 1
fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's redis-server package may start a system service on 6379; rtml runs its own.
if command -v service >/dev/null 2>&1; then "${sudo[@]}" service redis-server stop >/dev/null 2>&1 || true; fi
