"""Every setting of wsss as pydantic models, loaded from YAML and overridable from the CLI.

The same models are the Prefect flows' parameters. ``load_config(path, overrides)`` reads a
YAML file, applies ``key.path=value`` overrides (values parsed as YAML), and validates;
any problem raises ConfigError naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration file or override that does not validate."""


MAX_SCALE = 4.0  # the largest input scale factor: 4× a 1024-pixel image is already 16× its pixels and tokens


def check_scales(value: list[float]) -> list[float]:
    """``value`` when every input scale factor is a number with 0 < s <= MAX_SCALE; ValueError
    saying the allowed range otherwise (NaN and infinities included)."""
    if any(not 0 < s <= MAX_SCALE for s in value):  # NaN fails every comparison
        raise ValueError(f"scales must be positive and at most {MAX_SCALE:g} (0 < scale <= {MAX_SCALE:g}), got {value}")
    return value


Scales = Annotated[list[float], AfterValidator(check_scales)]  # input scale factors, each in (0, MAX_SCALE]


def start_block_problem(start_block: int | None, depth: int, model: str = "the model") -> str | None:
    """What is wrong with ``cam.start_block`` for a ViT of ``depth`` blocks (GETAM sums blocks
    start..depth-1; a negative start counts from the end), or None when it fits."""
    if start_block is None or -depth <= start_block < depth:
        return None
    return (f"cam.start_block={start_block}: {model} has {depth} blocks; expected 0..{depth - 1}, or null for "
            f"block {depth // 2} (depth // 2)")


class _Section(BaseModel):
    # allow_inf_nan=False: a float setting must be a finite number (lr=.inf trained an epoch of NaN)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


SYNTH_CLASSES = ["disk", "square", "triangle", "star", "ring", "cross"]  # the demo generator's classes (wsss.data.synth)
# every shape wsss.data.synth can draw (data.synth.classes picks from these): the demo's six, then three more
AVAILABLE_SHAPES = (*SYNTH_CLASSES, "hexagon", "crescent", "arrow")
MAX_SYNTH_OBJECTS = 20  # data.synth.objects: the most objects one image may ask for
MAX_SYNTH_ASPECT = 8.0  # data.synth.aspect: the widest (and, as 1 / it, the tallest) width/height ratio


