"""Local pretrained weights in every layout users have: found, read, recognised, fitted to a timm ViT.

``model.pretrained`` names one of

- a file: a torch file (``.pth``/``.pt``/``.bin``, read with ``torch.load(weights_only=True)``),
  a ``.safetensors`` file, or a Google ``.npz`` ViT (the kind is read from the file's first
  bytes, not its name);
- a timm Hugging Face folder: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``);
- ``hf-hub:ORG/NAME`` (e.g. ``hf-hub:timm/vit_small_patch16_224.augreg_in21k``): that folder
  in the local Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), downloaded only when ``model.allow_download`` is true.

The tensors inside are recognised as one of ``LAYOUTS`` and converted to timm's key names;
``inspect_weights`` then checks them against the model (the head is the model's own when its
shape differs, position embeddings are resampled to the model's grid) and ``load_pretrained``
loads them or raises PretrainedWeightsError naming the missing, unexpected and mis-shaped
keys and the layout the file looked like.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from wsss.models.errors import PretrainedWeightsError, why_not_loaded

LAYOUTS = {
    "timm": "timm's keys (cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, norm.*, head.*), flat or under "
            "model / state_dict / model_state: timm exports, DeiT releases, wsss classifier.pt",
    "deit-distilled": "timm's keys plus dist_token and head_dist.* (distilled DeiT); a model without a distillation "
                      "token drops both and the token's position embedding",
    "dino": "timm's keys without head.* (DINO's released backbones, any head-less export)",
    "dino-training": "a DINO training checkpoint {student, teacher, optimizer, epoch, ...}: the teacher's backbone.* "
                     "is read, the DINO head.* dropped",
    "dinov2": "DINOv2: timm's keys plus mask_token (layer scales blocks.N.ls1/ls2.gamma, a 37×37 pos_embed grid); "
              "converted by timm's checkpoint filter (mask_token dropped)",
    "mae": "MAE pretraining: timm's keys plus mask_token and decoder_*: the decoder and mask_token are dropped",
    "google-npz": "Google's JAX ViTs (.npz with embedding/kernel, Transformer/encoderblock_N/...), read by timm's "
                  "model.load_pretrained",
    "unknown": "none of the above (no pos_embed and no blocks.N.* keys)",
}
FILE_KINDS = {"torch": "torch file", "safetensors": "safetensors file", "npz": "NumPy .npz file"}
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")  # the weights file of a timm Hugging Face folder, preferred first
HUB_PREFIX = "hf-hub:"
_HEAD_PREFIXES = ("head.", "head_dist.", "fc_norm.")
_CLASS_HEADS = ("head.", "head_dist.")  # the classification heads, absent from a model built with num_classes=0
_TORCH_STATE_KEYS = ("model", "state_dict", "model_state")  # where checkpoints keep their state dict
_NPZ_BLOCK = re.compile(r"Transformer/encoderblock_(\d+)/")
_NPZ_KERNELS = ("embedding/kernel", "opt/target/embedding/kernel", "params/embedding/kernel",
                "params/img/embedding/kernel")  # the patch kernel under each prefix timm's npz loader knows


@dataclass
class Weights:
    """Weights read from ``model.pretrained``: ``state`` in the model's key names (after
    ``inspect_weights``: fitted to it), what they looked like, and what does not fit."""

    state: dict[str, torch.Tensor]
    layout: str  # a key of LAYOUTS
    file: Path  # the file the tensors came from
    origin: str  # what kind of file, found how: "torch file", "safetensors file of a timm Hugging Face folder", ...
    tensors: int  # tensors read from the file (its state dict, or the DINO teacher's, before conversion)
    parameters: int  # their elements
    notes: list[str] = field(default_factory=list)  # what was dropped, kept or resampled on the way
    problems: list[str] = field(default_factory=list)  # missing / unexpected / mis-shaped keys, empty when it fits
    grid: int | None = None  # side of the file's square position-embedding grid (before any resampling), when known

    def input_size(self, stride: int) -> int | None:
        """The input side the weights were trained at: their position grid × the model's token
        stride (224 for a 14×14 grid of 16-pixel patches); None when the grid is not known."""
        return None if self.grid is None else self.grid * stride

    def describe(self) -> str:
        """One line: the layout and where it came from."""
        return f"{self.layout} ({self.origin}: {self.file})"


def inspect_weights(model: nn.Module, spec: str | os.PathLike, allow_download: bool = False) -> Weights:
    """Read ``spec`` (file, folder or hf-hub:ORG/NAME), convert it to ``model``'s keys and check
    the fit (``Weights.problems``). Changes nothing in ``model``.

    Raises PretrainedWeightsError when nothing can be read (missing, unreadable, not in the cache).
    """
    file, found_in, notes = resolve(spec, model, allow_download)
    kind = _file_kind(file)
    origin = FILE_KINDS[kind] + (f" of {found_in}" if found_in else "")
    weights = _read_npz(file, origin, model) if kind == "npz" else _read_state(file, kind, origin, model)
    weights.notes[:0] = notes
    if not weights.problems:
        _fit(weights, model)
    return weights


def load_pretrained(model: nn.Module, spec: str | os.PathLike, allow_download: bool = False) -> Weights:
    """Load backbone weights from ``spec`` into ``model`` (see ``inspect_weights``).

    Raises PretrainedWeightsError naming the file, the layout it looked like and the keys that
    do not fit; ``model`` is unchanged then.
    """
    weights = inspect_weights(model, spec, allow_download)
    if weights.problems:
        raise PretrainedWeightsError(
            "; ".join([f"model.pretrained: {weights.file} (looks like: {weights.layout}, {weights.origin}) does not fit "
                       f"{type(model).__name__}", *weights.problems]))
    model.load_state_dict(weights.state, strict=False)
    return weights


# --- finding the file ------------------------------------------------------------------------------------------------

def resolve(spec: str | os.PathLike, model: nn.Module, allow_download: bool = False) -> tuple[Path, str, list[str]]:
    """The weights file ``spec`` names, the folder it was found in ("" for a file named
    directly), and notes (a folder's config.json naming another architecture)."""
    text = str(spec)
    if text.startswith(HUB_PREFIX):
        file, notes = _folder_file(hub_snapshot(text.removeprefix(HUB_PREFIX), allow_download), model)
        return file, f"{text} in the local Hugging Face cache", notes
    path = Path(spec)
    if path.is_dir():
        file, notes = _folder_file(path, model)
        return file, "a timm Hugging Face folder", notes
    if not path.is_file():
        raise PretrainedWeightsError(f"model.pretrained: weights file {path} not found (nothing is downloaded)")
    return path, "", []


def hub_cache() -> Path:
    """The local Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub (default ~/.cache/huggingface/hub), read when called."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("HF_HOME") or cache_home / "huggingface").expanduser() / "hub"


def hub_snapshot(repo_id: str, allow_download: bool = False) -> Path:
    """The cached snapshot of ``repo_id`` ("ORG/NAME"): ``models--ORG--NAME/snapshots/HASH``
    with HASH read from ``refs/main``. Downloaded (config.json and the weights file only) when
    it is not there and ``allow_download``; otherwise PretrainedWeightsError saying where it looked."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PretrainedWeightsError(f"model.pretrained: {HUB_PREFIX}{repo_id} is not {HUB_PREFIX}ORG/NAME "
                                     f"(e.g. {HUB_PREFIX}timm/vit_small_patch16_224.augreg_in21k)")
    cache = hub_cache()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    snapshot = repo / "snapshots" / ref.read_text().strip() if ref.is_file() else None
    if snapshot is not None and snapshot.is_dir():
        return snapshot
    if allow_download:
        return _download(repo_id, cache)
    found = "no such folder" if not repo.is_dir() else f"{ref} is missing or names no snapshot folder"
    raise PretrainedWeightsError(
        f"model.pretrained: {HUB_PREFIX}{repo_id} is not in the local Hugging Face cache: looked for {ref} and the "
        f"snapshot it names under {repo} ({found}; cache from HF_HUB_CACHE, HF_HOME or ~/.cache/huggingface). Nothing "
        f"is downloaded unless model.allow_download=true; or set model.pretrained to a local file or folder")


