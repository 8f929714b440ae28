#!/usr/bin/env bash
# Create .venv from scratch with everything memsam needs (torch, sam2, ROS 2 wheels, test tools),
# install memsam in editable mode and build the custom message package (msg/) with colcon.
# Idempotent: re-running only installs what is missing. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $PY"
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
pip_install() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

pip_install --upgrade "pip>=24" "setuptools>=70" wheel
if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch 2.14.1 + torchvision 0.29.1"
  pip_install torch==2.14.1 torchvision==0.29.1
fi
if ! "$VPY" -c "import sam2" 2>/dev/null; then
  echo "[setup] installing sam2 (built against the venv's torch, no CUDA extension)"
  SAM2_BUILD_CUDA=0 pip_install --no-build-isolation "sam2==1.1.0"
fi
echo "[setup] installing requirements"
pip_install -r requirements.txt
pip_install --no-deps --no-build-isolation -e .

echo "[setup] building ROS 2 messages (msg/ -> install/)"
bash scripts/build_msgs.sh
echo "[setup] done: source scripts/env.sh (or use .venv/bin/python directly)"