class SynthConfig(_Section):
    """The built-in demo data set generator."""

    num_images: int = Field(600, ge=10, description="images to generate")
    image_size: int = Field(128, ge=32, le=1024, description="side of the square images, pixels (with aspect: the "
                                                             "longer side)")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of images in splits/val.txt")
    seed: int = Field(0, description="same seed, same files")
    colour_cue: bool = Field(True, description="each class's main tone leans to its own hue band (the demo); "
                                               "false: any colour for every object, shape and texture the only cues")
    object_size: list[float] = Field([0.2, 0.6], min_length=2, max_length=2,
                                     description="an object's extent as a fraction of the image side: [smallest, largest]")
    distractors: list[int] = Field([3, 8], min_length=2, max_length=2,
                                   description="classless lines, arcs and ellipses per image: [fewest, most]")
    context: str | None = Field(
        None, description="a class always seen in one surroundings: the whole background of every image holding it is "
                          "one fixed pattern (as boats on water), so its maps, and its labels, spread over it; a data "
                          "set made to fail that way (None: no such class)")
    classes: list[str] | None = Field(
        None, description=f"the shape classes of the set, in label order: at least 2 of {list(AVAILABLE_SHAPES)}, no "
                          f"duplicates (None: the demo's six, {SYNTH_CLASSES})")
    texture: Literal["class", "any", "none"] = Field(
        "class", description="class: each class its own texture (the demo); any: each object a texture of any "
                             "available shape at random (shape and colour the only class cues); none: objects are "
                             "filled with one flat tone")
    objects: list[int] = Field([1, 3], min_length=2, max_length=2,
                               description=f"objects per image: [fewest, most], 1 <= fewest <= most <= "
                                           f"{MAX_SYNTH_OBJECTS} ([1, 3] draws 1, 2, 3 with 45 %, 33 %, 22 %; other "
                                           f"ranges uniformly)")
    aspect: list[float] | None = Field(
        None, min_length=2, max_length=2,
        description="width/height ratio of each image: [lowest, highest], drawn per image uniformly in log space; the "
                    "longer side is image_size, the shorter at least 32 pixels (None: square images)")
    background: Literal["soft", "busy", "plain"] = Field(
        "soft", description="soft: gradient, colour noise, waves, soft blobs (the demo); busy: soft plus 6 to 12 "
                            "high-contrast patches of the shapes' textures in any colours (clutter that looks like "
                            "objects, background in the masks); plain: one flat colour")

    @field_validator("object_size")
    @classmethod
    def _object_size(cls, value: list[float]) -> list[float]:
        if not 0 < value[0] <= value[1] <= 0.9:
            raise ValueError(f"object_size must be [smallest, largest] with 0 < smallest <= largest <= 0.9, got {value}")
        return value

    @field_validator("context")
    @classmethod
    def _context(cls, value: str | None) -> str | None:
        if value is not None and value not in AVAILABLE_SHAPES:
            raise ValueError(f"context must be one of the shapes {list(AVAILABLE_SHAPES)} (and of classes) or null, "
                             f"got {value!r}")
        return value

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        unknown = [name for name in value if name not in AVAILABLE_SHAPES]
        if unknown:
            raise ValueError(f"classes: unknown shape(s) {unknown}; choose from {list(AVAILABLE_SHAPES)}")
        if len(value) < 2:
            raise ValueError(f"classes must name at least 2 shapes, got {value}")
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"classes must not repeat a shape, got {value} ({', '.join(duplicates)} twice or more)")
        return value

    @field_validator("objects")
    @classmethod
    def _objects(cls, value: list[int]) -> list[int]:
        if not 1 <= value[0] <= value[1] <= MAX_SYNTH_OBJECTS:
            raise ValueError(f"objects must be [fewest, most] with 1 <= fewest <= most <= {MAX_SYNTH_OBJECTS}, "
                             f"got {value}")
        return value

    @field_validator("aspect")
    @classmethod
    def _aspect(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not 1 / MAX_SYNTH_ASPECT <= value[0] <= value[1] <= MAX_SYNTH_ASPECT:
            raise ValueError(f"aspect must be [lowest, highest] width/height ratios with {1 / MAX_SYNTH_ASPECT:g} <= "
                             f"lowest <= highest <= {MAX_SYNTH_ASPECT:g}, or null for square images; got {value}")
        return value

    @model_validator(mode="after")
    def _context_in_classes(self) -> "SynthConfig":
        classes = SYNTH_CLASSES if self.classes is None else self.classes
        if self.context is not None and self.context not in classes:
            raise ValueError(f"context={self.context!r} is not one of the set's classes {classes} "
                             f"(data.synth.classes; null: the demo's six)")
        return self

    @field_validator("distractors")
    @classmethod
    def _distractors(cls, value: list[int]) -> list[int]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError(f"distractors must be [fewest, most] with 0 <= fewest <= most, got {value}")
        return value


class DataConfig(_Section):
    """Where the images and tags come from."""

    format: Literal["synth", "folder", "voc", "coco"] = Field(
        "synth", description="synth: generate the demo set into root; folder: plain folder; voc: VOC2012 layout; "
                             "coco: a COCO instances JSON (data.coco_annotations) over the images in root"
    )
    root: Path = Field(Path("runs/demo/data"), description="data set folder (VOC: the VOC2012 folder; COCO: the "
                                                           "training split's images folder, e.g. train2017)")
    train_split: str | None = Field("train", description="split used for training / labelling (None: all)")
    val_split: str | None = Field("val", description="split used for validation and evaluation")
    saliency_dir: Path | None = Field(None, description="folder of saliency maps (<id>.png), optional")
    voc_masks: Literal["auto", "SegmentationClassAug", "SegmentationClass"] = Field(
        "auto", description="VOC mask folder; auto prefers SegmentationClassAug"
    )
    voc_tags: Literal["auto", "xml", "mask"] = Field(
        "auto", description="VOC tags from Annotations/*.xml or from masks; auto: XML when present"
    )
    coco_annotations: Path | None = Field(
        None, description="COCO: the training split's instances JSON (images in data.root); also the validation "
                          "split's when coco_val_annotations is None (required with format coco)"
    )
    coco_val_annotations: Path | None = Field(
        None, description="COCO: the instances JSON of data.val_split (None: data.coco_annotations)"
    )
    coco_val_root: Path | None = Field(
        None, description="COCO: the folder of coco_val_annotations' images, e.g. val2017 (None: data.root)"
    )
    coco_min_area: float = Field(
        0.0, ge=0.0, description="COCO: tags only from annotations whose area is at least this many pixels (crowd "
                                 "ones included); masks keep every instance"
    )
    coco_unannotated: Literal["skip", "keep"] = Field(
        "skip", description="COCO: images the JSON lists without any annotation (val2017 has 48): skip (left out of "
                            "the data set, counted by wsss data check, as WSSS image lists do) or keep (they fail "
                            "every walk: no tags)"
    )
    max_side: int | None = Field(
        1024, ge=16, description="longest image side the walks (maps, labels, predictions) compute at; larger images "
                                "are handled as data.oversize says (None: no limit)"
    )
    oversize: Literal["resize", "refuse"] = Field(
        "resize", description="an image over data.max_side: resize (computed smaller, outputs written back at the "
                              "file's size) or refuse (fails that image's manifest entry)"
    )
    synth: SynthConfig = SynthConfig()

    @model_validator(mode="after")
    def _coco_annotations(self) -> "DataConfig":
        if self.format == "coco" and self.coco_annotations is None:
            raise ValueError("data.format is coco but data.coco_annotations is not set: give the path of the "
                             "training split's instances JSON (e.g. annotations/instances_train2017.json)")
        return self


class ModelConfig(_Section):
    """The classification ViT (any timm vit_* / deit_* / hybrid), created with random or local weights."""

    name: str = Field("vit_tiny_patch16_224", description="timm model name")
    img_size: int = Field(128, ge=16, description="training input size (dynamic size is enabled)")
    patch_size: int | None = Field(8, ge=1, description="patch size override (None: the model's)")
    embed_dim: int | None = Field(None, ge=8, description="width override (None: the model's)")
    depth: int | None = Field(6, ge=1, description="number of blocks override (None: the model's)")
    num_heads: int | None = Field(None, ge=1, description="heads override (None: the model's)")
    conv_stem: list[int] | None = Field(
        None, min_length=1, max_length=5,
        description="channels of 3×3 stride-2 conv + BN + ReLU layers that replace the patch embedding (the token "
                    "stride is 2^layers; patch_size is then ignored); None: timm's patch embedding",
    )
    conv_stem_extra: int = Field(
        0, ge=0, le=3, description="extra 3×3 stride-1 conv + BN + ReLU layers after each stride-2 layer of conv_stem"
    )
    pretrained: Path | None = Field(
        None, description="pretrained weights: a local file (.pth/.pt/.bin, .safetensors, Google .npz; timm, DeiT, DINO, "
                          "DINOv2 or MAE keys), a timm Hugging Face folder (config.json + model.safetensors), or "
                          "hf-hub:ORG/NAME from the local Hugging Face cache; see `wsss weights inspect`",
    )
    allow_download: bool = Field(
        False, description="pretrained=hf-hub:ORG/NAME not in the local Hugging Face cache: download it (true) "
                           "instead of failing (false: nothing is ever downloaded)",
    )
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)


