"""Settings derived from a data set and a model by stated rules: what ``wsss init`` writes.

The starting point is the demo's measured recipe (``configs/demo.yaml``, beside the package).
Every setting that depends on the images' size, their count or the model is then derived
from the data set's facts (``wsss.data.survey``) and the model's token stride and input size,
each with the rule that gave it (``Derived.reason``):

- the model: the demo's small ViT trained from scratch (``model.img_size`` from the images'
  median longer side), or a timm model at its weights' own input size (their position grid ×
  patch) or timm's default input size;
- maps, prediction and training crops from the token grid: ``cam.scales`` so that the median
  image's longer side spans at least MAP_TOKENS tokens, ``predict.scales`` PREDICT_TOKENS,
  ``train.segmenter.scale_range`` around the prediction scales, the crop at the model's input
  size, ``refine.label.opening`` five eighths of a token;
- lengths from the image count: classifier epochs for a fixed number of optimizer steps (the
  plateau stop ends them earlier), segmenter steps for a fixed number of passes over the images.

The rules reproduce the demo's own values on the demo data (tests/test_recipe.py checks it). Used by ``wsss init`` (``wsss.cli.init_command``)..
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from wsss.config import MAX_SCALE, DataConfig

if TYPE_CHECKING:
    from wsss.data.survey import DataSurvey

__all__ = ["DEMO_CONFIG", "Derived", "ModelChoice", "apply_derived", "choose_model", "demo_template", "derive_settings",
           "recipe_yaml"]

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"  # beside the package

MAP_TOKENS = 20  # the demo's maps: 128 px × 1.25 / 8 = 20 tokens on the longer side
PREDICT_TOKENS = (24, 32)  # the demo's prediction: 128 px × 1.5 and × 2.0 / 8
OPENING_PER_TOKEN = 5 / 8  # the paper's 10-px opening for 16-px patches; the demo's 5 for its stride 8
SCRATCH_STEPS = 4140  # the demo's classifier: at most 60 epochs × 69 steps (1,105 images, batches of 16): the
# plateau stop ends it (19-29 epochs on the demo's two data sets); harder data learns longer (issue 31's busy member)
FINETUNE_STEPS = 1000  # a pretrained classifier: at most this many steps (the plateau stop may end it sooner)
SEGMENTER_PASSES = 5  # the demo's segmenter: 700 steps × 8 crops ≈ 5 passes over 1,105 images
SCRATCH_SIDES = (64, 256)  # the scratch ViT's input side: the images' median longer side, within these
FINETUNE_LR = 1e-4  # the VOC config's classifier learning rate for pretrained DeiT-S


@dataclass
class Derived:
    """One derived setting: ``key`` a dotted path (``cam.scales``), its value, and why."""

    key: str
    value: Any
    reason: str


@dataclass
class ModelChoice:
    """The model the settings are derived for.

    name: a timm model name, or None for the demo's small ViT (trained from scratch).
    weights: model.pretrained (a file, folder or hf-hub:ORG/NAME), or None.
    stride: input pixels per token along a side.
    input_size: the side the model takes by default (the weights' own, else timm's default).
    input_reason: where input_size comes from.
    """

    name: str | None
    weights: str | None
    stride: int
    input_size: int | None
    input_reason: str


def choose_model(template: dict, name: str | None, weights: str | None,
                 allow_download: bool = False) -> ModelChoice:
    """The model of the recipe: the demo's small ViT (``template``'s model section) when neither
    ``name`` nor ``weights`` is given; else the timm model ``name`` (or the one a Hugging Face
    folder or ``hf-hub:timm/NAME`` names) at its weights' own input size. ValueError when the
    model cannot be named or the weights do not fit it (PretrainedWeightsError says which keys)."""
    if name is None and weights is None:
        stem = template["model"].get("conv_stem") or []
        stride = 2 ** len(stem) if stem else int(template["model"]["patch_size"])
        return ModelChoice(None, None, stride, None, "")
    name = name or _named_by(weights)
    from wsss.config import ModelConfig
    from wsss.models.classifier import create_classifier
    from wsss.models.vit_geometry import model_stride
    from wsss.models.weights import PretrainedWeightsError, inspect_weights

    section = ModelConfig(name=name, patch_size=None, depth=None, conv_stem=None)
    model = create_classifier(section, num_classes=1)
    stride = model_stride(model)
    default = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    if weights is None:
        return ModelChoice(name, None, stride, default, f"timm's default input size of {name}")
    found = inspect_weights(model, weights, allow_download=allow_download)
    if found.problems:
        raise PretrainedWeightsError(f"--weights {weights} ({found.describe()}) does not fit {name}: "
                                     + "; ".join(found.problems) + " (wsss weights inspect says more)")
    own = found.input_size(stride)
    if own is None:
        return ModelChoice(name, str(weights), stride, default,
                           f"timm's default input size of {name} (the weights hold no position grid)")
    return ModelChoice(name, str(weights), stride, own,
                       f"the weights' own input size: their {found.grid}×{found.grid} position grid × {stride}-px "
                       "patches")


def _named_by(weights: str) -> str:
    """The timm model a weights spec names: hf-hub:timm/NAME[.TAG] → NAME, a timm Hugging Face
    folder → its config.json's architecture; ValueError for a file (give --model)."""
    import json

    text = str(weights)
    if text.startswith("hf-hub:"):
        return text.removeprefix("hf-hub:").split("/")[-1].split(".")[0]
    config = Path(text) / "config.json"
    if config.is_file():
        try:
            named = json.loads(config.read_text(encoding="utf-8")).get("architecture")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            named = None
        if named:
            return str(named).split(".")[0]
    raise ValueError(f"--weights {weights}: which timm model are these weights for? give --model NAME "
                     "(e.g. --model deit_small_patch16_224)")


