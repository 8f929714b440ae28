"""ROS domain ids for the tests: every test process, and every process a test starts, on a domain of its own.

One session hands out ids in sequence from an offset taken from its process id, so no two tests of a session
share a domain (a late message of one test's node can never reach the next test), and two sessions on one
machine start far apart. Discovery stays on this host (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, conftest).
"""

from __future__ import annotations

import itertools
import os

_DOMAINS = 200  # 1..200: Fast DDS's port formula allows up to 232 on Linux
_OFFSET = os.getpid() % _DOMAINS
_COUNTER = itertools.count()


def next_domain_id() -> int:
    """A ROS_DOMAIN_ID no other test of this session has used."""
    return 1 + (_OFFSET + next(_COUNTER)) % _DOMAINS