class CamConfig(_Section):
    """Class activation maps from transformer attention."""

    method: Literal["getam", "attention", "rollout", "relevance", "gradcam"] = "getam"
    start_block: int | None = Field(None, ge=0, description="first block used (None: depth // 2)")
    batch_size: int = Field(16, ge=1)
    scales: Scales = Field([1.0], min_length=1, description="offline maps: average over these input scales")
    flip: bool = Field(False, description="offline maps: also average over the left-right mirrored image")
    amp: bool = Field(
        False, description="offline maps: forward and backward under bfloat16 autocast where the device computes "
                           "bfloat16 natively (a CPU with AVX512-BF16/AMX, a GPU with bf16), float32 elsewhere; "
                           "1.6x faster on this project's CPU, maps correlate >= 0.999 with float32 (docs/results.md)")


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


class SelfTrainingConfig(_Section):
    """``refine.saliency.source: segmenter``: the foreground of a first-round segmenter, trained on
    labels made without saliency (``source: none``), is the saliency of the labels the run keeps."""

    steps: int = Field(200, ge=1, description="training steps of the first-round segmenter (two stage)")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="salient where its foreground probability > this")
    scales: Scales = Field([1.0], min_length=1, description="input scales of its prediction (averaged)")
    flip: bool = Field(True, description="also average over the mirrored image")
    crf: bool = Field(False, description="snap the foreground to image edges with a two-label dense CRF "
                                         "(refine.crf's kernels; the threshold sets its prior decision point)")


