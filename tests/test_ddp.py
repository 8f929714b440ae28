"""Two DDP ranks on CPU (gloo, launched with torchrun) stay in sync: weights, SPMM memory, eval. ~30 s."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memsam_core.model.build import read_memsam_checkpoint

ROOT = Path(__file__).resolve().parents[1]

_RANK_SCRIPT = """
import sys, torch, torch.distributed as dist
from memsam_core.config import load_config, parse_overrides
from memsam_training.train import Trainer

out = sys.argv[1]
trainer = Trainer(load_config(None, parse_overrides(sys.argv[2:])))
init = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
report = trainer.fit()
trainer.sampler.set_epoch(0)
torch.save({
    "params": {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad},
    "init": init,
    "spmm": trainer.spmm.state_dict(),
    "batches": list(trainer.sampler),
    "miou": report["miou"],
    "world": dist.get_world_size(),
}, f"{out}/rank{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(tmp_path: Path, sets: list[str]) -> tuple[dict, dict]:
    """Train with ``sets`` on two gloo ranks under ``torch.distributed.run``; each rank's saved state."""
    script = tmp_path / "rank_main.py"
    script.write_text(_RANK_SCRIPT)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{_free_port()}",
        str(script),
        str(tmp_path),
        *sets,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return tuple(torch.load(tmp_path / f"rank{r}.pt") for r in range(2))


@pytest.mark.slow
def test_two_gloo_ranks_stay_in_sync(tmp_path: Path) -> None:
    sets = [
        "model.image_size=128",
        "model.modalities=[rgb,depth]",
        "data.synthetic_height=128",
        "data.synthetic_width=128",
        "data.synthetic_train_size=4",
        "data.synthetic_val_size=3",
        "train.crop_size=128",
        "train.batch_size=1",
        "train.epochs=1",
        "train.threads=1",
        "train.spmm_scale=10.0",
        "inference.device=cpu",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    r0, r1 = run_two_ranks(tmp_path, sets)
    assert r0["world"] == r1["world"] == 2
    # Each rank trained on its own shard ...
    assert r0["batches"] and not {i for b in r0["batches"] for i in b} & {i for b in r1["batches"] for i in b}
    # ... yet weights are identical (gradients all-reduced) and actually changed.
    changed = 0
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
        changed += not torch.equal(value, r0["init"][name])
    assert changed > 10
    # SPMM memory identical on every rank (class sums and counts all-reduced).
    assert r0["spmm"]["initialised"].any()
    assert torch.equal(r0["spmm"]["memory"], r1["spmm"]["memory"])
    assert r0["miou"] == r1["miou"]  # sharded evaluation merged across ranks
    # Rank 0's checkpoint holds the same weights.
    ckpt = read_memsam_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    for name, value in r0["params"].items():
        assert torch.equal(ckpt["model"][name], value), name
    assert torch.equal(ckpt["spmm"]["memory"], r0["spmm"]["memory"])
