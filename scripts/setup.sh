#!/usr/bin/env bash
# Set up everything a fresh machine needs, idempotently:
#   a virtual environment in .venv, torch (CPU build unless one is installed),
#   the project with its dev and ray extras, and Debian's espeak-ng (the offline voice).
# GPU users: install a CUDA build of torch into .venv first (see README), it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11 or newer is required" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python

if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  # torch 2.13.0 has a CPU build; set ORCHESTRATOR_TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu)
  # where plain pip would fetch the multi-GB CUDA build.
  echo "setup: installing torch==2.13.0"
  "$VPY" -m pip install -q ${ORCHESTRATOR_TORCH_INDEX:+--index-url "$ORCHESTRATOR_TORCH_INDEX"} "torch==2.13.0"
fi

stamp=.venv/.orchestrator-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the project and its dev extras (with ray: the Ray executor's tests)"
  "$VPY" -m pip install -q -e ".[dev,ray]"
  touch "$stamp"
fi

if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "setup: installing Debian's espeak-ng (text-to-speech voice)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1; then
    ($SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q espeak-ng >/dev/null) \
      || echo "setup: could not install espeak-ng; text-to-speech with espeak will report how to install it" >&2
  else
    echo "setup: no apt-get; install espeak-ng with your package manager for the default voice" >&2
  fi
fi