class SaliencyConfig(_Section):
    source: Literal["segmenter", "tokencut", "folder", "none"] = Field(
        "tokencut", description="segmenter: self-training (a first-round segmenter's foreground, made by the "
                                "pipeline); tokencut: built in; folder: data.saliency_dir; none: background from alpha only"
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="folder maps are salient where > threshold")
    missing: Literal["error", "none"] = Field("error", description="a missing saliency file: error, or no saliency")
    tokencut_tau: float = Field(0.2, ge=-1.0, le=1.0)
    tokencut_eps: float = Field(1e-5, gt=0.0)
    tokencut_objects: int = Field(1, ge=1, description="MaskCut-style repeats")
    backbone: ModelConfig | None = Field(
        None, description="tokencut on the keys of its own ViT (e.g. a self-supervised DINO backbone), a `model`-style "
                          "section built without a head, its `pretrained` weights in any layout; None: the "
                          "classifier's own keys. Its defaults are the demo's (patch_size 8, depth 6, img_size 128): "
                          "for a released backbone set patch_size: null, depth: null (timm's architecture) and "
                          "img_size to the weights' own (224 for DINO)",
    )
    self_training: SelfTrainingConfig = SelfTrainingConfig()


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
    overlap: Literal["auto"] | bool = Field(
        "auto", description="with a pool (workers > 1): the pool refines one batch's labels while the next batch's "
                            "maps are computed (the same labels either way); auto: when the maps are computed on a "
                            "GPU (on CPU cores that torch already fills it gained nothing: docs/results.md)")


class SamConfig(_Section):
    """SAM-prompted refinement (``wsss.refine.sam``): after the label rule, before the CRF.
    Prompts come from the refined maps; SAM's masks are merged into the rule's labels."""

    enabled: bool = Field(False, description="run the SAM stage (needs checkpoint)")
    checkpoint: Path | None = Field(
        None, description="SAM state-dict file of the segment-anything release (sam_vit_b_01ec64.pth, "
                          "sam_vit_l_0b3195.pth or sam_vit_h_4b8939.pth)",
    )
    model_type: Literal["auto", "vit_b", "vit_l", "vit_h"] = Field(
        "auto", description="auto: told from the checkpoint's image-encoder width (768 / 1024 / 1280)"
    )
    region_threshold: float = Field(0.5, gt=0.0, le=1.0, description="a prompt per connected region of map >= this")
    min_area: int = Field(64, ge=1, description="regions smaller than this (pixels) get no prompt")
    max_regions: int = Field(3, ge=1, description="prompts per class: its largest regions")
    positive_points: int = Field(3, ge=0, description="positive points per region, at its map's highest peaks")
    negative_points: int = Field(1, ge=0, description="negative points per other tagged class, at its map's peaks")
    point_spacing: float = Field(
        0.25, ge=0.0, description="points of one region at least this x sqrt(region area) pixels apart (min 1)"
    )
    agree: float = Field(0.1, ge=0.0, le=1.0, description="SAM's mask of class c labels a pixel only where map_c >= this")
    keep: float = Field(
        0.9, ge=0.0, description="the rule's class c outside SAM's masks of c stays where map_c >= this, else "
                                 "background (above 1: never)",
    )

    @model_validator(mode="after")
    def _checkpoint_when_enabled(self) -> "SamConfig":
        if self.enabled and self.checkpoint is None:
            raise ValueError("refine.sam.enabled is true but refine.sam.checkpoint is not set: give the path of a "
                             "SAM state-dict file (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or sam_vit_h_4b8939.pth)")
        return self