def demo_template() -> dict:
    """The demo's settings (configs/demo.yaml) as a nested dict, without what only the demo has
    (its generated data set, its run folder, its report notes)."""
    if not DEMO_CONFIG.is_file():
        raise ValueError(f"the demo's settings {DEMO_CONFIG} are not beside this wsss installation (it was not "
                         "installed from a checkout): wsss init starts from them")
    template = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    template.get("report", {}).pop("notes", None)
    return {**template, "run_dir": None, "data": {}}  # set by derive_settings, in this place


def _scale(tokens: int, stride: int, side: int, max_side: int | None) -> float:
    """The input scale (a multiple of 0.25, at least 1) at which ``side`` pixels span ``tokens``
    tokens of ``stride`` pixels, kept within MAX_SCALE and data.max_side."""
    scale = max(1.0, round(tokens * stride / side * 4) / 4)
    ceiling = MAX_SCALE if max_side is None else min(MAX_SCALE, max(1.0, math.floor(max_side / side * 4) / 4))
    return min(scale, ceiling)


def derive_settings(survey: DataSurvey, model: ModelChoice, run_dir: str, template: dict) -> list[Derived]:
    """Every setting ``wsss init`` derives, in the order of the YAML (see the module docstring);
    ``template``: the settings they go into (``demo_template``), whose batch sizes the lengths use."""
    side, stride = survey.long_side, model.stride
    out = [Derived("run_dir", run_dir, "outputs of the pipeline (classifier, pseudo-labels, segmenter, reports)")]
    out += _data_settings(survey.data)
    out += _model_settings(survey, model)
    img_size = next(d.value for d in out if d.key == "model.img_size")
    max_side = survey.data.max_side
    map_scale = _scale(MAP_TOKENS, stride, side, max_side)
    out.append(Derived("cam.scales", [map_scale],
                       f"the median image's longer side ({side} px) spans {side * map_scale / stride:.0f} tokens of "
                       f"{stride} px at this scale: at least {MAP_TOKENS}, the demo's map grid (scale at least 1)"))
    if model.name is not None:
        out.append(Derived("cam.start_block", None, "GETAM over the second half of the blocks (the paper's L/2)"))
    opening = max(1, round(OPENING_PER_TOKEN * stride))
    out.append(Derived("refine.label.opening", opening,
                       f"five eighths of a {stride}-px token (the paper's 10 px for 16-px patches, the demo's 5 for "
                       "its 8-px stem)"))
    predict = sorted(dict.fromkeys(_scale(t, stride, side, max_side) for t in PREDICT_TOKENS))
    out.append(Derived("predict.scales", predict,
                       f"the median longer side spans {' and '.join(str(t) for t in PREDICT_TOKENS)} tokens "
                       "(the demo's prediction grids; scales at least 1)"))
    low = round(min(predict) * 2 / 3, 2)
    high = round(max(predict) * (4 / 3 if len(predict) == 1 else 1), 2)
    out.append(Derived("train.segmenter.scale_range", [low, high],
                       "crops at the scales it predicts at: the prediction scales, widened by a third below"
                       f"{' and above' if len(predict) == 1 else ''} (the demo's [1.0, 2.0] for [1.5, 2.0])"))
    out.append(Derived("train.segmenter.crop_size", img_size, "the classifier's input size"))
    train = template["train"]
    out += _lengths(survey, model, int(train["classifier"]["batch_size"]), int(train["segmenter"]["batch_size"]))
    if survey.saliency:
        out.append(Derived("refine.saliency.source", "folder", "the data set has saliency maps"))
    if survey.val_images is not None and survey.val_masks:
        out.append(Derived("report.stage_images", min(80, survey.val_images),
                           "the stage table on at most 80 validation images (evenly spaced)"))
    return out