def _download(repo_id: str, cache: Path) -> Path:
    """``repo_id``'s config.json and weights file fetched into ``cache`` by huggingface_hub."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=["config.json", *FOLDER_FILES]))
    except Exception as error:  # the hub client raises many types (offline, unknown repo, HTTP errors)
        raise PretrainedWeightsError(f"model.pretrained: downloading {HUB_PREFIX}{repo_id} into {cache} failed "
                                     f"({error})") from error


def _folder_file(folder: Path, model: nn.Module) -> tuple[Path, list[str]]:
    """The weights file of a timm Hugging Face folder (config.json + model.safetensors or
    pytorch_model.bin), and a note when config.json names another architecture than ``model``'s."""
    config_file = folder / "config.json"
    weights_file = next((folder / name for name in FOLDER_FILES if (folder / name).is_file()), None)
    if not config_file.is_file() or weights_file is None:
        present = sorted(p.name for p in folder.iterdir())[:12]
        raise PretrainedWeightsError(f"model.pretrained: {folder} is a folder but not a timm Hugging Face folder "
                                     f"(expected config.json and {' or '.join(FOLDER_FILES)}; found {present})")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PretrainedWeightsError(f"model.pretrained: {config_file} is not JSON ({error})") from error
    named = config.get("architecture") if isinstance(config, dict) else None
    own = getattr(model, "pretrained_cfg", {}).get("architecture")
    notes = [f"{config_file} names architecture {named}, the model is {own}"] if named and own and named != own else []
    return weights_file, notes