class RefineConfig(_Section):
    pamr: PamrConfig = PamrConfig()
    saliency: SaliencyConfig = SaliencyConfig()
    label: LabelRuleConfig = LabelRuleConfig()
    crf: CrfConfig = CrfConfig()
    sam: SamConfig = SamConfig()


class QualityGateConfig(_Section):
    """The gate after the classifier (``wsss.eval.classification``): skill = (AP − prevalence) /
    (1 − prevalence) on the validation split, 0 at chance, 1 when perfect."""

    min_skill: float = Field(0.2, ge=0.0, le=1.0, description="the run stops when the mean skill is below this")
    class_min_skill: float = Field(0.2, ge=0.0, le=1.0,
                                   description="classes below this are named as ones the classifier cannot tell apart")
    force: bool = Field(False, description="go on with a classifier below min_skill (its labels are not to be trusted)")


class ClassifierTrainConfig(_Section):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_epochs: int = Field(2, ge=0)
    decay_epochs: int | None = Field(
        None, ge=1,
        description="the learning rate stays at lr after warm-up and decays (cosine, to 0) over the last "
                    "decay_epochs epochs only (None: a cosine over every epoch after warm-up)",
    )
    plateau_epochs: int | None = Field(
        None, ge=1,
        description="stop on a validation plateau: when val mAP has gained less than plateau_delta over its best "
                    "for this many epochs, the decay_epochs decay starts and training ends after it (epochs stays "
                    "the most it trains; None: always train every epoch)",
    )
    plateau_delta: float = Field(0.005, ge=0.0, le=1.0, description="the least val mAP gain that is not a plateau")
    plateau_min_map: float = Field(
        0.0, ge=0.0, le=1.0, description="no plateau stop before the best val mAP reaches this: a flat stretch below it "
                                         "is a slow learner's pause (0: a plateau at any mAP ends training)")
    amp: bool = Field(True, description="mixed precision (wsss.precision): bfloat16 on a GPU that has it, else "
                                         "float16 + loss scaling; bfloat16 on a CPU with native bfloat16; float32 elsewhere")
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: torch's default)")
    seed: int = 0
    gate: QualityGateConfig = QualityGateConfig()

    @model_validator(mode="after")
    def _plateau_needs_decay(self):
        if self.plateau_epochs is not None and self.decay_epochs is None:
            raise ValueError("plateau_epochs needs decay_epochs: the epochs of decay that follow a plateau")
        return self


class HeadConfig(_Section):
    """What every segmentation head reads: four blocks of the ViT (``wsss.models.heads``)."""

    blocks: list[int] | None = Field(
        None, min_length=4, max_length=4,
        description="four block indices, shallow to deep (None: evenly spaced, 2,5,8,11 of 12)",
    )


