"""Training the segmenter without masks: single stage (double backward) or two stage.

The segmentation head is ``train.segmenter.head`` (DPT, SETR-PUP/MLA, SegFormer, Mask2Former:
``wsss.models.heads``); everything below holds for each of them.

**Single stage** (``train.segmenter.mode: single_stage``, the GETAM paper's scheme, DESIGN
step 8). Phase 1, the first ``phase1_fraction`` of the steps: the multi-label soft-margin
classification loss only. Phase 2, every step:

1. one forward of the crops (attention of blocks ≥ start recorded) → class logits, seg logits;
2. FIRST backward: ∂(each image's tagged logits)/∂attention, all tag slots in one batched
   ``torch.autograd.grad`` with ``retain_graph`` (no parameter gradient) → GETAM → PAMR →
   saliency + label rule, all without gradient (``wsss.train.inloop``, the offline flow's
   functions);
3. loss = CE over background pixels + CE over foreground pixels (each averaged over its own
   pixels, 255 ignored; for Mask2Former instead its matching loss: ``head_loss``) + ``cls_loss_weight`` · classification loss (+ ``saliency_loss_weight``
   · BCE of the background probability against non-saliency);
4. SECOND backward → optimizer step.

**Two stage** (``mode: two_stage``): the same segmenter trained on the label PNGs that
``wsss pseudo-label`` wrote (``labels_dir``), with the same losses as phase 2 (the
classification loss keeps the class head trained, so GETAM works on the result too), every
step.

Optimisation: SGD with momentum and L2 weight decay (``momentum``, ``weight_decay``), or AdamW;
learning rate × ``head_lr_scale`` for the new layers (segmentation head, classification head); no decay
on biases, norms and tokens; poly decay lr·(1 − step/steps)^0.9 per optimizer step. Note: the
GETAM paper's code passed its weight decay (5e-4) in SGD's momentum slot, i.e. it trained with
momentum 5e-4 and no weight decay; here momentum and decay are what their names say.
Mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling);
``grad_accum`` micro-batches per step. Several processes with torchrun
(DistributedDataParallel, see ``wsss.train.distributed``): ``batch_size`` is per process.

Files in RUN/segmenter (two stage: RUN/segmenter_two_stage; ``wsss.layout.SegmenterFiles``):

    last.pt        every ``checkpoint_every`` steps, at the end of phase 1 and at the end
                   (atomic): model, optimizer, scheduler, loss scaler, step, every process's RNG
                   state, history; a new run with the same config resumes from it and ends with
                   the same weights as an uninterrupted run (so do torchrun's restarts after
                   a lost process: ``--max-restarts``, see ``wsss.train.distributed``)
    segmenter.pt   the final weights, model and head settings and class names (what ``wsss
                   predict`` loads; ``wsss.models.checkpoint``)
    history.json   losses, label statistics and learning rate per logged interval
    manifest.jsonl two stage: images left out for want of a pseudo-label

Scoring the result (metrics.json) is the caller's: ``wsss.eval.segmenter_scores``.
"""

from __future__ import annotations

import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from wsss.config import CamConfig, DataConfig, ModelConfig, RefineConfig, SegmenterTrainConfig
from wsss.data import Dataset, open_dataset
from wsss.data.corrections import TrainingLabels, read_corrections, training_labels
from wsss.data.label_png import IGNORE_INDEX
from wsss.data.dataset_walk import Manifest
from wsss.files import write_json
from wsss.layout import SegmenterFiles
from wsss.models.checkpoint import check_format, load_checkpoint, save_checkpoint, segmenter_checkpoint
from wsss.models.segmentation_model import Segmenter, SegmenterOutput, create_segmenter
from wsss.precision import autocast_dtype, explicit_attention_for_training, mixed_precision
from wsss.progress import RateMeter, format_rate, progress_line
from wsss.refine.inloop import InLoopLabeler
from wsss.train.distributed import Distributed, setup_distributed
from wsss.train.run_control import RunControl
from wsss.train.mask_classification import mask_classification_loss
from wsss.train.segmenter_data import SegmenterCrops, StepBatches

__all__ = ["SegmenterRecipe", "train_segmenter", "step_loss", "head_loss", "segmentation_loss", "saliency_loss", "saliency_masks",
           "build_optimizer", "poly_schedule"]

_NO_DECAY_NAMES = ("cls_token", "dist_token", "reg_token", "pos_embed")


