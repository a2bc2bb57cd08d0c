#!/usr/bin/env bash
# Create benchmarks/.venv-peers: a separate virtualenv holding advlab and the peer libraries it
# is compared with (torchattacks, foolbox, adversarial-robustness-toolbox).
#
# Kept apart from the main .venv on purpose: the peers are benchmark-only dependencies and must
# never reach the library's own environment. torch is installed first and pinned, and the peers
# are installed so that none of them can pull a second (CUDA) torch or torchvision.
#
# Usage:  bash benchmarks/setup_peers.sh            (from anywhere; idempotent)
#         PYTHON=python3.11 bash benchmarks/setup_peers.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/benchmarks/.venv-peers"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet)

# 1. torch first, pinned (the CPU build where the machine's pip configuration offers one).
"${PIP[@]}" "torch==$TORCH_VERSION"

# 2. torchattacks declares torch/torchvision as requirements: install it alone, then its real
#    small dependencies.
"${PIP[@]}" --no-deps torchattacks
"${PIP[@]}" numpy scipy tqdm requests

# 3. foolbox (needs eagerpy, GitPython, typing-extensions, requests, scipy) and ART (numpy, scipy,
#    scikit-learn, six, setuptools, tqdm). Neither declares torch, but install them without
#    dependencies anyway and list the dependencies explicitly, so nothing can replace our torch.
"${PIP[@]}" --no-deps foolbox adversarial-robustness-toolbox
"${PIP[@]}" eagerpy GitPython typing-extensions requests scipy \
    numpy scikit-learn six setuptools tqdm packaging statsmodels  # statsmodels: ART's smoothing bound

# 3b. The reference AutoAttack (Croce & Hein), packaged on PyPI as pyautoattack (import name
#     `autoattack`); its requirements are torch and numpy, already here.
"${PIP[@]}" --no-deps pyautoattack

# 4. advlab itself, editable, without dependencies (installed here explicitly).
"${PIP[@]}" safetensors matplotlib typer rich
"${PIP[@]}" --no-deps -e "$ROOT"

# 5. Check: one torch, and every peer imports.
"$VENV/bin/python" - <<'PY'
import importlib

import torch

print(f"torch {torch.__version__} (cuda {torch.version.cuda})")
for name in ("torchattacks", "foolbox", "art", "pyautoattack", "advlab"):
    module = importlib.import_module(name)
    print(f"{name} {getattr(module, '__version__', '?')}")
PY
echo "peers ready: $VENV/bin/python benchmarks/attacks.py --quick"