class DptConfig(HeadConfig):
    """The DPT segmentation head (Ranftl et al. 2021) on four blocks of the ViT."""

    readout: Literal["ignore", "add", "project"] = Field(
        "project", description="prefix tokens: dropped, added to every patch token, or concatenated + projected"
    )
    features: int = Field(256, ge=8, description="channels of the fusion stages and the head")
    head_stride: Literal[2, 4] = Field(
        4, description="the head runs at 1/head_stride of the input: 2 = the original DPT (the last fusion block "
                       "upsamples ×2; its head then costs ~60% more compute), 4 = at the finest reassembled map",
    )
    reassemble_channels: list[int] | None = Field(
        None, min_length=4, max_length=4,
        description="channels of the four reassembled maps (None: D/8, D/4, D/2, D of the ViT width D)",
    )
    stem_skip: bool = Field(
        False, description="with a conv stem (model.conv_stem): its map at 1/4 of the input joins the last fusion "
                           "stage, as DPT-Hybrid feeds its CNN's early stages to the head (edges the stride-8 "
                           "tokens cannot place)",
    )

    @field_validator("reassemble_channels")
    @classmethod
    def _positive_channels(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(c < 1 for c in value):
            raise ValueError(f"reassemble_channels must be positive, got {value}")
        return value


class SetrPupConfig(HeadConfig):
    """SETR's progressive-upsampling decoder (Zheng et al. 2021) on the deepest of ``blocks``."""

    channels: int = Field(256, ge=1, description="width of the four conv + 2× upsampling stages")


class SetrMlaConfig(HeadConfig):
    """SETR's multi-level aggregation decoder (Zheng et al. 2021) on the four ``blocks``."""

    channels: int = Field(256, ge=2, description="width of the projected maps and the top-down path")
    stream_channels: int = Field(128, ge=1, description="width of each level's stream before the concatenation")


class SegformerConfig(HeadConfig):
    """A SegFormer-style all-MLP decoder (Xie et al. 2021) on the four ``blocks``."""

    embed: int = Field(256, ge=1, description="the common width every level is projected to")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout before the classifier")


class Mask2FormerConfig(HeadConfig):
    """A Mask2Former-style head (Cheng et al. 2022) sized for CPU: a light FPN pixel decoder,
    learned queries, masked-attention decoder layers, trained by bipartite matching."""

    hidden: int = Field(64, ge=4, description="width of the pixel decoder, the queries and the decoder layers "
                                             "(a multiple of 4 and of heads)")
    queries: int = Field(16, ge=1, description="learned queries (at least the number of classes + 1)")
    layers: int = Field(3, ge=0, description="masked-attention decoder layers")
    heads: int = Field(4, ge=1, description="attention heads of the decoder layers")
    points: int = Field(1024, ge=1, description="points sampled per image for the matching and the mask losses")
    class_weight: float = Field(2.0, ge=0.0, description="weight of the class cross-entropy (matching cost and loss)")
    mask_weight: float = Field(5.0, ge=0.0, description="weight of the mask BCE (matching cost and loss)")
    dice_weight: float = Field(5.0, ge=0.0, description="weight of the mask Dice loss (matching cost and loss)")
    no_object_weight: float = Field(0.1, ge=0.0, description="class weight of 'no object' for unmatched queries")


HeadName = Literal["dpt", "setr_pup", "setr_mla", "segformer", "mask2former"]
HEADS: tuple[str, ...] = get_args(HeadName)


class SegmenterTrainConfig(_Section):
    """Segmenter training: single stage (double backward, DESIGN step 8) or on saved pseudo-labels."""

    mode: Literal["single_stage", "two_stage"] = Field(
        "single_stage", description="single_stage: labels made in the loop; two_stage: label PNGs of labels_dir"
    )
    labels_dir: Path | None = Field(
        None, description="two_stage: folder of <id>.png pseudo-labels (None: RUN/pseudo_labels)"
    )
    corrections: Path | None = Field(
        None, description="two_stage: a person's corrected labels, a COCO instances JSON (as CVAT or Label Studio "
                          "export it; wsss export --review N writes the images to correct) or a folder of <id>.png "
                          "label maps: those images' labels replace their pseudo-labels in training (the pseudo-label "
                          "files are left as they are; wsss.data.corrections)"
    )
    init: Literal["pretrained", "classifier"] | Path = Field(
        "pretrained",
        description="what starts the backbone: pretrained (model.pretrained, or random weights), classifier "
                    "(this run's RUN/classifier/classifier.pt; the pipeline hands over the one it trained), "
                    "or the path of a classifier.pt",
    )
    steps: int = Field(2000, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1, description="images per micro-batch and process")
    crop_size: int | None = Field(None, ge=16, description="square training crop (None: model.img_size)")
    scale_range: list[float] = Field([0.7, 1.3], min_length=2, max_length=2, description="random rescale before cropping")
    phase1_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="single_stage: share of the steps trained on the classification loss only"
    )
    lr: float = Field(1e-2, gt=0.0)
    head_lr_scale: float = Field(10.0, gt=0.0, description="learning-rate factor of the DPT and classification heads")
    momentum: float = Field(
        0.9, ge=0.0, lt=1.0,
        description="SGD momentum (the paper's code passed its weight decay here by mistake: momentum 5e-4, no decay)",
    )
    weight_decay: float = Field(1e-4, ge=0.0, description="decoupled for adamw; L2 for sgd; not on biases/norms/tokens")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    poly_power: float = Field(0.9, gt=0.0, description="lr = base · (1 − step/steps)^power")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    cls_loss_weight: float = Field(1.0, ge=0.0, description="weight of the classification loss in phase 2")
    saliency_loss_weight: float = Field(
        0.0, ge=0.0, description="BCE of the background probability against non-saliency (0: off)"
    )
    amp: bool = Field(True, description="mixed precision (wsss.precision): bfloat16 on a GPU that has it, else "
                                         "float16 + loss scaling; bfloat16 on a CPU with native bfloat16; float32 elsewhere")
    checkpoint_every: int = Field(200, ge=1, description="steps between RUN/<segmenter>/last.pt writes")
    log_every: int = Field(25, ge=1, description="steps between progress lines (steps/s, images/s, time left; "
                                                  "a flow also updates its progress artifact)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process (None: torch's default)")
    seed: int = 0
    head: HeadName = Field(
        "dpt", description="the segmentation head on the ViT: dpt, setr_pup, setr_mla, segformer or mask2former "
                           "(its settings: the section of the same name)")
    dpt: DptConfig = DptConfig()
    setr_pup: SetrPupConfig = SetrPupConfig()
    setr_mla: SetrMlaConfig = SetrMlaConfig()
    segformer: SegformerConfig = SegformerConfig()
    mask2former: Mask2FormerConfig = Mask2FormerConfig()

    @property
    def head_config(self) -> HeadConfig:
        """The settings section of the chosen ``head``."""
        return getattr(self, self.head)

    @field_validator("init", mode="before")
    @classmethod
    def _init_none(cls, value):
        return "pretrained" if value is None else value  # configs written before 'pretrained' existed

    @field_validator("scale_range")
    @classmethod
    def _scale_range(cls, value: list[float]) -> list[float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"scale_range must be [min, max] with 0 < min <= max, got {value}")
        return value

    @model_validator(mode="after")
    def _corrections_two_stage(self) -> "SegmenterTrainConfig":
        if self.corrections is not None and self.mode != "two_stage":
            raise ValueError(f"corrections={self.corrections}: corrected labels replace pseudo-labels of two-stage "
                             "training; set train.segmenter.mode=two_stage (single stage makes its labels in the loop)")
        return self