# --- losses ----------------------------------------------------------------------------------
def segmentation_loss(seg: Tensor, labels: Tensor) -> Tensor:
    """CE over background pixels + CE over foreground pixels, each averaged over its own pixels.

    seg: ``B×(C+1)×H×W`` logits; labels: ``B×H×W`` int64 (0, 1..C, 255 = ignored). A term with
    no pixels is 0 (not NaN). Returns a scalar.
    """
    ce = F.cross_entropy(seg.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
    background = labels == 0
    foreground = (labels > 0) & (labels != IGNORE_INDEX)
    bg = (ce * background).sum() / background.sum().clamp_min(1)
    fg = (ce * foreground).sum() / foreground.sum().clamp_min(1)
    return bg + fg


def head_loss(out: SegmenterOutput, labels: Tensor, settings: SegmenterTrainConfig) -> Tensor:
    """The segmentation loss of the head's output against ``labels`` (B×H×W, 255 ignored):
    per-pixel heads :func:`segmentation_loss` on ``out.seg``; mask-classification heads
    (``out.queries``, Mask2Former) bipartite matching with class, mask BCE and Dice terms on
    sampled points (``wsss.train.mask_classification``, weights of ``settings.mask2former``)."""
    if out.queries is None:
        return segmentation_loss(out.seg, labels)
    m = settings.mask2former
    return mask_classification_loss(out.queries, labels, num_points=m.points, class_weight=m.class_weight,
                                    mask_weight=m.mask_weight, dice_weight=m.dice_weight,
                                    no_object_weight=m.no_object_weight)


def saliency_loss(seg: Tensor, saliency: list[Tensor | None]) -> Tensor:
    """BCE of the background probability p₀ = softmax(seg)₀ against "not salient", averaged
    over the pixels of the images that have a saliency mask (0 when none has).

    seg: ``B×(C+1)×H×W`` logits; saliency: B entries, ``H×W`` bool (True = salient) or None.
    """
    rows = [i for i, mask in enumerate(saliency) if mask is not None]
    if not rows:
        return seg.new_zeros((), dtype=torch.float32)
    logits = seg[rows].float()
    log_total = torch.logsumexp(logits, dim=1)
    log_bg = logits[:, 0] - log_total  # log p₀
    log_fg = torch.logsumexp(logits[:, 1:], dim=1) - log_total  # log (1 − p₀)
    target = ~torch.stack([saliency[i] for i in rows]).to(seg.device)
    return -torch.where(target, log_bg, log_fg).mean()


# --- optimisation ----------------------------------------------------------------------------
def build_optimizer(segmenter: Segmenter, settings) -> torch.optim.Optimizer:
    """SGD (momentum, L2 decay) or AdamW over four groups: backbone / heads × decay / no decay.

    Heads (segmentation, classification) get lr × ``head_lr_scale``; biases, norm weights (every 1-D
    parameter) and the cls/dist/register tokens and position embedding get no weight decay.
    """
    groups = []
    for params, scale in ((segmenter.backbone_parameters(), 1.0), (segmenter.head_parameters(), settings.head_lr_scale)):
        decay = [p for n, p in params if p.ndim > 1 and not n.endswith(_NO_DECAY_NAMES)]
        plain = [p for n, p in params if not (p.ndim > 1 and not n.endswith(_NO_DECAY_NAMES))]
        for group, wd in ((decay, settings.weight_decay), (plain, 0.0)):
            if group:
                groups.append({"params": group, "lr": settings.lr * scale, "weight_decay": wd})
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.lr)
    raise ValueError(f"train.segmenter.optimizer={settings.optimizer!r}: expected one of sgd, adamw")


