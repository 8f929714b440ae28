"""Synchroniser latency and completeness against the oracle (issue 16 targets: p99 < 5 ms, no set missing
a modality that had a message within slop).

Streams like a real rig (RGB 30 Hz, depth 30, LiDAR 15, events 60; stamp-to-arrival delays 8/12/20/4 ms),
6 s each, shipped defaults (slop 50 ms, max_wait 200 ms, queue 10), replayed through
:class:`memsam_ros.sync.ModalitySynchronizer` with a 10 ms poll timer like the node's:

* added latency: emit time minus the arrival of the last message the oracle's choice needs (the
  reference, the chosen messages, the first message of each modality stamped at or after the reference;
  see tests/sync_oracle.py), including the wall time of the synchroniser call; p50/p99/max;
* from RGB arrival: emit time minus the reference's own arrival (what waiting for slower sensors costs);
* missing: share of emitted sets without each modality; "wrongly missing": sets without a modality
  although the oracle had a message within slop; "not the oracle's": sets whose choice differs;
* after a death: sets for which some sensor never sent another message stamped at or after the reference.
  Nothing can prove such a sensor dead but its silence, so the sets of the first ``max_wait_s`` after its
  last message wait until it is silent; printed: how many sets, how many waited (> 1 ms) and for how
  long, and the p99 of the sets before the death.

Every sensor records 0.5 s longer than the evaluated window, so the last sets have their next messages
like in a running system.

    python benchmarks/bench_sync.py [--duration 6] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from sync_oracle import RIG_RATES_HZ, make_streams, needed_at, oracle, replay

from memsam_ros.sync import ModalitySynchronizer

MODALITIES = list(RIG_RATES_HZ)
SLOP_S, MAX_WAIT_S, QUEUE = 0.05, 0.2, 10
TAIL_S = 0.5
SCENARIOS = {
    "regular": {},
    "jitter ±20 ms": {"arrival_jitter_s": 0.02, "stamp_jitter_s": 0.002},
    "jitter + drops": {
        "arrival_jitter_s": 0.02,
        "stamp_jitter_s": 0.002,
        "drop": {"rgb": 0.03, "depth": 0.1, "lidar": 0.1, "event": 0.1},
    },
    "LiDAR dies at 3 s": {"arrival_jitter_s": 0.02, "stamp_jitter_s": 0.002, "dies_at_s": {"lidar": 3.0}},
}


def make_sync(single_use: tuple[str, ...]) -> ModalitySynchronizer:
    kwargs = {"slop_s": SLOP_S, "max_wait_s": MAX_WAIT_S, "queue_size": QUEUE, "required": ("rgb",)}
    if single_use:
        kwargs["single_use"] = single_use
    return ModalitySynchronizer(MODALITIES, **kwargs)


def run(scenario: dict, seed: int, duration: float, single_use: tuple[str, ...]) -> dict:
    messages = make_streams(duration + TAIL_S, seed=seed, **scenario)
    truth = oracle(messages, MODALITIES, SLOP_S, single_use)
    end = messages[0].stamp + duration
    refs = {m.token: m for m in messages if m.modality == "rgb" and m.stamp < end}
    newest = {m: max((x.stamp for x in messages if x.modality == m), default=-np.inf) for m in MODALITIES}
    emitted = [e for e in replay(make_sync(single_use), messages) if e.tokens["rgb"] in refs]
    added, from_rgb, after_death = [], [], []
    missing = dict.fromkeys(MODALITIES, 0)
    wrongly_missing = dict.fromkeys(MODALITIES, 0)
    differs = 0
    for out in emitted:
        ref = refs[out.tokens["rgb"]]
        want = truth[ref.token]
        added.append(out.emitted_at - needed_at(messages, ref, want, single_use, SLOP_S))
        from_rgb.append(out.emitted_at - ref.arrival)
        after_death.append(any(newest[m] < ref.stamp for m in MODALITIES))
        for m in MODALITIES:
            if m not in out.tokens:
                missing[m] += 1
                wrongly_missing[m] += want[m] is not None
        differs += any(out.tokens.get(m) != want[m] for m in MODALITIES)
    return {
        "refs": len(refs),
        "sets": len(emitted),
        "added": added,
        "from_rgb": from_rgb,
        "after_death": after_death,
        "missing": missing,
        "wrongly_missing": wrongly_missing,
        "differs": differs,
    }


def merge(results: list[dict]) -> dict:
    out = {k: sum(r[k] for r in results) for k in ("refs", "sets", "differs")}
    out["added"] = np.concatenate([r["added"] for r in results])
    out["from_rgb"] = np.concatenate([r["from_rgb"] for r in results])
    out["after_death"] = np.concatenate([r["after_death"] for r in results]).astype(bool)
    for key in ("missing", "wrongly_missing"):
        out[key] = {m: sum(r[key][m] for r in results) for m in MODALITIES}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--single-use", action="store_true", help="also run with every modality single-use")
    args = parser.parse_args(argv)
    modes = [("default", ())] + ([("single-use", ("depth", "lidar", "event"))] if args.single_use else [])
    print(f"# {args.seeds} x {args.duration:.0f} s per scenario; slop {SLOP_S * 1e3:.0f} ms, max_wait "
          f"{MAX_WAIT_S * 1e3:.0f} ms, queue {QUEUE}")  # fmt: skip
    print("| scenario | mode | sets / RGB | added p50 / p99 / max ms | from RGB arrival p50 / p99 ms | "
          "missing % depth / LiDAR / event | wrongly missing (sets) | not the oracle's | after a death: sets, "
          "how many waited; p99 ms of the sets before it |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, scenario in SCENARIOS.items():
        for mode, single_use in modes:
            r = merge([run(scenario, seed, args.duration, single_use) for seed in range(args.seeds)])
            a, f = r["added"] * 1e3, r["from_rgb"] * 1e3
            miss = " / ".join(f"{100.0 * r['missing'][m] / max(r['sets'], 1):.1f}" for m in MODALITIES[1:])
            wrong = sum(r["wrongly_missing"].values())
            dead, rest = a[r["after_death"]], a[~r["after_death"]]
            waited = dead[dead > 1.0]
            death = (
                f"{len(dead)}, {len(waited)} waited up to {waited.max():.0f} ms; {np.percentile(rest, 99):.2f}"
                if len(waited)
                else "-"
            )
            print(f"| {name} | {mode} | {r['sets']} / {r['refs']} | {np.percentile(a, 50):.2f} / "
                  f"{np.percentile(a, 99):.2f} / {a.max():.1f} | {np.percentile(f, 50):.1f} / "
                  f"{np.percentile(f, 99):.1f} | {miss} | {wrong} | {r['differs']} | {death} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
