#!/usr/bin/env bash
# Quickstart 2: set everything up, then run the test suite.
# Redis: uses ORCHESTRATOR_REDIS_URL (or redis://127.0.0.1:6379) if it answers, else the
# tests start a private redis-server on a free loopback port (installing it with apt-get if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