def poly_schedule(optimizer: torch.optim.Optimizer, steps: int, power: float) -> torch.optim.lr_scheduler.LambdaLR:
    """lr of every group × (1 − step/steps)^power, stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / steps) ** power)


# --- model set-up ----------------------------------------------------------------------------
def _load_init(segmenter: Segmenter, path: Path, classes: list[str]) -> None:
    """Start the backbone from a classifier.pt of ``wsss train classifier``."""
    if not path.is_file():
        raise ValueError(f"train.segmenter.init: no classifier at {path}; train one first (wsss train classifier) "
                         "or set train.segmenter.init=pretrained")
    state = load_checkpoint(path)
    check_format(state, path, "classifier")
    if not {"model", "classes"} <= set(state):
        raise ValueError(f"train.segmenter.init={path}: not a wsss classifier checkpoint (keys model, classes)")
    if list(state["classes"]) != list(classes):
        raise ValueError(f"train.segmenter.init={path}: classes {state['classes']} differ from the data set's {classes}")
    try:
        segmenter.backbone.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"train.segmenter.init={path}: does not fit model {segmenter.backbone.__class__.__name__} "
                         f"of this config (check model.*): {error}") from error


def _rng_state() -> dict:
    """Every RNG stream as plain data (numpy's key array as a tensor: loadable weights-only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                        int(has_gauss), float(gauss)],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _training_set(data: DataConfig, labels_dir: Path | None, corrections: Path | None, run: SegmenterFiles,
                  dist: Distributed) -> tuple[Dataset, TrainingLabels | None]:
    """The training split and, for two stage (``labels_dir`` given), where its labels are
    (``corrections``: ``train.segmenter.corrections``): only its images with a label PNG (the
    others are recorded in the run's manifest)."""
    if dist.main:  # the demo set is generated on first use: by one process only
        open_dataset(data, data.train_split)
    dist.barrier()
    dataset = open_dataset(data, data.train_split)
    if labels_dir is None:
        return dataset, None
    if not labels_dir.is_dir():
        raise ValueError(f"train.segmenter.labels_dir={labels_dir}: folder not found; write the pseudo-labels "
                         "first (wsss pseudo-label --out DIR) or set train.segmenter.labels_dir")
    return dataset, _labels_of(dataset, labels_dir, corrections, data, run, dist)


def _labels_of(dataset: Dataset, labels_dir: Path, source: Path | None, data: DataConfig, run: SegmenterFiles,
               dist: Distributed) -> TrainingLabels:
    """The pseudo-labels of ``labels_dir`` with ``train.segmenter.corrections`` in their place
    (``wsss.data.corrections``; rank 0 writes a COCO JSON's masks, the others read them);
    ``dataset.ids`` keeps the images that have a label. Rank 0 records the images left out and
    the corrected ones in the run's manifest and the corrections in corrections.json."""
    if source is None:
        labels = TrainingLabels(labels_dir)
        if dist.main:  # an earlier run's record no longer holds
            run.corrections_record.unlink(missing_ok=True)
    elif dist.main:
        shutil.rmtree(run.corrections, ignore_errors=True)  # a JSON's masks of an earlier source: gone
        labels = training_labels(labels_dir, open_dataset(data, None), source, run.corrections)
    dist.barrier()
    if source is not None and not dist.main:
        decoded = run.corrections if source.suffix.lower() == ".json" else source
        labels = TrainingLabels(labels_dir, read_corrections(decoded, open_dataset(data, None)), source)
    missing = [i for i in dataset.ids if not labels.path(i).is_file()]
    used = [i for i in dataset.ids if i in labels.corrected]
    if dist.main:
        with Manifest(run.manifest) as manifest:
            for image_id in missing:
                manifest.record(image_id, "failed", f"no pseudo-label {labels_dir / (image_id + '.png')}")
            for image_id in used:
                manifest.record(image_id, "corrected", f"label from {labels.corrected[image_id]} ({source})")
        if missing:
            print(f"two-stage: {len(missing)} of {len(dataset.ids)} images have no pseudo-label in {labels_dir} and "
                  f"are left out (see {run.manifest})")
        if source is not None:
            outside = len(labels.corrected) - len(used)
            write_json(run.corrections_record, {"source": str(source), "images": len(used), "ids": used,
                                                "outside_training_split": outside})
            print(f"two-stage: {len(used)} of {len(dataset.ids)} training images learn from corrected labels "
                  f"({source})" + (f"; {outside} corrected image(s) are not in the training split" if outside else ""))
    dataset.ids = [i for i in dataset.ids if i not in set(missing)]
    if not dataset.ids:
        raise ValueError(f"train.segmenter.labels_dir={labels_dir}: no <id>.png for any training image")
    return labels


# --- one step --------------------------------------------------------------------------------
def saliency_masks(batch: dict, threshold: float, device: torch.device) -> list[Tensor | None]:
    """The binarised saliency of a batch of crops (``refine.saliency.threshold``): B entries,
    S×S bool or None for an image without a map. The crops were resized like every saliency
    map (``binarise_saliency``'s rule) before cropping."""
    return [batch["saliency"][i].to(device) > threshold if bool(batch["has_saliency"][i]) else None
            for i in range(batch["saliency"].shape[0])]


