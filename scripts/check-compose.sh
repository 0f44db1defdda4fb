#!/usr/bin/env bash
# Validates compose.yaml without a Docker engine, in two steps:
#   1. the Compose schema and interpolation: `docker-compose config -q` (Debian package
#      `docker-compose`, 1.29) or `docker compose config -q` when either is installed;
#   2. scripts/check-compose.ts: what the stack relies on, and every variable in step with
#      `npm run up` (scripts/stack-env.ts). It parses YAML with python3-yaml.
# CI: `apt-get install -y docker-compose` provides both (python3-yaml is its dependency).
# Usage: scripts/check-compose.sh [compose file]
set -euo pipefail
cd "$(dirname "$0")/.."
file="${1:-compose.yaml}"

if command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f "$file" config -q
  echo "check-compose: docker-compose $(docker-compose version --short) config -q: ok"
elif docker compose version >/dev/null 2>&1; then
  docker compose -f "$file" config -q
  echo "check-compose: docker compose config -q: ok"
elif [ "${CI:-}" = "true" ]; then
  echo "check-compose: no compose validator; install it: apt-get install -y docker-compose" >&2
  exit 1
else
  echo "check-compose: WARNING: no docker-compose here (apt-get install -y docker-compose); schema not checked" >&2
fi

node --import tsx scripts/check-compose.ts "$file"
