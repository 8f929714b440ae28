"""Memory across time in the node (issue 22), over real DDS.

* In-process node (``ros_helpers.NodeHarness``, the shipped default QoS apart from RELIABLE test topics): the memory
  of past instants is used from set to set and reset on a bag loop (synchroniser reset), a gap longer than
  ``inference.temporal_max_gap_s``, lifecycle deactivate and ``~/enable`` false; each reset is counted in ``~/info``
  and ``/diagnostics``.
* Between processes: a bag played in lock-step into the node process gives the labels the offline replay gives,
  with K = 1 and a gap rule that resets the memory at some sets (the same ones live and offline).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from checkpoints import perturbed_checkpoint
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from ros_helpers import NodeHarness, scene_frames, status_values, wait_until
from std_srvs.srv import SetBool

from memsam_core.config import load_config
from memsam_ros.tools.bag_tools import BagSpec, write_synthetic_bag
from memsam_ros.tools.evaluate import evaluate_bag_offline
from memsam_ros.tools.recorder import evaluate_bag_live
from memsam_ros.tools.scoring import compare_runs, label_agreement

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def harness():
    h = NodeHarness({"model.temporal_memory": 1, "inference.temporal_max_gap_s": 0.5})
    yield h
    h.close()


def _info(harness: NodeHarness, stamp: float, frames) -> dict:
    out = harness.roundtrip(stamp, frames)
    assert out is not None, f"no output at {stamp}; warnings: {harness.warnings}"
    return {"instants": out["info"].memory_instants, "resets": out["info"].memory_resets}


def _diagnosed_resets(harness: NodeHarness, reason: str) -> str:
    def shown():
        status = harness.collector.latest_status(": pipeline")
        values = status_values(status) if status is not None else {}
        return values.get("memory_resets_by_reason", "") if reason in values.get("memory_resets_by_reason", "") else ""

    return wait_until(shown, 5.0)


def _call(harness: NodeHarness, service_type: type, name: str, request: object) -> None:
    """A service of the node, called over DDS as ``ros2 service call`` / ``ros2 lifecycle set`` would."""
    client = harness.collector.create_client(service_type, f"{harness.collector.node_ns}/{name}")
    try:
        assert client.wait_for_service(timeout_sec=10.0), name
        future = client.call_async(request)
        assert wait_until(future.done, 30.0) and future.result().success, name
    finally:
        harness.collector.destroy_client(client)


def _transition(harness: NodeHarness, transition: int) -> None:
    _call(harness, ChangeState, "change_state", ChangeState.Request(transition=Transition(id=transition)))


def test_the_memory_of_past_instants_is_used_and_every_reset_is_counted(harness):
    frames = scene_frames(seed=3)
    assert [_info(harness, 50.0 + 0.1 * i, frames) for i in range(3)] == [
        {"instants": 0, "resets": 0},
        {"instants": 1, "resets": 0},
        {"instants": 1, "resets": 0},
    ]
    assert _info(harness, 10.0, frames) == {"instants": 0, "resets": 1}  # a bag loop: the synchroniser resets
    assert _diagnosed_resets(harness, "sync_reset:1")
    assert _info(harness, 10.1, frames) == {"instants": 1, "resets": 1}
    assert _info(harness, 11.0, frames) == {"instants": 0, "resets": 2}  # 0.9 s > temporal_max_gap_s
    assert _diagnosed_resets(harness, "gap:1")
    assert _info(harness, 11.1, frames)["instants"] == 1

    _transition(harness, Transition.TRANSITION_DEACTIVATE)  # the stream stops: what follows is not its continuation
    _transition(harness, Transition.TRANSITION_ACTIVATE)
    assert wait_until(harness._connected, 10.0)
    assert _info(harness, 11.2, frames) == {"instants": 0, "resets": 3}
    assert _info(harness, 11.3, frames)["instants"] == 1
    _call(harness, SetBool, "enable", SetBool.Request(data=False))
    _call(harness, SetBool, "enable", SetBool.Request(data=True))
    assert wait_until(harness._connected, 10.0)
    assert _info(harness, 11.4, frames) == {"instants": 0, "resets": 4}
    assert _diagnosed_resets(harness, "deactivate:2")


SPEC = BagSpec(frames=6, height=48, width=64, seed=5, conditions=("fog", "night"), drop={"lidar": 0.5, "event": 0.3})


@pytest.fixture(scope="module")
def temporal_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_checkpoint(tmp_path_factory.mktemp("ckpt") / "k1.pt", {"model.temporal_memory": 1})


def test_live_and_offline_agree_with_memory_across_time(ros_context, temporal_checkpoint, tmp_path):
    """Lock-step playback (the player waits for each set's labels, so the node drops nothing): the node and the
    offline replay keep and forget the same past instants and give the same labels. The bag's stamps are 100 ms
    ± 2 ms apart; a 0.1 s gap rule resets the memory at some sets, deterministically from the stamps."""
    bag = tmp_path / "bag"
    write_synthetic_bag(bag, SPEC)
    config = load_config(None, {"inference.device": "cpu", "inference.checkpoint": str(temporal_checkpoint),
                                "inference.temporal_max_gap_s": 0.1})  # fmt: skip
    offline = evaluate_bag_offline(bag, config, progress=False, keep_labels=True)
    live = evaluate_bag_live(
        bag, config, context=ros_context, progress=False, log_dir=tmp_path / "live", keep_labels=True
    )
    node_log = (tmp_path / "live" / "node.log").read_text()
    assert live.details["node_exit_code"] == 0, node_log
    assert live.details["gate_timeouts"] == 0 and live.details["sets_dropped_by_node"] == 0, node_log
    assert live.config.model.temporal_memory == 1

    used = offline.details["memory_instants"]
    assert len(used) == SPEC.frames and used[0] == 0 and 0 in used[1:] and 1 in used[1:], used
    assert live.details["memory_instants"] == used
    assert live.details["memory_resets"] == offline.details["memory_resets"] == used[1:].count(0)

    comparison = compare_runs(offline, live)
    assert comparison["frames_common"] == SPEC.frames, comparison
    assert comparison["missing_case_agreement"] == SPEC.frames, "same synchronised sets live and offline"
    agreement = label_agreement(offline, live)
    assert agreement["frames_common"] == SPEC.frames and agreement["pixel_agreement_min"] >= 0.999, agreement