def step_loss(model: nn.Module, batch: dict, labeler: InLoopLabeler | None, phase: int,
              settings: SegmenterTrainConfig, saliency_threshold: float, device: torch.device,
              autocast=nullcontext) -> tuple[Tensor, dict]:
    """The loss of one micro-batch; the caller runs its (second) backward and the optimizer step.

    Args:
        model: the Segmenter (or its DistributedDataParallel wrapper) in train mode.
        batch: a collated batch of ``SegmenterCrops`` items (image, rgb, tags, saliency,
            has_saliency, label).
        labeler: single stage: the InLoopLabeler of the segmenter's backbone (phase 2 runs the
            forward inside its capture and the first backward in it); two stage: None (the
            batch's labels are used).
        phase: 1 = classification loss only; 2 = segmentation (+ classification, saliency).
        settings: the ``train.segmenter`` section (loss weights); saliency_threshold:
            ``refine.saliency.threshold`` (folder maps are salient above it).
        device: where the model is; autocast: a context factory (mixed precision or none).

    Returns:
        the scalar loss (attached to the graph) and float statistics (loss, cls, seg,
        saliency, fg_share, ignore_share: the share of label pixels that are classes / 255).
    """
    images = batch["image"].to(device, non_blocking=True)
    tags = batch["tags"].to(device, non_blocking=True)
    if phase == 1:
        with autocast():
            out = model(images, with_head=False)
        cls = F.multilabel_soft_margin_loss(out.logits.float(), tags)
        return cls, {"loss": cls.item(), "cls": cls.item()}
    saliency = saliency_masks(batch, saliency_threshold, device)
    if labeler is not None:
        with labeler.capture():
            with autocast():
                out = model(images)
            labels, saliency = labeler(out.logits, tags, images, batch["rgb"].to(device, non_blocking=True), saliency)
    else:
        with autocast():
            out = model(images)
        labels = batch["label"].to(device, non_blocking=True)
    seg = head_loss(out, labels, settings)
    cls = F.multilabel_soft_margin_loss(out.logits.float(), tags)
    loss = seg + settings.cls_loss_weight * cls  # (two stage too: every output takes part, as DDP needs)
    stats = {"seg": seg.item(), "cls": cls.item()}
    if settings.saliency_loss_weight > 0:
        sal = saliency_loss(out.seg, saliency)
        loss = loss + settings.saliency_loss_weight * sal
        stats["saliency"] = sal.item()
    valid = labels != IGNORE_INDEX
    stats.update(loss=loss.item(), fg_share=((labels > 0) & valid).float().mean().item(),
                 ignore_share=(~valid).float().mean().item())
    return loss, stats


# --- the run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmenterRecipe:
    """What a segmenter run trains: the ``data`` and ``model`` sections, ``settings``
    (``train.segmenter``), the single-stage loop's GETAM start block (``cam``) and labelling chain
    (``refine``: PAMR, label rule, saliency), and ``device`` (``train.device``)."""

    data: DataConfig
    model: ModelConfig
    settings: SegmenterTrainConfig
    cam: CamConfig
    refine: RefineConfig
    device: str