def _file_kind(path: Path) -> str:
    """safetensors, npz or torch, from the file's first bytes: a safetensors header (8-byte
    length, then JSON), a zip of .npy arrays, else a torch file (zip or legacy pickle)."""
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if names and all(name.endswith(".npy") for name in names):
            return "npz"
    return "torch"


# --- reading and recognising ------------------------------------------------------------------------------------------

def _read_state(file: Path, kind: str, origin: str, model: nn.Module) -> Weights:
    """A torch or safetensors file: its state dict found, recognised and converted to timm's keys."""
    raw = _load_safetensors(file) if kind == "safetensors" else _load_torch(file)
    state, layout, notes = _select_state(raw, file)
    tensors, parameters = len(state), sum(v.numel() for v in state.values())
    layout = layout or _layout_of(state)
    posemb = state.get("pos_embed")
    grid = _grid_side(posemb.shape[1], int(getattr(model, "num_prefix_tokens", 1))) if posemb is not None \
        and posemb.ndim == 3 else None
    state, converted = _CONVERTERS.get(layout, _unchanged)(state, model)
    return Weights(state, layout, file, origin, tensors, parameters, notes + converted, grid=grid)


def _load_safetensors(file: Path) -> dict:
    """Every tensor of a .safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except SafetensorError as error:
        raise PretrainedWeightsError(f"model.pretrained: cannot read {file} as a safetensors file ({error})") from error


def _load_torch(file: Path) -> object:
    """A torch file, read with weights_only=True; argparse.Namespace is allowed (DINO and MAE
    checkpoints keep their arguments as one), nothing else that is not plain data."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise PretrainedWeightsError(f"model.pretrained: cannot read {file} as a torch checkpoint: "
                                     f"{why_not_loaded(file, error)}") from None


