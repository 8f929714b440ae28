"""SPMM: class means (single division), EMA memory as a buffer, absent classes, DDP equivalence. ~10 s."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from memsam_core.spmm import SemanticPrototypeMemory

NUM_CLASSES, DIM = 5, 4


def _batch(seed: int = 0, batch: int = 2, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``[B, DIM, size/4, size/4]`` and full-resolution labels ``[B, size, size]`` using classes 0..2."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, DIM, size // 4, size // 4, generator=gen)
    labels = torch.randint(0, 3, (batch, size, size), generator=gen)
    labels[:, :2] = 255  # some ignore pixels
    return features, labels


def _expected_means(features: torch.Tensor, labels: torch.Tensor) -> dict[int, torch.Tensor]:
    small = F.interpolate(labels[:, None].float(), size=features.shape[-2:], mode="nearest")[:, 0].long()
    flat = features.permute(0, 2, 3, 1).reshape(-1, DIM)
    ids = small.reshape(-1)
    return {c: flat[ids == c].mean(0) for c in range(NUM_CLASSES) if (ids == c).any()}


def test_first_update_sets_memory_to_class_means_single_division() -> None:
    spmm = SemanticPrototypeMemory(NUM_CLASSES, DIM, momentum=0.8).train()
    features, labels = _batch()
    loss = spmm(features, labels)
    means = _expected_means(features, labels)
    assert set(means) == {0, 1, 2}
    for c, mean in means.items():
        torch.testing.assert_close(spmm.memory[c], mean)  # a true mean: no second division by the count
    assert spmm.initialised.tolist() == [True, True, True, False, False]
    assert torch.count_nonzero(spmm.memory[3:]) == 0  # absent classes untouched
    assert float(loss) == pytest.approx(0.0, abs=1e-9)  # first step: memory == batch prototype


def test_ema_update_and_loss_follow_the_formula() -> None:
    m, scale, weight = 0.8, 3.0, 0.5
    spmm = SemanticPrototypeMemory(NUM_CLASSES, DIM, momentum=m, scale=scale, weight=weight).train()
    first, labels1 = _batch(0)
    spmm(first, labels1)
    old = spmm.memory.clone()
    features, labels = _batch(1)
    labels[labels == 2] = 4  # class 2 absent now, class 4 appears for the first time
    features.requires_grad_(True)
    loss = spmm(features, labels)
    means = _expected_means(features.detach(), labels)
    assert set(means) == {0, 1, 4}
    for c in (0, 1):
        torch.testing.assert_close(spmm.memory[c], m * old[c] + (1 - m) * means[c])
    torch.testing.assert_close(spmm.memory[4], means[4])  # first sighting sets it
    torch.testing.assert_close(spmm.memory[2], old[2])  # absent: not decayed
    present = [0, 1, 4]
    batch_protos = torch.stack([means[c] for c in present])
    expected = scale * weight * F.mse_loss(batch_protos, spmm.memory[present])
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()  # gradient reaches the features through the batch prototypes only
    assert features.grad is not None and torch.count_nonzero(features.grad) > 0


def test_memory_is_a_checkpointed_buffer_and_eval_does_not_update() -> None:
    spmm = SemanticPrototypeMemory(NUM_CLASSES, DIM).train()
    spmm(*_batch(0))
    state = spmm.state_dict()
    assert set(state) == {"memory", "initialised"}
    restored = SemanticPrototypeMemory(NUM_CLASSES, DIM)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.memory, spmm.memory)
    restored.eval()
    before = restored.memory.clone()
    restored(*_batch(1))
    torch.testing.assert_close(restored.memory, before)


def test_all_ignore_batch_gives_zero_loss_and_no_update() -> None:
    spmm = SemanticPrototypeMemory(NUM_CLASSES, DIM).train()
    features, labels = _batch()
    features.requires_grad_(True)
    loss = spmm(features, torch.full_like(labels, 255))
    loss.backward()
    assert float(loss.detach()) == 0.0 and not spmm.initialised.any()


# ------------------------------------------------------------------------------ DDP: 2 gloo ranks
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    spmm = SemanticPrototypeMemory(NUM_CLASSES, DIM).train()
    for step in range(2):
        features, labels = _batch(step, batch=4)
        features = features[rank * 2 : rank * 2 + 2].clone().requires_grad_(True)  # this rank's half
        loss = spmm(features, labels[rank * 2 : rank * 2 + 2])
        loss.backward()
        grad = features.grad.clone()
        dist.all_reduce(grad.new_zeros(1))  # barrier
    torch.save({"memory": spmm.memory, "grad": grad, "loss": loss.detach()}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_ranks_share_memory_and_match_the_single_process_gradient(tmp_path) -> None:
    mp.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    torch.testing.assert_close(r0["memory"], r1["memory"], rtol=0, atol=0)  # identical on every rank
    single = SemanticPrototypeMemory(NUM_CLASSES, DIM).train()
    for step in range(2):
        features, labels = _batch(step, batch=4)
        features.requires_grad_(True)
        loss = single(features, labels)
        loss.backward()
    torch.testing.assert_close(r0["memory"], single.memory)
    # DDP averages gradients over ranks: (grad_rank / world) must equal the full-batch gradient's share.
    torch.testing.assert_close(r0["grad"] / 2, features.grad[:2], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(r1["grad"] / 2, features.grad[2:], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(r0["loss"] / 2, loss.detach())