class GuidedFilterConfig(_Section):
    """The guided filter on the segmenter's averaged probabilities (``wsss.refine.guided_filter``)."""

    radius: float = Field(
        0.0, ge=0, description="window radius in segmenter tokens as the image is predicted (its stride divided by the "
                               "mean of predict.scales, in the image's own pixels; 3.5 at the demo's stride 8 and "
                               "scales [1.5, 2.0] = 16 px); 0: off",
    )
    eps: float = Field(1e-4, gt=0, description="ridge on the colours' covariance (colours in [0, 1]): larger is smoother")


class PredictConfig(_Section):
    """Segmenter inference (wsss predict, and the validation score at the end of training)."""

    scales: Scales = Field([1.0], min_length=1, description="input scales whose softmax is averaged")
    flip: bool = Field(True, description="also average the horizontally flipped input")
    guided_filter: GuidedFilterConfig = Field(
        default_factory=GuidedFilterConfig,
        description="the averaged probabilities filtered with the image as the guide (before the argmax and the CRF)",
    )
    crf: bool = Field(False, description="dense CRF on the averaged probabilities (kernels: refine.crf)")
    batch_size: int = Field(8, ge=1, description="images of one size per forward")


class ReportConfig(_Section):
    """The stage table (wsss report, and the pipeline's last step)."""

    stage_images: int | None = Field(
        None, ge=1, description="score the stage table on this many images of the split, evenly spaced (None: all)"
    )
    review_images: int = Field(
        24, ge=0, description="the review page (RUN/review.html) shows this many least confident pseudo-labels (0: none)"
    )
    notes: list[str] = Field(
        [], description="lines added to the pipeline report's notes, e.g. figures measured elsewhere to read the run's "
                        "against (the demo's: the other segmenter mode's scores on the same data)"
    )


