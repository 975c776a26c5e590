"""The refined-maps file format: ``<id>.npz`` as ``wsss cam`` and ``wsss pseudo-label --save-maps``
write it.

    maps: K×H×W float16 (≥ 0, each divided by its max), classes: K int16 (indices into the data
    set's class list), class_names: K str, and optionally probs: K float32 (the classifier's
    probabilities of those classes)
"""

from __future__ import annotations

import os

import numpy as np

from wsss.files import atomic_path

__all__ = ["write_npz", "read_npz_maps", "read_npz_probs"]


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """np.savez_compressed, atomically (never a half-written file)."""
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


def read_npz_maps(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A maps file of this module's layout → (K×H×W float32 maps, K int64 class indices).
    Raises ValueError naming the file when it is not such a file."""
    try:
        with np.load(path) as saved:
            maps, classes = saved["maps"].astype(np.float32), saved["classes"].astype(np.int64)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path}: not a maps file (.npz with 'maps' K×H×W and 'classes' K): {error}") from error
    if maps.ndim != 3 or classes.shape != (maps.shape[0],):
        raise ValueError(f"{path}: maps {maps.shape} and classes {classes.shape} do not form K×H×W and K")
    return maps, classes


def read_npz_probs(path: str | os.PathLike) -> np.ndarray | None:
    """The classifier's K probabilities of the tagged classes saved beside the maps ("probs",
    as ``wsss pseudo-label --save-maps`` writes them), or None when the file has none."""
    with np.load(path) as saved:
        return saved["probs"].astype(np.float32) if "probs" in saved.files else None
