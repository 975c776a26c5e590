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

Training under bfloat16 autocast on a CPU also switches timm's fused attention
(``scaled_dot_product_attention``) to its explicit softmax(QKᵀ/√d)·V:
:func:`explicit_attention_for_training`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
from torch import nn


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


def explicit_attention_for_training(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> int:
    """Switch every timm attention layer of ``model`` (a module with a ``fused_attn`` flag) to
    the explicit softmax(QKᵀ/√d)·V when training on a CPU under bfloat16 autocast (``dtype``:
    :func:`autocast_dtype`'s answer). There the fused kernel's backward is the slow part of a
    step: on a 2-core AMD EPYC with AVX512-BF16 it took 42 % of a demo classifier step, and the
    explicit form made the step 1.33× faster (classifier, batch 16 at 128 px) and 1.2× (DPT
    segmenter, batch 8). With float32, and for inference, the fused kernel is as fast or faster,
    so nothing changes there (docs/results.md, issue 30). Returns how many layers were switched.
    """
    if device.type != "cpu" or dtype != torch.bfloat16:
        return 0
    switched = 0
    for module in model.modules():
        if getattr(module, "fused_attn", False):
            module.fused_attn = False
            switched += 1
    return switched