def _data_settings(data: DataConfig) -> list[Derived]:
    out = [Derived("data.format", data.format, "read from the folder's layout" if data.format != "coco"
                   else "an instances JSON was given"),
           Derived("data.root", str(Path(data.root).resolve()), "the data set folder")]
    if data.format == "coco":
        out.append(Derived("data.coco_annotations", str(Path(data.coco_annotations).resolve()),
                           "the training split's instances JSON"))
        if data.coco_val_annotations is not None:
            out.append(Derived("data.coco_val_annotations", str(Path(data.coco_val_annotations).resolve()),
                               "the validation split's instances JSON"))
            out.append(Derived("data.coco_val_root", str(Path(data.coco_val_root or data.root).resolve()),
                               "the folder of the validation split's images"))
    out.append(Derived("data.train_split", data.train_split, "the split the classifier trains on and that is labelled"))
    out.append(Derived("data.val_split", data.val_split,
                       "held out: the classifier's validation (its plateau stop and gate) and the scores"
                       if data.val_split is not None else
                       "no validation split: the classifier is validated on its training images"))
    return out


def _model_settings(survey: DataSurvey, model: ModelChoice) -> list[Derived]:
    if model.name is None:
        low, high = SCRATCH_SIDES
        side = min(high, max(low, round(survey.long_side / model.stride) * model.stride))
        return [Derived("model.img_size", side,
                        f"the demo's small ViT, trained from scratch at the images' median longer side "
                        f"({survey.long_side} px) rounded to its {model.stride}-px stride, within {low}-{high} px "
                        "(pretrained weights, --weights, do better on photographs)")]
    out = [Derived("model.name", model.name, "given (--model, or named by the weights)")]
    out += [Derived(f"model.{key}", None, "the timm model's own architecture")
            for key in ("patch_size", "embed_dim", "depth", "num_heads", "conv_stem")]
    out.append(Derived("model.conv_stem_extra", 0, "no conv stem"))
    out.append(Derived("model.img_size", model.input_size, model.input_reason))
    out.append(Derived("model.pretrained", model.weights,
                       "given (--weights)" if model.weights else "none: random weights (give --weights for good maps)"))
    return out


def _lengths(survey: DataSurvey, model: ModelChoice, batch: int, seg_batch: int) -> list[Derived]:
    n = survey.train_images
    if model.name is None or model.weights is None:
        steps, why = SCRATCH_STEPS, "as the demo's classifier: at most 60 epochs of 1,105 images"
        out = []
    else:
        steps, why = FINETUNE_STEPS, "fine-tuning pretrained weights"
        out = [Derived("train.classifier.lr", FINETUNE_LR, "fine-tuning pretrained weights (the VOC config's)")]
    epochs = min(100, max(3, round(steps * batch / n)))
    out.append(Derived("train.classifier.epochs", epochs,
                       f"about {steps:,} steps of {batch} images over {n:,} training images ({why}); the plateau "
                       "stop may end it sooner (at most 100 epochs, at least 3)"))
    decay = min(4, max(1, epochs // 4))
    out.append(Derived("train.classifier.decay_epochs", decay, "the demo's 4 epochs of decay, at most a quarter of them"))
    out.append(Derived("train.classifier.plateau_epochs", min(3, max(1, epochs // 5)),
                       "the demo's 3 epochs without gain, at most a fifth of them"))
    seg_steps = min(20000, max(300, round(SEGMENTER_PASSES * n / seg_batch / 50) * 50))
    out.append(Derived("train.segmenter.steps", seg_steps,
                       f"about {SEGMENTER_PASSES} passes over the {n:,} training images in batches of {seg_batch} "
                       "(the demo's 700 steps for 1,105), within 300-20,000"))
    return out


def apply_derived(template: dict, derived: list[Derived]) -> dict:
    """``template`` (a nested dict of settings) with every derived value set."""
    import copy

    config = copy.deepcopy(template)
    for item in derived:
        node = config
        *sections, last = item.key.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = item.value
    return config


def recipe_yaml(config: dict, derived: list[Derived], header: list[str]) -> str:
    """The settings as YAML: ``header`` as comments at the top, each derived setting preceded
    by a comment giving its rule, the rest as the demo has them."""
    reasons = {item.key: item.reason for item in derived}
    lines = [f"# {line}" for line in header]
    _emit(config, "", 0, reasons, lines)
    return "\n".join(lines) + "\n"


def _emit(node: dict, prefix: str, depth: int, reasons: dict, lines: list[str]) -> None:
    pad = "  " * depth
    for key, value in node.items():
        path = f"{prefix}{key}"
        if path in reasons:
            lines += textwrap.wrap(f"derived: {reasons[path]}", width=110 - len(pad), initial_indent=f"{pad}# ",
                                   subsequent_indent=f"{pad}#   ")
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            _emit(value, f"{path}.", depth + 1, reasons, lines)
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{key}: {text}")