def _select_state(raw: object, file: Path) -> tuple[dict[str, torch.Tensor], str | None, list[str]]:
    """The state dict inside a checkpoint, with ``module.`` stripped: a DINO training
    checkpoint's teacher backbone (layout dino-training), else the dict under model /
    state_dict / model_state (repeatedly), else the top level (layout left to the keys)."""
    layout, notes = None, []
    if isinstance(raw, dict) and isinstance(raw.get("teacher"), dict) and "student" in raw:
        raw, layout, notes = _dino_teacher(raw["teacher"])
    while isinstance(raw, dict) and any(isinstance(raw.get(key), dict) for key in _TORCH_STATE_KEYS):
        raw = next(raw[key] for key in _TORCH_STATE_KEYS if isinstance(raw.get(key), dict))
    if not isinstance(raw, dict) or not raw:
        raise PretrainedWeightsError(f"model.pretrained: {file} holds no state dict (expected a dict of tensors, flat "
                                     f"or under {' / '.join(_TORCH_STATE_KEYS)}, or a DINO checkpoint's teacher)")
    others = [f"{k} ({type(v).__name__})" for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise PretrainedWeightsError(f"model.pretrained: {file}: the state dict holds entries that are not tensors: "
                                     f"{others[:8]}")
    return {k.removeprefix("module."): v for k, v in raw.items()}, layout, notes


def _dino_teacher(teacher: dict) -> tuple[dict, str, list[str]]:
    """A DINO training checkpoint's teacher: backbone.* (``module.`` stripped) with the prefix
    removed; the DINO projection head.* dropped; any other key kept (to be reported)."""
    state, dropped = {}, 0
    for key, value in teacher.items():
        key = key.removeprefix("module.")
        if key.startswith("head."):
            dropped += 1
        else:
            state[key.removeprefix("backbone.")] = value
    return state, "dino-training", [f"read the teacher's backbone; dropped the DINO head ({dropped} tensors)"]


def _layout_of(state: dict[str, torch.Tensor]) -> str:
    """The layout of a flat state dict, from its keys (see LAYOUTS)."""
    if not ("pos_embed" in state or any(k.startswith("blocks.") for k in state)):
        return "unknown"
    if "mask_token" in state:
        return "mae" if any(k.startswith("decoder_") for k in state) else "dinov2"
    if "dist_token" in state:
        return "deit-distilled"
    return "timm" if any(k.startswith("head.") for k in state) else "dino"


def _unchanged(state: dict, model: nn.Module) -> tuple[dict, list[str]]:
    """timm's keys already (timm, dino, dino-training, unknown): nothing to convert."""
    return state, []


def _from_mae(state: dict, model: nn.Module) -> tuple[dict, list[str]]:
    """MAE pretraining: the encoder, without mask_token and the decoder_* keys."""
    kept = {k: v for k, v in state.items() if k != "mask_token" and not k.startswith("decoder_")}
    return kept, [f"dropped the MAE decoder and mask_token ({len(state) - len(kept)} tensors)"]


def _from_distilled(state: dict, model: nn.Module) -> tuple[dict, list[str]]:
    """A distilled DeiT: as it is for a distilled model; for a model without a distillation
    token, dist_token, head_dist.* and the token's position (pos_embed row 1) are dropped."""
    if "dist_token" in model.state_dict():
        return state, []
    kept = {k: v for k, v in state.items() if k != "dist_token" and not k.startswith("head_dist.")}
    if "pos_embed" in kept:
        kept["pos_embed"] = torch.cat([kept["pos_embed"][:, :1], kept["pos_embed"][:, 2:]], dim=1)
    return kept, [f"dropped dist_token, head_dist.* and the distillation token's position embedding "
                  f"({type(model).__name__} has no distillation token)"]


def _from_dinov2(state: dict, model: nn.Module) -> tuple[dict, list[str]]:
    """DINOv2 through timm's checkpoint filter (drops mask_token, moves register tokens, renames
    SwiGLU w12/w3, resamples the pos_embed grid). The patch kernel is kept as written, so one of
    another size is reported as mis-shaped rather than resampled; mask_token is kept for a
    model that has one."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    given = dict(state)
    kernel = given.pop("patch_embed.proj.weight", None)
    converted = checkpoint_filter_fn(given, model)
    if kernel is not None:
        converted["patch_embed.proj.weight"] = kernel
    notes = ["converted by timm's checkpoint filter (DINOv2)"]
    if "mask_token" in model.state_dict():
        converted["mask_token"] = state["mask_token"]
    else:
        notes.append("dropped mask_token (the model has none)")
    if "pos_embed" in state and converted["pos_embed"].shape != state["pos_embed"].shape:
        notes.append(f"pos_embed resampled {tuple(state['pos_embed'].shape)} → {tuple(converted['pos_embed'].shape)}")
    return converted, notes


_CONVERTERS = {"mae": _from_mae, "deit-distilled": _from_distilled, "dinov2": _from_dinov2}


def _read_npz(file: Path, origin: str, model: nn.Module) -> Weights:
    """A Google .npz ViT, loaded by timm's ``model.load_pretrained`` into a copy of ``model``
    whose state becomes ``Weights.state``. Blocks beyond the model's depth and a patch kernel of
    another size are reported (timm would skip or resample them), as are the keys timm misses."""
    import numpy as np

    with np.load(file, allow_pickle=False) as arrays:
        shapes = {key: arrays[key].shape for key in arrays.files}
    weights = Weights({}, "google-npz", file, origin, len(shapes), sum(math.prod(s) for s in shapes.values()))
    weights.problems = _npz_problems(shapes, model)
    if weights.problems:
        return weights
    loaded = copy.deepcopy(model)
    try:
        loaded.load_pretrained(str(file))
    except KeyError as error:
        weights.problems = [f"missing keys (1): [{error.args[0]!r}] (and perhaps more: timm stops at the first)"]
    except (RuntimeError, ValueError) as error:
        width = shapes[next(k for k in _NPZ_KERNELS if k in shapes)][-1]
        weights.problems = [f"shape mismatches: {error} (timm's npz loader; the file's width is {width}, the model's "
                            f"{getattr(model, 'embed_dim', '?')})"]
    else:
        weights.state = loaded.state_dict()
        posemb = next((shape for key, shape in shapes.items() if key.endswith("posembed_input/pos_embedding")), None)
        if posemb is not None and len(posemb) == 3:
            weights.grid = _grid_side(posemb[1], int(getattr(model, "num_prefix_tokens", 1)))
        head = next((shape for key, shape in shapes.items() if key.endswith("head/bias")), None)
        if head is not None and tuple(head) != tuple(model.state_dict().get("head.bias", torch.empty(0)).shape):
            weights.notes.append(f"kept the model's own head (the file's has {head[-1]} classes)")
    return weights


def _npz_problems(shapes: dict[str, tuple], model: nn.Module) -> list[str]:
    """What timm's npz loader would not report: no Google ViT keys, blocks beyond the model's
    depth (skipped), a patch kernel (H, W, in, out) of another size or width (resampled)."""
    kernel = next((key for key in _NPZ_KERNELS if key in shapes), None)
    if kernel is None:
        return [f"no embedding/kernel: not a Google ViT .npz (first keys: {sorted(shapes)[:8]})"]
    problems = []
    depth = len(getattr(model, "blocks", []))
    extra = sorted(k for k in shapes if (m := _NPZ_BLOCK.search(k)) and int(m.group(1)) >= depth)
    if extra:
        problems.append(f"unexpected keys ({len(extra)}): {extra[:8]} (the model has {depth} blocks)")
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    if isinstance(proj, nn.Conv2d) and len(shapes[kernel]) == 4:
        h, w, channels, width = shapes[kernel]
        if (width, channels, h, w) != tuple(proj.weight.shape):
            problems.append(f"shape mismatches: ['{kernel} {shapes[kernel]} (H, W, in, out) vs "
                            f"{tuple(proj.weight.shape)} (out, in, H, W)']")
    return problems


# --- fitting to the model --------------------------------------------------------------------------------------------

def _fit(weights: Weights, model: nn.Module) -> None:
    """Fit ``weights.state`` to ``model``: a head of another shape is left out (the model keeps
    its own), as is the file's head for a model without one (num_classes=0), pos_embed of another
    grid (same width) is resampled; what still does not fit goes to ``weights.problems`` (missing
    keys other than the head's, unexpected keys, mis-shaped keys)."""
    state, own = dict(weights.state), model.state_dict()
    heads = [k for k in state if k.startswith(_HEAD_PREFIXES) and k in own and state[k].shape != own[k].shape]
    for key in heads:
        del state[key]
    if heads:
        weights.notes.append(f"kept the model's own head ({', '.join(heads)} of the file have another shape)")
    if not any(k.startswith(_CLASS_HEADS) for k in own):
        headless = [k for k in state if k.startswith(_CLASS_HEADS)]
        for key in headless:
            del state[key]
        if headless:
            weights.notes.append(f"dropped the file's head ({', '.join(headless)}): the model has none")
    posemb, target = state.get("pos_embed"), own.get("pos_embed")
    if posemb is not None and target is not None and posemb.ndim == target.ndim == 3 \
            and posemb.shape[1] != target.shape[1] and posemb.shape[2] == target.shape[2]:
        weights.notes.append(f"pos_embed resampled {tuple(posemb.shape)} → {tuple(target.shape)}")
        state["pos_embed"] = _resample_pos_embed(model, posemb, target)
    missing = [k for k in own if k not in state and not k.startswith(_HEAD_PREFIXES)]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state if k in own and state[k].shape != own[k].shape]
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
        if keys:
            weights.problems.append(f"{label} ({len(keys)}): {keys[:8]}")
    if wrong:
        weights.problems.append(f"shape mismatches: {wrong[:8]}")
    weights.state = state


def _grid_side(tokens: int, prefix: int) -> int | None:
    """The side of the square grid of ``tokens`` position embeddings, ``prefix`` of them (or
    0-2, as files without or with class and distillation tokens have) not on the grid."""
    for skip in dict.fromkeys((prefix, 0, 1, 2)):
        side = math.isqrt(max(tokens - skip, 0))
        if side and side * side == tokens - skip:
            return side
    return None


def _resample_pos_embed(model: nn.Module, posemb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``posemb`` (prefix tokens + a square grid) resampled to ``target``'s grid."""
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    old_grid = int(math.isqrt(posemb.shape[1] - prefix))
    new_grid = int(math.isqrt(target.shape[1] - prefix))
    return resample_abs_pos_embed(
        posemb, new_size=[new_grid, new_grid], old_size=[old_grid, old_grid], num_prefix_tokens=prefix
    )
