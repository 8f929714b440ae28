"""Export the inference network (fixed modality count and image size) for deployment runtimes.

The memory chain is a Python loop over frames, so an exported graph is specialised to one modality count
``M`` (the loop is unrolled) and one square image size; export one program per ``M`` you need (usually the
full set). Two routes:

* :func:`export_program` — ``torch.export`` (non-strict) → an ``ExportedProgram`` / ``.pt2`` file. Feed it
  to Torch-TensorRT (``torch_tensorrt.dynamo.compile(program, inputs=[...], enabled_precisions={torch.half})``)
  or AOTInductor (``torch._inductor.aoti_compile_and_package``).
* :func:`export_onnx` — ``torch.onnx.export(dynamo=True)`` → ``.onnx`` for ``trtexec`` / ONNX Runtime
  (needs the ``onnxscript`` package).

Input: float32 ``[B, M, 3, S, S]`` frames exactly as :func:`memsam_core.modalities.frames_to_tensor` stacks
them; output: float32 ``[B, C, S, S]`` class logits (softmax/argmax stay in the caller).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from sam2.modeling.sam.transformer import RoPEAttention
from torch import nn

from memsam_core.model import MemorySAM


class LogitsNetwork(nn.Module):
    """MemorySAM's engine forward with a plain tensor output (exporters want tensors, not dicts)."""

    def __init__(self, model: MemorySAM, skip_last_memory: bool = True) -> None:
        super().__init__()
        self.model = model
        self.skip_last_memory = skip_last_memory

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model(frames, skip_last_memory=self.skip_last_memory)["logits"].float()


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * (cos + i sin)`` on (even, odd) channel pairs, in real arithmetic (what SAM 2 does with complex)."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    even, odd = pairs.unbind(-1)
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).type_as(x)


def _real_rope_forward(
    self: RoPEAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0
) -> torch.Tensor:
    """SAM 2's ``RoPEAttention.forward`` without complex tensors (ONNX/TensorRT have no complex dtype)."""
    q = self._separate_heads(self.q_proj(q), self.num_heads)
    k = self._separate_heads(self.k_proj(k), self.num_heads)
    v = self._separate_heads(self.v_proj(v), self.num_heads)
    cos, sin = self._memsam_rope_real
    if cos.shape[0] != q.shape[-2]:
        side = int(math.sqrt(q.shape[-2]))
        table = self.compute_cis(end_x=side, end_y=side)
        cos, sin = table.real.to(q.device), table.imag.to(q.device)
    num_k_rope = k.size(-2) - num_k_exclude_rope
    repeat = num_k_rope // q.shape[-2] if self.rope_k_repeat else 1
    q = _rotate_pairs(q, cos, sin)
    k_rope = _rotate_pairs(k[:, :, :num_k_rope], cos.repeat(repeat, 1), sin.repeat(repeat, 1))
    k = torch.cat([k_rope, k[:, :, num_k_rope:]], dim=-2)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
    return self.out_proj(self._recombine_heads(out))


@contextlib.contextmanager
def real_valued_rope(model: nn.Module) -> Iterator[int]:
    """Temporarily run every SAM 2 ``RoPEAttention`` below ``model`` with real cos/sin tables; yields the count."""
    patched = [m for m in model.modules() if isinstance(m, RoPEAttention)]
    for module in patched:
        table = module.freqs_cis
        module._memsam_rope_real = (table.real.contiguous(), table.imag.contiguous())
        module.forward = types.MethodType(_real_rope_forward, module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward
            del module._memsam_rope_real


def example_input(model: MemorySAM, num_modalities: int, batch: int = 1) -> torch.Tensor:
    """Zeros of the exported input shape, on the model's device."""
    if not 1 <= num_modalities <= 16:
        raise ValueError(f"num_modalities must be 1..16, got {num_modalities}")
    device = next(model.parameters()).device
    size = model.image_size
    return torch.zeros(batch, num_modalities, 3, size, size, device=device)


def export_program(model: MemorySAM, num_modalities: int, batch: int = 1) -> torch.export.ExportedProgram:
    """``torch.export`` the network for ``num_modalities`` frames (LoRA should already be merged)."""
    network = LogitsNetwork(model).eval()
    with torch.no_grad(), real_valued_rope(model):
        return torch.export.export(network, (example_input(model, num_modalities, batch),), strict=False)


def export_onnx(model: MemorySAM, path: str | Path, num_modalities: int, batch: int = 1) -> Path:
    """Write an ONNX file (opset chosen by the dynamo exporter); raises ImportError without onnxscript."""
    try:
        import onnxscript  # noqa: F401  (the dynamo ONNX exporter needs it)
    except ImportError as err:
        raise ImportError("ONNX export needs `pip install onnxscript` (see requirements.txt)") from err
    path = Path(path)
    network = LogitsNetwork(model).eval()
    with torch.no_grad(), real_valued_rope(model):
        program = torch.onnx.export(
            network,
            (example_input(model, num_modalities, batch),),
            dynamo=True,
            input_names=["frames"],
            output_names=["logits"],
        )
    program.save(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m memsam_core.export --config C --checkpoint K --out net.pt2 [--onnx net.onnx]``."""
    from memsam_core.engine import Segmenter

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="memsam YAML config (default: built-in defaults)")
    parser.add_argument("--checkpoint", default=None, help="memsam checkpoint (default: inference.checkpoint)")
    parser.add_argument("--modalities", type=int, default=0, help="frame count M (default: all configured)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", default="", help=".pt2 path for the torch.export program")
    parser.add_argument("--onnx", default="", help=".onnx path (needs onnxscript)")
    args = parser.parse_args(argv)
    if not args.out and not args.onnx:
        parser.error("give --out and/or --onnx")
    overrides = {"inference.device": "cpu", "inference.compile": False}
    segmenter = Segmenter.from_files(args.config, args.checkpoint, **overrides)
    count = args.modalities or len(segmenter.config.model.modalities)
    try:
        if args.out:
            torch.export.save(export_program(segmenter.model, count, args.batch), args.out)
            print(f"wrote {args.out} (torch.export, M={count}, S={segmenter.model.image_size})")
        if args.onnx:
            export_onnx(segmenter.model, args.onnx, count, args.batch)
            print(f"wrote {args.onnx} (ONNX, M={count}, S={segmenter.model.image_size})")
    except (ImportError, ValueError, RuntimeError) as err:
        print(f"memsam export: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
