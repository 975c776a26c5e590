"""Every setting of wsss as pydantic models, loaded from YAML and overridable from the CLI.

The same models are the Prefect flows' parameters. ``load_config(path, overrides)`` reads a
YAML file, applies ``key.path=value`` overrides (values parsed as YAML), and validates;
any problem raises ConfigError naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A configuration file or override that does not validate."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthConfig(_Section):
    """The built-in demo data set generator."""

    num_images: int = Field(600, ge=10, description="images to generate")
    image_size: int = Field(128, ge=32, le=1024, description="side of the square images, pixels")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of images in splits/val.txt")
    seed: int = Field(0, description="same seed, same files")


class DataConfig(_Section):
    """Where the images and tags come from."""

    format: Literal["synth", "folder", "voc"] = Field(
        "synth", description="synth: generate the demo set into root; folder: plain folder; voc: VOC2012 layout"
    )
    root: Path = Field(Path("runs/demo/data"), description="data set folder (VOC: the VOC2012 folder)")
    train_split: str | None = Field("train", description="split used for training / labelling (None: all)")
    val_split: str | None = Field("val", description="split used for validation and evaluation")
    saliency_dir: Path | None = Field(None, description="folder of saliency maps (<id>.png), optional")
    voc_masks: Literal["auto", "SegmentationClassAug", "SegmentationClass"] = Field(
        "auto", description="VOC mask folder; auto prefers SegmentationClassAug"
    )
    voc_tags: Literal["auto", "xml", "mask"] = Field(
        "auto", description="VOC tags from Annotations/*.xml or from masks; auto: XML when present"
    )
    synth: SynthConfig = SynthConfig()


class ModelConfig(_Section):
    """The classification ViT (any timm vit_* / deit_* / hybrid), created with random or local weights."""

    name: str = Field("vit_tiny_patch16_224", description="timm model name")
    img_size: int = Field(128, ge=16, description="training input size (dynamic size is enabled)")
    patch_size: int | None = Field(8, ge=1, description="patch size override (None: the model's)")
    embed_dim: int | None = Field(None, ge=8, description="width override (None: the model's)")
    depth: int | None = Field(6, ge=1, description="number of blocks override (None: the model's)")
    num_heads: int | None = Field(None, ge=1, description="heads override (None: the model's)")
    pretrained: Path | None = Field(None, description="local weights file (.pth/.safetensors); nothing is downloaded")
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)


class CamConfig(_Section):
    """Class activation maps from transformer attention."""

    method: Literal["getam", "attention", "rollout", "relevance", "gradcam"] = "getam"
    start_block: int | None = Field(None, ge=0, description="first block used (None: depth // 2)")
    batch_size: int = Field(16, ge=1)


class PamrConfig(_Section):
    enabled: bool = True
    iterations: int = Field(10, ge=0)
    dilations: list[int] = Field([1, 2, 4, 8, 12, 24], min_length=1)

    @field_validator("dilations")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(d < 1 for d in value):
            raise ValueError(f"dilations must be positive integers, got {value}")
        return value


class SaliencyConfig(_Section):
    source: Literal["tokencut", "folder", "none"] = Field(
        "tokencut", description="tokencut: built in; folder: data.saliency_dir; none: background from alpha only"
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="folder maps are salient where > threshold")
    missing: Literal["error", "none"] = Field("error", description="a missing saliency file: error, or no saliency")
    tokencut_tau: float = Field(0.2, ge=-1.0, le=1.0)
    tokencut_eps: float = Field(1e-5, gt=0.0)
    tokencut_objects: int = Field(1, ge=1, description="MaskCut-style repeats")


class LabelRuleConfig(_Section):
    alpha: float = Field(32.0, gt=0.0, description="background power: bg = (1 - max_c M_c)^alpha")
    tau: float = Field(0.9, ge=0.0, le=1.0, description="completion quantile outside saliency")
    conflict: bool = Field(True, description="pixels claimed by two or more classes become ignore (255)")
    opening: int = Field(10, ge=0, description="opening kernel size of the foreground mask (0: off)")


class CrfConfig(_Section):
    enabled: bool = False
    iterations: int = Field(10, ge=1, le=100)
    gaussian_sxy: float = Field(3.0, gt=0.0)
    gaussian_compat: float = Field(3.0, ge=0.0)
    bilateral_sxy: float = Field(83.0, gt=0.0)
    bilateral_srgb: float = Field(5.0, gt=0.0)
    bilateral_compat: float = Field(4.0, ge=0.0)
    workers: int = Field(2, ge=1, description="processes for the CRF pool")


class RefineConfig(_Section):
    pamr: PamrConfig = PamrConfig()
    saliency: SaliencyConfig = SaliencyConfig()
    label: LabelRuleConfig = LabelRuleConfig()
    crf: CrfConfig = CrfConfig()


class ClassifierTrainConfig(_Section):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_epochs: int = Field(2, ge=0)
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
    seed: int = 0


class SegmenterTrainConfig(_Section):
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-2, gt=0.0)
    head_lr_scale: float = Field(10.0, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    poly_power: float = Field(0.9, gt=0.0)
    grad_accum: int = Field(1, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    seed: int = 0


class TrainConfig(_Section):
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    classifier: ClassifierTrainConfig = ClassifierTrainConfig()
    segmenter: SegmenterTrainConfig = SegmenterTrainConfig()


class FlowConfig(_Section):
    shard_size: int = Field(64, ge=1, description="images per mapped task")
    task_runner: Literal["threads", "processes", "dask"] = "threads"
    max_workers: int = Field(2, ge=1)
    dask_address: str | None = Field(None, description="existing Dask scheduler address; None: a local cluster")


class Config(_Section):
    """The whole configuration; each section is documented by its fields."""

    run_dir: Path = Field(Path("runs/demo"), description="where checkpoints, labels and reports go")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    cam: CamConfig = CamConfig()
    refine: RefineConfig = RefineConfig()
    train: TrainConfig = TrainConfig()
    flow: FlowConfig = FlowConfig()


def _format_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (value {item['input']!r}); check the spelling")
            continue
        allowed = item["msg"]
        if item["type"] == "literal_error":
            allowed = "expected one of " + item["ctx"]["expected"]
        lines.append(f"  {key} = {item['input']!r}: {allowed}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b.c=value' → (['a', 'b', 'c'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. refine.pamr.iterations=5")
    key, raw = text.split("=", 1)
    parts = [part for part in key.strip().split(".") if part]
    if not parts:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({error})") from error
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of the nested dict ``data`` with each 'key.path=value' applied."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {text!r}: {prefix} is a value ({child!r}), not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when path is None), apply overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from error
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(loaded).__name__}")
        data = loaded
    if overrides:
        data = apply_overrides(data, overrides)
        source += " + overrides"
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_error(error, source)) from None


def config_to_yaml(config: Config) -> str:
    """The effective config as YAML (paths as strings), loadable again by load_config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