def train_segmenter(recipe: SegmenterRecipe, files: SegmenterFiles, init: Path | None = None,
                    labels_dir: Path | None = None, control: RunControl = RunControl()) -> Path:
    """Train (or resume) the segmenter of ``recipe`` on its data's training split.

    files: the run's segmenter folder (``RunLayout.segmenter(mode)``). init: a classifier.pt
    whose weights start the backbone (None: ``model.pretrained`` or random). labels_dir: two
    stage: the folder of <id>.png pseudo-labels (required; ``train.segmenter.corrections`` replace
    some, ``wsss.data.corrections``). control: restart (ignore last.pt),
    stop_after (stop once this many steps are done, with a checkpoint a later call resumes, e.g.
    to split a run into jobs that fit a time limit), progress (tqdm's bar), on_progress(done,
    total, stats): rank 0 calls it every ``settings.log_every`` steps, at the last step and once
    at the start of a resumed run (done and total in steps; stats: ``line``, phase, loss,
    steps_per_s, images_per_s, seconds_left, elapsed_s; None: the line is printed, above tqdm's
    bar when ``progress``). Returns segmenter.pt, or last.pt when stopped early. Under torchrun
    every process calls this; only rank 0 writes files and prints.
    """
    settings = recipe.settings
    single = settings.mode == "single_stage"
    if not single and labels_dir is None:
        raise ValueError("train.segmenter.mode=two_stage needs the folder of pseudo-labels (labels_dir)")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    dist = setup_distributed(recipe.device)
    try:
        train_set, labels = _training_set(recipe.data, None if single else Path(labels_dir), settings.corrections,
                                          files, dist)
        classes = train_set.classes
        torch.manual_seed(settings.seed)
        segmenter = create_segmenter(recipe.model, settings.head, settings.head_config, len(classes))
        if init is not None:
            _load_init(segmenter, Path(init), classes)
        segmenter.to(dist.device)
        labeler = InLoopLabeler(segmenter.backbone, recipe.cam.start_block, recipe.refine) if single else None
        control = replace(control, progress=control.progress and dist.main)
        return _train(segmenter, train_set, labels, labeler, recipe, files, dist, control)
    finally:
        dist.close()


