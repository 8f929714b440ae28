"""Shared fixtures: an rclpy Context per test on its own random DDS domain (no cross-talk between runs).

Every ROS participant of the tests, in this process and in the processes it starts, discovers only on
this host (three engineers share the machine and its network).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture
def ros_domain_id(monkeypatch: pytest.MonkeyPatch) -> int:
    """A random ROS_DOMAIN_ID in 1..100, also exported for any subprocess the test starts."""
    domain_id = random.SystemRandom().randint(1, 100)
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
