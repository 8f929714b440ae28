"""The fast inference paths give the same answers as the slow ones (correctness only, no timing asserts).

Real sam2 modules (hiera tiny) at 128 px. Runtime on 2 idle CPU cores: ~25 s default (the ONNX test, marked
slow, adds ~80 s: the dynamo ONNX exporter is slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from memsam_core.config import ConfigError, MemSamConfig, config_from_dict
from memsam_core.engine import Segmenter, cpu_has_native_bf16, slow_precision_warning
from memsam_core.export import export_onnx, export_program, real_valued_rope
from memsam_core.model import build_memorysam
from memsam_core.model.position import CachedPositionEncoding, cache_position_encodings

SIZE = 128
CLASSES = 5


def _config(**inference) -> MemSamConfig:
    return MemSamConfig(
        model={"image_size": SIZE, "num_classes": CLASSES},
        classes={"names": [f"c{i}" for i in range(CLASSES)]},
        inference={"device": "cpu", **inference},
    )


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return Segmenter(_config())  # untrained, LoRA merged: the engine as the node runs it


def _frames(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("count", [1, 2, 3])
def test_engine_forward_matches_naive_reference_for_each_frame_count(count):
    # test_model covers 4 frames at 256 px; this covers the other counts (memory of 0, 1, 2 earlier frames)
    model = build_memorysam(_config().model.model_copy(update={"gate_logits_by_object_score": True}), seed=count)
    frames = _frames(count, seed=count)
    with torch.no_grad():
        engine = model(frames, skip_last_memory=True)["logits"]
    torch.testing.assert_close(engine, model.forward_reference(frames), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("broken", ["frames in another order", "one frame off by 1e-3"])
def test_engine_naive_tolerance_rejects_a_broken_input(broken):
    """The fault rule for engine = naive: the tolerance above (1e-4; measured agreement 6-8e-8) is tight enough to
    see the naive path given the modality frames in another order (each frame attends to another memory), or one
    frame whose preprocessing is off by 1e-3."""
    model = build_memorysam(_config().model, seed=2)
    frames = _frames(2, seed=2)
    offset = torch.tensor([0.0, 1e-3]).view(1, 2, 1, 1, 1)  # the second frame only
    wrong = frames.flip(1) if broken == "frames in another order" else frames + offset
    with torch.no_grad():
        engine = model(frames, skip_last_memory=True)["logits"]
        torch.testing.assert_close(engine, model.forward_reference(frames), rtol=1e-4, atol=1e-4)
        with pytest.raises(AssertionError):
            torch.testing.assert_close(engine, model.forward_reference(wrong), rtol=1e-4, atol=1e-4)


def test_cached_position_encodings_equal_sam2_and_are_batch_views():
    model = build_memorysam(_config().model, seed=3)
    stock = [m.position_encoding for m in (model.sam.image_encoder.neck, model.sam.memory_encoder)]
    assert cache_position_encodings(model) == 2
    assert cache_position_encodings(model) == 0  # idempotent
    for original, cached in zip(stock, (model.sam.image_encoder.neck, model.sam.memory_encoder)):
        assert isinstance(cached.position_encoding, CachedPositionEncoding)
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.zeros(3, 7, 16, 24, dtype=dtype)
            fast = cached.position_encoding(x)
            torch.testing.assert_close(fast, original(x).to(dtype), rtol=0, atol=0)
            assert fast.dtype == dtype and fast.stride(0) == 0  # one tensor shared by the batch, not a copy


def test_cached_position_encoding_under_torch_compile_keeps_its_cache_clean():
    # traced code (torch.compile, torch.export, ONNX) must not store a traced tensor in the eager cache
    sine = build_memorysam(_config().model, seed=3).sam.image_encoder.neck.position_encoding
    cached = CachedPositionEncoding(sine)
    x = torch.zeros(2, 7, 16, 24)
    compiled = torch.compile(cached, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), sine(x), rtol=0, atol=0)
    assert cached._cache == {}
    cached(x)  # eager fills it
    assert len(cached._cache) == 1


def test_engine_with_cached_encodings_matches_stock_naive_path_and_still_trains():
    stock = build_memorysam(_config().model, seed=4)
    fast = build_memorysam(_config().model, seed=4)
    cache_position_encodings(fast)
    frames = _frames(3, seed=4)
    with torch.inference_mode():
        engine = fast(frames)["logits"]  # CPU inference: the chunked encoder + broadcast encodings
    torch.testing.assert_close(engine, stock.forward_reference(frames), rtol=1e-4, atol=1e-4)
    # the cache was filled in inference mode; a training step on the same model must still backpropagate
    fast.train()
    loss = fast(frames)["logits"].square().mean()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in fast.parameters() if p.requires_grad)


def test_postprocess_confidence_is_the_softmax_maximum(segmenter):
    logits = torch.randn(1, CLASSES, 32, 48, generator=torch.Generator().manual_seed(1)) * 4
    logits[0, 2, :4, :4] = 80.0  # saturated pixels: confidence exactly 1, no overflow
    for out_hw in [(32, 48), (50, 70)]:
        labels, confidence = segmenter._postprocess(logits, out_hw)
        resized = torch.nn.functional.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
        expected_conf, expected_labels = torch.softmax(resized[0], dim=0).max(dim=0)
        np.testing.assert_array_equal(labels, expected_labels.numpy().astype(np.uint8))
        np.testing.assert_allclose(confidence, expected_conf.numpy(), rtol=1e-6, atol=1e-6)
        assert confidence.dtype == np.float32 and labels.dtype == np.uint8


def test_bf16_autocast_on_cpu_tracks_fp32(segmenter):
    fast = Segmenter(_config(precision="bf16"), model=segmenter.model)
    frames = _frames(4, seed=2)
    reference = segmenter.logits(frames)
    approx = fast.logits(frames)
    assert approx.dtype == torch.float32 and torch.isfinite(approx).all()
    # bf16 keeps 8 mantissa bits: small relative error, and the decision mostly unchanged
    error = (approx - reference).abs().mean() / reference.abs().mean()
    assert error < 0.05, f"bf16 relative error {error:.3f}"
    agreement = (approx.argmax(1) == reference.argmax(1)).float().mean()
    assert agreement > 0.9, f"bf16 argmax agreement {agreement:.3f}"


def test_bf16_tolerance_rejects_frames_in_another_order(segmenter):
    """The fault rule for the test above: bf16 given the modality frames in another order is outside its tolerance
    (measured relative error 0.107 against 0.007 for the right order; tolerance 0.05)."""
    fast = Segmenter(_config(precision="bf16"), model=segmenter.model)
    frames = _frames(4, seed=2)
    reference, swapped = segmenter.logits(frames), fast.logits(frames.flip(1))
    error = (swapped - reference).abs().mean() / reference.abs().mean()
    assert error > 0.05, f"bf16 on reordered frames: relative error {error:.3f}"


def test_slow_cpu_precisions_are_named_at_start_up():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert slow_precision_warning(cpu, "fp32") is None
    assert "fp16" in slow_precision_warning(cpu, "fp16")
    assert slow_precision_warning(cuda, "fp16") is None and slow_precision_warning(cuda, "bf16") is None
    assert (slow_precision_warning(cpu, "bf16") is None) == cpu_has_native_bf16()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # torch's ISA probe agrees with the kernel's flags
        flags = set(cpuinfo.read_text().split())
        assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_tile"})


def test_compile_mode_is_validated():
    assert _config(compile_mode="reduce-overhead").inference.compile_mode == "reduce-overhead"
    with pytest.raises(ConfigError, match="compile_mode"):
        config_from_dict({"inference": {"compile_mode": "fastest"}}, "test.yaml")


def test_real_valued_rope_equals_sam2_complex_rope(segmenter):
    frames = _frames(3, seed=3)
    expected = segmenter.logits(frames)
    with torch.inference_mode(), real_valued_rope(segmenter.model) as patched:
        got = segmenter.model(frames)["logits"]
    assert patched == 8  # 4 memory-attention layers x (self, cross)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert "forward" not in vars(segmenter.model.sam.memory_attention.layers[0].self_attn)  # restored


def test_exported_program_matches_eager(segmenter):
    program = export_program(segmenter.model, num_modalities=2)
    frames = _frames(2, seed=4)
    with torch.no_grad():
        exported = program.module()(frames)
    torch.testing.assert_close(exported, segmenter.logits(frames), rtol=1e-4, atol=1e-4)
    assert not any(p.dtype.is_complex for p in program.state_dict.values())


@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime_like_eager(segmenter, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="pip install onnxruntime (requirements.txt)")
    path = export_onnx(segmenter.model, tmp_path / "memsam.onnx", num_modalities=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = _frames(2, seed=5)
    (logits,) = session.run(None, {"frames": frames.numpy()})
    np.testing.assert_allclose(logits, segmenter.logits(frames).numpy(), rtol=1e-4, atol=1e-4)


def _raw_set(seed: int, height: int = 96, width: int = 128) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 60.0, (height, width)).astype(np.float32)
    depth[rng.random((height, width)) < 0.1] = np.nan
    return {
        "rgb": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "depth": depth,
        "event": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
    }


def test_reused_buffers_do_not_leak_between_calls(segmenter):
    # the engine reuses its host input buffer and postprocessing scratch: results of one call must not change
    # when the next call runs, and each call must equal a fresh engine's answer
    first, second = _raw_set(1), _raw_set(2)
    labels_1, confidence_1 = segmenter.segment(first)
    kept = labels_1.copy(), confidence_1.copy()
    labels_2, confidence_2 = segmenter.segment(second)
    np.testing.assert_array_equal(labels_1, kept[0])
    np.testing.assert_array_equal(confidence_1, kept[1])
    assert not np.shares_memory(confidence_1, confidence_2)
    fresh = Segmenter(_config(), model=segmenter.model)
    np.testing.assert_array_equal(fresh.segment(second)[0], labels_2)
    np.testing.assert_allclose(fresh.segment(second)[1], confidence_2, rtol=0, atol=0)
    # a set with a sensor missing (another buffer shape) in between changes nothing for the full sets
    without_depth = {k: v for k, v in first.items() if k != "depth"}
    assert segmenter.segment_batch([without_depth])[0].missing == ("depth", "lidar")
    np.testing.assert_array_equal(segmenter.segment(first)[0], kept[0])
    np.testing.assert_array_equal(segmenter.segment(first)[1], kept[1])


def test_frames_to_tensor_into_a_buffer_equals_the_allocating_path():
    from memsam_core.modalities import frames_to_tensor

    frames = _raw_set(3)  # 96x128 → resized to 128; plus an already network-sized set (written in place)
    same_size = {k: v[:, :SIZE] for k, v in _raw_set(4, SIZE, SIZE + 8).items()}  # non-contiguous views
    for raw in (frames, same_size):
        expected, present = frames_to_tensor(raw, ["rgb", "depth", "lidar", "event"], SIZE)
        buffer = torch.full((len(present), 3, SIZE, SIZE), float("nan"))
        out, _ = frames_to_tensor(raw, ["rgb", "depth", "lidar", "event"], SIZE, out=buffer)
        assert out is buffer
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="out must be float32"):
        frames_to_tensor(frames, ["rgb"], SIZE, out=torch.empty(2, 3, SIZE, SIZE))


def test_gpu_session_tools_dry_run_on_cpu(tmp_path):
    # what a GPU machine runs (benchmarks/gpu_session.sh; CI has no GPU): keep the scripts runnable here
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    for script in ("benchmarks/gpu_session.sh", "scripts/gpu_bundle.sh"):
        assert subprocess.run(["bash", "-n", str(root / script)]).returncode == 0, f"{script}: syntax error"
    train = [sys.executable, "benchmarks/bench_training.py", "--device", "cpu", "--size", str(SIZE), "--iters", "3"]
    train += ["--warmup", "1", "--batch", "1", "--pool", "2", "--workers", "0", "--json", str(tmp_path / "t.jsonl")]
    result = subprocess.run(train, capture_output=True, text=True, timeout=300, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads((tmp_path / "t.jsonl").read_text())
    assert row["iters"] == 3 and row["iter_per_s"] > 0 and row["images_per_s"] == pytest.approx(4 * row["sets_per_s"])
    profile = [sys.executable, "benchmarks/profile_engine.py", "--device", "cpu", "--size", str(SIZE), "--sets", "1"]
    result = subprocess.run(profile, capture_output=True, text=True, timeout=300, cwd=root)
    assert result.returncode == 0 and "no CUDA kernels in the trace" in result.stdout, result.stderr[-2000:]


def test_profile_summary_separates_kernel_time_from_gaps():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from profile_engine import busy_time_us, summarise_trace

    assert busy_time_us([(0, 10), (5, 12), (20, 25)]) == 17  # overlapping kernels count once
    trace = {
        "traceEvents": [
            {"cat": "kernel", "name": "gemm", "ts": 0, "dur": 10},
            {"cat": "kernel", "name": "add", "ts": 30, "dur": 10},
            {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 0, "dur": 1},
            {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 29, "dur": 1},
        ]
    }
    summary = summarise_trace(trace, sets=1)
    assert summary["kernel_busy_ms_per_set"] == pytest.approx(0.020)
    assert summary["idle_ms_per_set"] == pytest.approx(0.020) and summary["launch_calls_per_set"] == 2