class TrainConfig(_Section):
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    classifier: ClassifierTrainConfig = ClassifierTrainConfig()
    segmenter: SegmenterTrainConfig = SegmenterTrainConfig()


class InboxConfig(_Section):
    """The watched folder of the ``label_inbox`` flow and its schedule."""

    folder: Path = Field(Path("runs/inbox"), description="watched folder: images/ + tags.csv (plain folder format)")
    out: Path | None = Field(None, description="labels, predictions and manifests (None: RUN/inbox)")
    classifier: Path | None = Field(None, description="classifier.pt (None: RUN/classifier/classifier.pt)")
    segmenter: Path | None = Field(
        None, description="segmenter checkpoint for predictions (None: the pipeline's, when it exists)"
    )
    settle_seconds: float = Field(2.0, ge=0.0, description="an image is taken once unchanged this long (still copying otherwise)")
    interval_seconds: float | None = Field(60.0, gt=0.0, description="schedule: run every N seconds (used when cron is None)")
    cron: str | None = Field(None, description="schedule: cron string, e.g. '*/5 * * * *' (takes precedence)")


class FlowConfig(_Section):
    """How the Prefect flows run: task runner, shard size, the inbox."""

    shard_size: int = Field(64, ge=1, description="images per mapped task")
    task_runner: Literal["threads", "processes", "dask"] = Field(
        "threads", description="threads: a thread pool; processes: a process pool; dask: prefect-dask"
    )
    max_workers: int = Field(2, ge=1, description="threads, processes or local Dask workers")
    dask_address: str | None = Field(None, description="existing Dask scheduler address; None: a local cluster")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads in each worker (None: torch's default)")
    retries: int = Field(2, ge=0, description="retries of a shard that failed with an I/O error (other errors: none)")
    retry_delay_seconds: float = Field(5.0, ge=0.0)
    examples: int = Field(6, ge=0, description="example overlays in the pseudo-label flow's Markdown artifact")
    claim_timeout_s: float = Field(
        120.0, gt=0,
        description="seconds a claim on an image (OUT/.claims) of a process on another machine lives without its "
                    "heartbeat; a claim of a process on this machine ends with the process")
    inbox: InboxConfig = InboxConfig()


class Config(_Section):
    """The whole configuration; each section is documented by its fields."""

    run_dir: Path = Field(Path("runs/demo"), description="where checkpoints, labels and reports go")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    cam: CamConfig = CamConfig()
    refine: RefineConfig = RefineConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    report: ReportConfig = ReportConfig()
    flow: FlowConfig = FlowConfig()

    @model_validator(mode="after")
    def _start_block_fits_the_model(self) -> "Config":
        """cam.start_block is checked against model.depth when it is set (a checkpoint's own depth is
        checked again when it is loaded: ``wsss.attention.check_map_settings``)."""
        depth = self.model.depth
        problem = None if depth is None else start_block_problem(self.cam.start_block, depth, "the model (model.depth)")
        if problem:
            raise ValueError(problem)
        return self


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
        if isinstance(item["input"], dict):  # a check of a whole section: its message names the settings
            message = allowed.removeprefix("Value error, ")
            lines.append(f"  {message}" if not item["loc"] else f"  {key}: {message}")
            continue
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
