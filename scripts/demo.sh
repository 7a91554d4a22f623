#!/usr/bin/env bash
# Quickstart 1: set everything up, then run the main job on the embedded default
# (offline planner, the offline profile: real packaged models + tiny zoo, directory artifact store:
# no Redis, no network, no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/orchestrator run \
  "Draw a lighthouse at dusk, compose calm piano music, and read this aloud: the lighthouse keeps its watch over the quiet sea." \
  --out out/demo "$@"
