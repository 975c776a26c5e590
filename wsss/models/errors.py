"""Errors of the model builders, importable without torch (the CLI catches them)."""

from __future__ import annotations

import os
import re


class PretrainedWeightsError(ValueError):
    """model.pretrained names a file that is missing, unreadable or does not fit the model."""


def why_not_loaded(path: str | os.PathLike, error: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``error``, in a few words of our own.

    torch's message advises re-running with ``weights_only=False``, which "will likely succeed":
    for a file of unknown origin that runs whatever code it holds, and for a file that is no
    checkpoint at all it does not help. Here instead: the object that is not plain data (the
    file is refused, it is not loaded), or what the file is when it is not a checkpoint."""
    text = str(error)
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if unsafe:
        return (f"it holds {unsafe.group(1)}, which is not plain data (tensors, dicts, lists, strings, numbers): "
                "loading it could run code, so it is refused; a checkpoint you made yourself can be saved again "
                "with only its tensors")
    detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:\n\n|Check the documentation|$)", text, re.S)
    if detail:
        text = detail.group(1)
    elif "weights_only" in text:  # torch's advice and nothing else: not repeated
        text = ""
    reason = f"{type(error).__name__}: {text.splitlines()[0]}" if text.strip() else type(error).__name__
    what = _looks_like(path)
    return f"not a PyTorch checkpoint ({what}; {reason})" if what else f"not a PyTorch checkpoint, or a damaged one ({reason})"


def _looks_like(path: str | os.PathLike) -> str:
    """What the file is from its first bytes ("the file is empty", "it looks like JSON", "it looks
    like text"), or "" when they say nothing."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return ""
    if not head:
        return "the file is empty"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it looks like JSON"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return "it looks like text" if all(c >= 32 or c in (9, 10, 13) for c in head) else ""
