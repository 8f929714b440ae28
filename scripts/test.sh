#!/usr/bin/env bash
# The README's test command: lint, then the whole test suite (real sam2, real rclpy DDS, real bags).
# Where ../shared/ros2-upstream exists (CI has it), its upstream ROS 2 tools (ros2 CLI, ros2 launch,
# message_filters) are installed into .venv first: the tests use them as a ROS install; without it those tests
# skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [ -f ../shared/ros2-upstream/install.sh ]; then
  bash ../shared/ros2-upstream/install.sh .venv
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q --timeout=900 "$@"
