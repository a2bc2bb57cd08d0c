#!/usr/bin/env bash
# Set up advlab on a fresh machine: a virtual environment with the CPU PyTorch wheel, advlab with
# its dev extras, and the Fashion-MNIST data (Debian package) when apt is usable.
# Idempotent: re-running only installs what is missing. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
log() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"

# 1. PyTorch first, pinned, so no later requirement pulls a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  log "installing torch==2.13.0 (CPU wheel)"
  if ! $PIP install -q "torch==2.13.0"; then
    log "torch==2.13.0 is not available here; installing the CPU build of the newest torch"
    $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

# 2. advlab itself (editable) with the development extras.
stamp="$VENV/.advlab-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing advlab with its dev extras"
  $PIP install -q -e ".[dev]"
  touch "$stamp"
fi

# 3. Fashion-MNIST from Debian (no downloads at run time, ever).
FMNIST=/usr/share/datasets/fashion-mnist
if [ -f "$FMNIST/t10k-images-idx3-ubyte.gz" ] || [ -n "${ADVLAB_DATA:-}" ]; then
  log "Fashion-MNIST found"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  log "installing Fashion-MNIST: apt-get install -y dataset-fashion-mnist"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  log "Fashion-MNIST is missing. Install it with: sudo apt-get install dataset-fashion-mnist"
  log "  or put the four IDX .gz files in a directory and set ADVLAB_DATA=<dir>."
  log "  (advlab demo --dataset digits needs no download.)"
fi

# 4. Chromium for the report's browser test: installed in CI (CI=true) or on request
#    (ADVLAB_BROWSER=install); elsewhere that test is skipped when chromium is absent.
want_browser=${ADVLAB_BROWSER:-$([ "${CI:-}" = true ] && echo install || echo skip)}
if [ "$want_browser" = install ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Debian's chromium for the report test"
    (apt-get update -qq >/dev/null || true)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || log "chromium not installed; the browser test will be skipped"
  else
    log "chromium not found; the browser test will be skipped (sudo apt-get install chromium)"
  fi
fi
log "done: $VENV/bin/advlab is ready"