@dataclass
class _Optimisation:
    """The objects a step updates and a checkpoint saves beside the weights."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


def _train(segmenter: Segmenter, train_set: Dataset, labels: TrainingLabels | None, labeler: InLoopLabeler | None,
           recipe: SegmenterRecipe, run: SegmenterFiles, dist: Distributed, control: RunControl) -> Path:
    device, classes, settings, model_config = dist.device, train_set.classes, recipe.settings, recipe.model
    single = labeler is not None
    saliency_threshold = recipe.refine.saliency.threshold
    restart, progress, stop_after, on_progress = control.restart, control.progress, control.stop_after, control.on_progress

    def report(done: int, total: int, stats: dict) -> None:
        if not dist.main:
            return
        if on_progress is not None:
            on_progress(done, total, stats)
        elif progress:
            tqdm.write(stats["line"])  # above the bar
        else:
            print(stats["line"])

    optimizer = build_optimizer(segmenter, settings)
    scheduler = poly_schedule(optimizer, settings.steps, settings.poly_power)
    autocast, scaler = mixed_precision(device, settings.amp)
    explicit = explicit_attention_for_training(segmenter, device, autocast_dtype(device, settings.amp))
    torch.manual_seed(settings.seed * 7919 + dist.rank + 1)  # dropout etc., one stream per process

    identity = {"model": model_config.model_dump(mode="json"), "head": settings.head,
                "head_config": settings.head_config.model_dump(mode="json"),
                "classes": classes, "mode": settings.mode, "steps": settings.steps, "world": dist.world,
                "batch_size": settings.batch_size, "grad_accum": settings.grad_accum,
                **({"corrections": str(settings.corrections)} if settings.corrections is not None else {})}
    start, history = 0, []
    if run.last.is_file() and not restart:
        state = load_checkpoint(run.last)
        if state["identity"] != identity:
            changed = sorted(k for k in identity if state["identity"].get(k) != identity[k])
            raise ValueError(f"{run.last} was written for another run ({', '.join(changed)} differ); "
                             "use --restart to start over (the old checkpoint is replaced)")
        segmenter.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"][dist.rank])
        start, history = state["step"], state["history"]
        report(start, settings.steps, {"line": f"resuming from {run.last} after step {start}/{settings.steps}",
                                       "resumed": True})

    model: nn.Module = segmenter
    if dist.enabled:  # phase 1 leaves the segmentation head unused: find_unused_parameters
        model = nn.parallel.DistributedDataParallel(
            segmenter, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    crop = settings.crop_size or model_config.img_size
    if crop % segmenter.stride:
        raise ValueError(f"train.segmenter.crop_size={crop} must be a multiple of the model's stride {segmenter.stride}")
    sampler = StepBatches(len(train_set), settings.batch_size, settings.grad_accum, dist.world, dist.rank,
                          settings.seed, start, settings.steps)
    loader = DataLoader(SegmenterCrops(train_set, crop, settings.scale_range, settings.seed, labels),
                        batch_sampler=sampler, num_workers=settings.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator())  # own generator: the global RNG stream stays the run's
    phase1_steps = round(settings.steps * settings.phase1_fraction) if single else 0
    stop = settings.steps if stop_after is None else min(settings.steps, stop_after)
    if dist.main:
        print(f"segmenter ({settings.mode}): {settings.steps} steps (phase 1: {phase1_steps}), {dist.world} "
              f"process(es) × batch {settings.batch_size} × {settings.grad_accum} accumulation, crops {crop}, "
              f"{settings.optimizer} lr {settings.lr} (heads ×{settings.head_lr_scale}), device {device}"
              + (" (explicit attention: faster than the fused kernel's bfloat16 backward on a CPU)" if explicit else ""))

    batches = iter(loader)
    interval: list[dict] = []
    recent: list[dict] = []  # the micro-batches since the last progress line
    meter, images_per_step = RateMeter(settings.steps, start), settings.batch_size * settings.grad_accum * dist.world
    started = time.perf_counter()
    bar = tqdm(total=stop, initial=start, desc="segmenter", unit="step", disable=not progress, leave=False)
    for step in range(start, stop):
        segmenter.train()
        phase = 1 if step < phase1_steps else 2
        optimizer.zero_grad(set_to_none=True)
        for m in range(settings.grad_accum):
            sync = m == settings.grad_accum - 1 or not dist.enabled
            with nullcontext() if sync else model.no_sync():
                loss, stats = step_loss(model, next(batches), labeler, phase, settings, saliency_threshold, device,
                                        autocast)
                scaler.scale(loss / settings.grad_accum).backward()
            interval.append(stats)
            recent.append(stats)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        bar.update(1)
        bar.set_postfix(phase=phase, loss=f"{stats['loss']:.3f}")
        done = step + 1
        if done % settings.log_every == 0 or done == stop:
            rate, left = meter.read(done)
            loss = float(np.mean([s["loss"] for s in recent]))
            line = progress_line("step", done, settings.steps, [f"phase {phase}", f"loss {loss:.4f}"],
                                 [format_rate(rate, "steps"), format_rate(rate and rate * images_per_step, "img")],
                                 left)
            report(done, settings.steps, {"line": line, "phase": phase, "loss": loss, "steps_per_s": rate,
                                          "images_per_s": rate and rate * images_per_step, "seconds_left": left,
                                          "elapsed_s": meter.elapsed()})
            recent = []
        if done % settings.checkpoint_every == 0 or done in (stop, phase1_steps):  # history splits at the phases
            history.append(_summary(interval, done, phase, optimizer,
                                    (time.perf_counter() - started) * settings.grad_accum / len(interval)))
            interval, started = [], time.perf_counter()
            _save_last(run, dist, identity, segmenter, _Optimisation(optimizer, scheduler, scaler), done, history)
    bar.close()
    if stop < settings.steps:
        if dist.main:
            print(f"stopped after step {stop}/{settings.steps}; {run.last} resumes the run")
        return run.last
    if dist.main:
        save_checkpoint(run.final, segmenter_checkpoint(segmenter, model_config, settings.head_config, classes, history))
    dist.barrier()
    return run.final


def _summary(interval: list[dict], step: int, phase: int, optimizer, seconds_per_step: float) -> dict:
    """One history entry: the means of the micro-batch statistics since the last entry."""
    keys = sorted({k for stats in interval for k in stats})
    means = {k: float(np.mean([s[k] for s in interval if k in s])) for k in keys}
    return {"step": step, "phase": phase, **means, "lr": optimizer.param_groups[0]["lr"],
            "s_per_step": seconds_per_step}


def _save_last(run: SegmenterFiles, dist: Distributed, identity: dict, segmenter: Segmenter, opt: _Optimisation,
               step: int, history: list[dict]) -> None:
    rng = dist.gather(_rng_state())  # every process's stream, so each resumes its own
    if not dist.main:
        return
    save_checkpoint(run.last, {
        "identity": identity, "model": segmenter.state_dict(), "optimizer": opt.optimizer.state_dict(),
        "scheduler": opt.scheduler.state_dict(), "scaler": opt.scaler.state_dict(), "step": step, "rng": rng,
        "history": history,
    })
    write_json(run.history, history)
    last = history[-1]
    parts = "  ".join(f"{k} {last[k]:.4f}" for k in ("loss", "cls", "seg", "saliency", "fg_share", "ignore_share")
                      if k in last)
    print(f"step {step:6d}  phase {last['phase']}  {parts}  lr {last['lr']:.2e}  {last['s_per_step']:.2f} s/step")
