"""Shared fixtures: an rclpy Context per test on a DDS domain of its own (no cross-talk between tests).

Every ROS participant of the tests, in this process and in the processes it starts, discovers only on
this host (three engineers share the machine and its network).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from domains import next_domain_id


@pytest.fixture
def ros_domain_id(monkeypatch: pytest.MonkeyPatch) -> int:
    """A ROS_DOMAIN_ID of this test's own (tests/domains.py), also exported for any subprocess it starts."""
    domain_id = next_domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    return domain_id


@pytest.fixture
def ros_context(ros_domain_id: int) -> Iterator[Any]:
    """An initialised ``rclpy.context.Context`` (rclpy is imported lazily: ROS-free tests need none)."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        yield context
    finally:
        context.try_shutdown()
