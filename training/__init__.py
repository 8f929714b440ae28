"""Offline training of MemorySAM: data → tensors, OHEM + SPMM losses, AdamW + warmup-poly, DDP, eval.

Entry point: ``python -m memsam_training.train --config config/train_synthetic.yaml`` (or ``memsam-train``).
"""
