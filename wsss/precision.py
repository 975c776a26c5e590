"""Mixed precision: which autocast a device gets, and the trainers' loss scaler.

Both trainers (classifier and segmenter) take their ``amp`` setting through
:func:`mixed_precision`. Weights, optimiser state and losses stay float32; only the forward's
matrix products and convolutions run in the lower precision:

- CUDA: bfloat16 where the GPU has it, else float16 with loss scaling (GradScaler).
- CPU: bfloat16 where the processor computes it natively (AVX512-BF16 or AMX, as oneDNN
  reports); elsewhere off, because emulated bfloat16 is slower than float32.
- any other device: off.

The offline maps (``cam.amp``, ``wsss.attention.views.MultiViewMaps``) use
:func:`bfloat16_autocast_dtype`: bfloat16 where the device has it natively, else float32 (no
float16: a backward without loss scaling could underflow). PAMR, the label rule and
prediction run in float32.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch


def cpu_has_native_bf16() -> bool:
    """True when oneDNN computes bfloat16 products natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def bfloat16_autocast_dtype(device: torch.device) -> torch.dtype | None:
    """torch.bfloat16 where ``device`` computes it natively (a CUDA GPU with bf16, a CPU with
    AVX512-BF16/AMX), else None (float32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype ``mixed_precision`` uses on ``device`` (None: float32 throughout):
    bfloat16 where native, float16 on a GPU without it."""
    if not enabled:
        return None
    dtype = bfloat16_autocast_dtype(device)
    if dtype is None and device.type == "cuda":
        return torch.float16
    return dtype


def mixed_precision(device: torch.device, enabled: bool) -> tuple[Callable[[], ContextManager], torch.amp.GradScaler]:
    """(autocast context factory, GradScaler) for training on ``device`` with ``amp`` = ``enabled``.

    The scaler is enabled only for float16 (CUDA without bfloat16); a disabled scaler passes
    ``scale``, ``step`` and ``update`` through, so the training loop is the same in every case.
    """
    dtype = autocast_dtype(device, enabled)
    scaler = torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=dtype == torch.float16)
    if dtype is None:
        return nullcontext, scaler
    return (lambda: torch.autocast(device.type, dtype=dtype)), scaler


def describe_precision(device: torch.device, enabled: bool) -> str:
    """One line for the log: what ``mixed_precision`` does on ``device``."""
    dtype = autocast_dtype(device, enabled)
    if dtype is not None:
        return f"mixed precision: {str(dtype).removeprefix('torch.')} autocast on {device.type}"
    if enabled and device.type == "cpu":
        return "mixed precision: off (this CPU has no native bfloat16; float32)"
    return "float32"
