#!/usr/bin/env bash
# Pack into .device/ (git-ignored) what the lent GPU machine lacks for benchmarks/gpu_session.sh: that machine has
# Python 3.12 + CUDA torch but no network, and neither sam2 nor pydantic. The pure-Python packages are copied from
# .venv (run scripts/setup.sh first); pydantic-core is compiled, so its CPython 3.12 wheel is downloaded.
# Then, with the device tool: run(command="bash benchmarks/gpu_session.sh engine", carry=[".device"]).
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf .device
mkdir -p .device/site .device/wheels
for package in sam2 hydra omegaconf antlr4 iopath pydantic annotated_types typing_inspection typing_extensions.py; do
  cp -r "$site/$package" .device/site/
done
version=$(.venv/bin/python -c "import pydantic_core; print(pydantic_core.__version__)")
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .device/wheels "pydantic-core==$version"
find .device -name __pycache__ -prune -exec rm -rf {} +
echo "[gpu_bundle] $(du -sh .device | cut -f1) in .device (the device tool carries at most 64 MiB with the tree)"
