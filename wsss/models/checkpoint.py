"""Checkpoints as plain data: weights, the model's settings, the classes, a format version.

Every file wsss writes is a dict of tensors, dicts, lists, strings and numbers, read back with
``torch.load(weights_only=True)``: loading a file a user was sent runs no code. Written
atomically (``wsss.files``), so an interruption never leaves a half-written file.

    classifier.pt   {"format": "wsss-classifier", "format_version": 3, "model": state dict,
                     "model_config": the model section, "classes": [...], "history": [...]}
    segmenter.pt    {"format": "wsss-segmenter", "format_version": 3, "model": state dict,
                     "model_config": ..., "head": train.segmenter.head (dpt, setr_pup, ...),
                     "head_config": that head's section, "classes", "history"}

A checkpoint of an older format (format 2: only the DPT head, weights under "dpt."; format 1,
before December 2026: no format_version, the whole configuration under "config") no longer
loads: the error names the file and both versions and says to re-train it. Settings a
checkpoint of this format holds that this version no longer knows are ignored on load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from wsss.config import HeadConfig, ModelConfig, SegmenterTrainConfig
from wsss.files import atomic_path
from wsss.models.classifier import create_classifier
from wsss.models.errors import why_not_loaded
from wsss.models.segmentation_model import Segmenter, create_segmenter

__all__ = ["FORMAT_VERSION", "save_checkpoint", "load_checkpoint", "classifier_checkpoint",
           "segmenter_checkpoint", "check_format", "load_classifier", "load_segmenter", "read_classes",
           "resolve_device", "known_settings"]

FORMAT_VERSION = 3


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """torch.save ``state`` (plain data only) to ``path`` atomically; the same state gives the
    same bytes (through an open file: given a path, torch.save names the zip's records after
    the temporary file, so every save had other bytes and another digest)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        torch.save(state, file)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``; FileNotFoundError when missing, ValueError
    naming the file when it is not a plain-data checkpoint (damaged, or holding objects)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling raises many types for a damaged or unsafe file
        raise ValueError(f"{path}: cannot read as a plain-data checkpoint: {why_not_loaded(path, error)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: a checkpoint holds a dict, got {type(state).__name__}")
    return state


def known_settings(section: type[BaseModel], values: dict) -> BaseModel:
    """``section`` validated from ``values`` without the keys it no longer knows (recursively
    for nested sections): a checkpoint written with older settings still loads."""
    kept: dict[str, Any] = {}
    for name, field in section.model_fields.items():
        if name not in values:
            continue
        value, kind = values[name], field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and isinstance(value, dict):
            value = known_settings(kind, value)
        kept[name] = value
    return section.model_validate(kept)


def classifier_checkpoint(model: nn.Module, model_config: ModelConfig, classes: list[str],
                          history: list[dict]) -> dict:
    """The content of classifier.pt."""
    return {"format": "wsss-classifier", "format_version": FORMAT_VERSION, "model": model.state_dict(),
            "model_config": model_config.model_dump(mode="json"), "classes": list(classes), "history": history}


def segmenter_checkpoint(segmenter: Segmenter, model_config: ModelConfig, head_config: HeadConfig,
                         classes: list[str], history: list[dict]) -> dict:
    """The content of segmenter.pt (``head_config``: the section of ``segmenter.head_name``)."""
    return {"format": "wsss-segmenter", "format_version": FORMAT_VERSION, "model": segmenter.state_dict(),
            "model_config": model_config.model_dump(mode="json"), "head": segmenter.head_name,
            "head_config": head_config.model_dump(mode="json"), "classes": list(classes), "history": history}


def check_format(state: dict, path: str | os.PathLike, kind: str) -> None:
    """ValueError naming ``path`` unless ``state`` is a wsss ``kind`` ("classifier" or
    "segmenter") checkpoint of this FORMAT_VERSION; an older one (or one with no format_version:
    format 1) is to be re-trained, this version no longer reads it."""
    command = f"wsss train {kind}"
    if "format" not in state and not {"model", "classes"} <= set(state):  # format 1 had no "format"
        raise ValueError(f"{path}: not a wsss {kind} checkpoint (expected {kind}.pt of {command})")
    found = state.get("format_version", 1)
    if not isinstance(found, int) or found < FORMAT_VERSION:
        missing = " (it has no format_version)" if "format_version" not in state else ""
        raise ValueError(f"{path}: checkpoint format version {found}{missing}, expected version {FORMAT_VERSION}: "
                         f"written by an older wsss that this version no longer reads; re-train it ({command})")
    if found > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {found}, expected version {FORMAT_VERSION}: "
                         "written by a newer wsss; update wsss to read it")
    if state.get("format") != f"wsss-{kind}":
        raise ValueError(f"{path}: a {state.get('format', 'unknown')} checkpoint, not a wsss {kind} checkpoint "
                         f"(expected {kind}.pt of {command})")
    if not {"model", "model_config", "classes"} <= set(state):
        raise ValueError(f"{path}: not a wsss {kind} checkpoint (expected {kind}.pt of {command})")


def _model_section(state: dict) -> ModelConfig:
    """The model settings of a checkpoint, without the pretrained source (its weights are in it)."""
    return known_settings(ModelConfig, state["model_config"]).model_copy(update={"pretrained": None})


def _head_section(state: dict, path: Path) -> tuple[str, HeadConfig]:
    """(head name, its section) of a segmenter checkpoint."""
    name, values = state.get("head"), state.get("head_config") or {}
    if name not in SegmenterTrainConfig.model_fields or not any(k.startswith("decoder.") for k in state["model"]):
        raise ValueError(f"{path}: head {name!r} is not a head this version knows, or its weights are missing")
    section = SegmenterTrainConfig.model_fields[name].annotation
    return name, known_settings(section, values)


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, list[str], ModelConfig]:
    """classifier.pt → (model in eval mode, class names, its model section)."""
    path = Path(path)
    state = load_checkpoint(path)
    check_format(state, path, "classifier")
    model_config = _model_section(state)
    model = create_classifier(model_config, len(state["classes"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: its weights do not fit its model settings ({error})") from None
    return model.to(device).eval(), list(state["classes"]), model_config


def load_segmenter(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Segmenter, list[str], ModelConfig]:
    """segmenter.pt → (Segmenter in eval mode, class names, its model section)."""
    path = Path(path)
    state = load_checkpoint(path)
    check_format(state, path, "segmenter")
    model_config = _model_section(state)
    head, head_config = _head_section(state, path)
    segmenter = create_segmenter(model_config, head, head_config, len(state["classes"]))
    try:
        segmenter.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: its weights do not fit its {head} head and model settings ({error})") from None
    return segmenter.to(device).eval(), list(state["classes"]), model_config


def read_classes(path: str | os.PathLike) -> list[str]:
    """The class names stored in a classifier or segmenter checkpoint."""
    state = load_checkpoint(path)
    if "classes" not in state:
        raise ValueError(f"{path}: not a wsss checkpoint (no class names)")
    return list(state["classes"])


def read_depth(path: str | os.PathLike) -> int:
    """The number of transformer blocks of a classifier checkpoint's ViT, counted from its
    weights' names (``blocks.<i>.…``), without building the model."""
    state = load_checkpoint(path)
    check_format(state, path, "classifier")
    return len({key.split(".")[1] for key in state["model"] if key.startswith("blocks.")})


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """'auto' → cuda when available else cpu; otherwise torch.device(name) with a clear error
    that names ``setting`` (where the value came from, e.g. a command-line flag)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"{setting}={name!r}: expected auto, cpu, cuda or cuda:N ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{setting}={name!r} but CUDA is not available on this machine")
    return device
