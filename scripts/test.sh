#!/usr/bin/env bash
# The README's test command: lint, then the whole test suite (real sam2, real rclpy DDS, real bags).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q --timeout=900 "$@"
