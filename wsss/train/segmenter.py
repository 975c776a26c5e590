"""Training the DPT segmenter without masks: single stage (double backward) or two stage.

**Single stage** (``train.segmenter.mode: single_stage``, the GETAM paper's scheme, DESIGN
step 8). Phase 1, the first ``phase1_fraction`` of the steps: the multi-label soft-margin
classification loss only. Phase 2, every step:

1. one forward of the crops (attention of blocks ≥ start recorded) → class logits, seg logits;
2. FIRST backward: ∂(each image's tagged logits)/∂attention, all tag slots in one batched
   ``torch.autograd.grad`` with ``retain_graph`` (no parameter gradient) → GETAM → PAMR →
   saliency + label rule, all without gradient (``wsss.train.inloop``, the offline flow's
   functions);
3. loss = CE over background pixels + CE over foreground pixels (each averaged over its own
   pixels, 255 ignored) + ``cls_loss_weight`` · classification loss (+ ``saliency_loss_weight``
   · BCE of the background probability against non-saliency);
4. SECOND backward → optimizer step.

**Two stage** (``mode: two_stage``): the same segmenter trained on the label PNGs that
``wsss pseudo-label`` wrote (``labels_dir``), with the same losses as phase 2 (the
classification loss keeps the class head trained, so GETAM works on the result too), every
step.

Optimisation: SGD with momentum and L2 weight decay (``momentum``, ``weight_decay``), or AdamW;
learning rate × ``head_lr_scale`` for the new layers (DPT head, classification head); no decay
on biases, norms and tokens; poly decay lr·(1 − step/steps)^0.9 per optimizer step. Note: the
GETAM paper's code passed its weight decay (5e-4) in SGD's momentum slot, i.e. it trained with
momentum 5e-4 and no weight decay; here momentum and decay are what their names say.
Mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling);
``grad_accum`` micro-batches per step. Several processes with torchrun
(DistributedDataParallel, see ``wsss.train.distributed``): ``batch_size`` is per process.

Files in RUN/segmenter (two stage: RUN/segmenter_two_stage):

    last.pt        every ``checkpoint_every`` steps, at the end of phase 1 and at the end
                   (atomic): model, optimizer, scheduler, loss scaler, step, every process's RNG
                   state, history; a new run with the same config resumes from it and ends with
                   the same weights as an uninterrupted run
    segmenter.pt   the final weights, config and class names (what ``wsss predict`` loads)
    history.json   losses, label statistics and learning rate per logged interval
    metrics.json   validation mIoU etc. of the segmenter (and, single stage, of its own
                   in-loop pseudo-labels with the final weights)
    manifest.jsonl two stage: images left out for want of a pseudo-label
"""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from wsss.data import Dataset, open_dataset
from wsss.data.batching import Manifest
from wsss.data.label_png import IGNORE_INDEX
from wsss.models.dpt import Segmenter, create_segmenter
from wsss.train.checkpoint import load_checkpoint, save_checkpoint
from wsss.train.distributed import Distributed, setup_distributed
from wsss.train.inloop import InLoopLabeler
from wsss.train.segmenter_data import SegmenterCrops, StepBatches

__all__ = ["train_segmenter", "load_segmenter", "step_loss", "segmentation_loss", "saliency_loss",
           "build_optimizer", "poly_schedule", "SegmenterRun"]

_NO_DECAY_NAMES = ("cls_token", "dist_token", "reg_token", "pos_embed")


@dataclass
class SegmenterRun:
    """Where a segmenter run keeps its files (see the module docstring)."""

    folder: Path

    @classmethod
    def of(cls, config) -> "SegmenterRun":
        name = "segmenter" if config.train.segmenter.mode == "single_stage" else "segmenter_two_stage"
        return cls(Path(config.run_dir) / name)

    last = property(lambda self: self.folder / "last.pt")
    final = property(lambda self: self.folder / "segmenter.pt")
    history = property(lambda self: self.folder / "history.json")
    metrics = property(lambda self: self.folder / "metrics.json")
    manifest = property(lambda self: self.folder / "manifest.jsonl")
    val_predictions = property(lambda self: self.folder / "val_predictions")


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

    Heads (DPT, classification) get lr × ``head_lr_scale``; biases, norm weights (every 1-D
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
    state = load_checkpoint(path)
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
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _amp(device: torch.device, enabled: bool):
    """(autocast context factory, GradScaler) for ``device``: bfloat16 where the GPU has it,
    else float16 with loss scaling; off on CPU."""
    if device.type != "cuda" or not enabled:
        return nullcontext, torch.amp.GradScaler(device.type, enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)


def _training_set(config, run: SegmenterRun, dist: Distributed) -> tuple[Dataset, Path | None]:
    """The training split and, for two stage, the label folder (images without a label PNG
    are left out and recorded in the run's manifest)."""
    if dist.main:  # the demo set is generated on first use: by one process only
        open_dataset(config.data, config.data.train_split)
    dist.barrier()
    dataset = open_dataset(config.data, config.data.train_split)
    settings = config.train.segmenter
    if settings.mode == "single_stage":
        return dataset, None
    labels_dir = Path(settings.labels_dir) if settings.labels_dir is not None else Path(config.run_dir) / "pseudo_labels"
    if not labels_dir.is_dir():
        raise ValueError(f"train.segmenter.labels_dir={labels_dir}: folder not found; write the pseudo-labels "
                         "first (wsss pseudo-label --out DIR) or set train.segmenter.labels_dir")
    missing = [i for i in dataset.ids if not (labels_dir / f"{i}.png").is_file()]
    if missing and dist.main:
        with Manifest(run.manifest) as manifest:
            for image_id in missing:
                manifest.record(image_id, "failed", f"no pseudo-label {labels_dir / (image_id + '.png')}")
        print(f"two-stage: {len(missing)} of {len(dataset.ids)} images have no pseudo-label in {labels_dir} and are "
              f"left out (see {run.manifest})")
    dataset.ids = [i for i in dataset.ids if (labels_dir / f"{i}.png").is_file()]
    if not dataset.ids:
        raise ValueError(f"train.segmenter.labels_dir={labels_dir}: no <id>.png for any training image")
    return dataset, labels_dir


# --- one step --------------------------------------------------------------------------------
def step_loss(model: nn.Module, batch: dict, labeler: InLoopLabeler | None, phase: int, config,
              device: torch.device, autocast=nullcontext) -> tuple[Tensor, dict]:
    """The loss of one micro-batch; the caller runs its (second) backward and the optimizer step.

    Args:
        model: the Segmenter (or its DistributedDataParallel wrapper) in train mode.
        batch: a collated batch of ``SegmenterCrops`` items (image, rgb, tags, saliency,
            has_saliency, label).
        labeler: single stage: the InLoopLabeler of the segmenter's backbone (phase 2 runs the
            forward inside its capture and the first backward in it); two stage: None (the
            batch's labels are used).
        phase: 1 = classification loss only; 2 = segmentation (+ classification, saliency).
        config: the wsss.config.Config (train.segmenter loss weights, refine.saliency.threshold).
        device: where the model is; autocast: a context factory (mixed precision or none).

    Returns:
        the scalar loss (attached to the graph) and float statistics (loss, cls, seg,
        saliency, fg_share, ignore_share: the share of label pixels that are classes / 255).
    """
    settings = config.train.segmenter
    images = batch["image"].to(device, non_blocking=True)
    tags = batch["tags"].to(device, non_blocking=True)
    if phase == 1:
        with autocast():
            out = model(images, with_head=False)
        cls = F.multilabel_soft_margin_loss(out.logits.float(), tags)
        return cls, {"loss": cls.item(), "cls": cls.item()}
    saliency: list[Tensor | None]
    if labeler is not None:
        with labeler.capture():
            with autocast():
                out = model(images)
            labels, saliency = labeler(out.logits, tags, images, batch["rgb"].to(device, non_blocking=True),
                                       batch["saliency"], batch["has_saliency"])
    else:
        with autocast():
            out = model(images)
        labels = batch["label"].to(device, non_blocking=True)
        threshold = config.refine.saliency.threshold
        saliency = [batch["saliency"][i].to(device) > threshold if batch["has_saliency"][i] else None
                    for i in range(images.shape[0])]
    seg = segmentation_loss(out.seg, labels)
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
def train_segmenter(config, restart: bool = False, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) the segmenter of ``config`` (a wsss.config.Config).

    restart: ignore RUN/<segmenter>/last.pt. stop_after: stop once this many steps are done
    (a checkpoint is written; a later call resumes), e.g. to split a run into jobs that fit a
    time limit. Returns segmenter.pt, or last.pt when stopped early. Under torchrun every
    process calls this; only rank 0 writes files, prints and evaluates.
    """
    settings = config.train.segmenter
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after={stop_after}: expected a positive number of steps")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    dist = setup_distributed(config.train.device)
    try:
        return _train(config, settings, dist, restart, progress and dist.main, stop_after)
    finally:
        dist.close()


def _train(config, settings, dist: Distributed, restart: bool, progress: bool, stop_after: int | None) -> Path:
    device, run = dist.device, SegmenterRun.of(config)
    single = settings.mode == "single_stage"
    train_set, labels_dir = _training_set(config, run, dist)
    classes = train_set.classes
    torch.manual_seed(settings.seed)
    segmenter = create_segmenter(config.model, settings.dpt, len(classes))
    if settings.init is not None:
        _load_init(segmenter, Path(settings.init), classes)
    segmenter.to(device)
    optimizer = build_optimizer(segmenter, settings)
    scheduler = poly_schedule(optimizer, settings.steps, settings.poly_power)
    autocast, scaler = _amp(device, settings.amp)
    torch.manual_seed(settings.seed * 7919 + dist.rank + 1)  # dropout etc., one stream per process

    identity = {"model": config.model.model_dump(mode="json"), "dpt": settings.dpt.model_dump(mode="json"),
                "classes": classes, "mode": settings.mode, "steps": settings.steps, "world": dist.world,
                "batch_size": settings.batch_size, "grad_accum": settings.grad_accum}
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
        if dist.main:
            print(f"resuming from {run.last} after step {start}/{settings.steps}")

    model: nn.Module = segmenter
    if dist.enabled:  # phase 1 leaves the DPT head unused: find_unused_parameters
        model = nn.parallel.DistributedDataParallel(
            segmenter, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    crop = settings.crop_size or config.model.img_size
    if crop % segmenter.stride:
        raise ValueError(f"train.segmenter.crop_size={crop} must be a multiple of the model's stride {segmenter.stride}")
    sampler = StepBatches(len(train_set), settings.batch_size, settings.grad_accum, dist.world, dist.rank,
                          settings.seed, start, settings.steps)
    loader = DataLoader(SegmenterCrops(train_set, crop, settings.scale_range, settings.seed, labels_dir),
                        batch_sampler=sampler, num_workers=settings.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator())  # own generator: the global RNG stream stays the run's
    labeler = InLoopLabeler(config, segmenter.backbone) if single else None
    phase1_steps = round(settings.steps * settings.phase1_fraction) if single else 0
    stop = settings.steps if stop_after is None else min(settings.steps, stop_after)
    if dist.main:
        print(f"segmenter ({settings.mode}): {settings.steps} steps (phase 1: {phase1_steps}), {dist.world} "
              f"process(es) × batch {settings.batch_size} × {settings.grad_accum} accumulation, crops {crop}, "
              f"{settings.optimizer} lr {settings.lr} (heads ×{settings.head_lr_scale}), device {device}")

    batches = iter(loader)
    interval: list[dict] = []
    started = time.perf_counter()
    bar = tqdm(total=stop, initial=start, desc="segmenter", unit="step", disable=not progress, leave=False)
    for step in range(start, stop):
        segmenter.train()
        phase = 1 if step < phase1_steps else 2
        optimizer.zero_grad(set_to_none=True)
        for m in range(settings.grad_accum):
            sync = m == settings.grad_accum - 1 or not dist.enabled
            with nullcontext() if sync else model.no_sync():
                loss, stats = step_loss(model, next(batches), labeler, phase, config, device, autocast)
                scaler.scale(loss / settings.grad_accum).backward()
            interval.append(stats)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        bar.update(1)
        bar.set_postfix(phase=phase, loss=f"{stats['loss']:.3f}")
        done = step + 1
        if done % settings.checkpoint_every == 0 or done in (stop, phase1_steps):  # history splits at the phases
            history.append(_summary(interval, done, phase, optimizer,
                                    (time.perf_counter() - started) * settings.grad_accum / len(interval)))
            interval, started = [], time.perf_counter()
            _save_last(run, dist, identity, segmenter, optimizer, scheduler, scaler, done, history)
    bar.close()
    if stop < settings.steps:
        if dist.main:
            print(f"stopped after step {stop}/{settings.steps}; {run.last} resumes the run")
        return run.last
    if dist.main:
        save_checkpoint(run.final, {"model": segmenter.state_dict(), "config": config.model_dump(mode="json"),
                                    "classes": classes, "history": history})
    dist.barrier()
    dist.close()
    if dist.main:
        _evaluate_run(segmenter, config, classes, run, progress)
    return run.final


def _summary(interval: list[dict], step: int, phase: int, optimizer, seconds_per_step: float) -> dict:
    """One history entry: the means of the micro-batch statistics since the last entry."""
    keys = sorted({k for stats in interval for k in stats})
    means = {k: float(np.mean([s[k] for s in interval if k in s])) for k in keys}
    return {"step": step, "phase": phase, **means, "lr": optimizer.param_groups[0]["lr"],
            "s_per_step": seconds_per_step}


def _save_last(run, dist, identity, segmenter, optimizer, scheduler, scaler, step, history) -> None:
    rng = dist.gather(_rng_state())  # every process's stream, so each resumes its own
    if not dist.main:
        return
    save_checkpoint(run.last, {
        "identity": identity, "model": segmenter.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step, "rng": rng,
        "history": history,
    })
    run.history.write_text(json.dumps(history, indent=1))
    last = history[-1]
    parts = "  ".join(f"{k} {last[k]:.4f}" for k in ("loss", "cls", "seg", "saliency", "fg_share", "ignore_share")
                      if k in last)
    print(f"step {step:6d}  phase {last['phase']}  {parts}  lr {last['lr']:.2e}  {last['s_per_step']:.2f} s/step")


def _evaluate_run(segmenter: Segmenter, config, classes: list[str], run: SegmenterRun, progress: bool) -> None:
    """Validation mIoU of the segmenter (and of its in-loop labels) → metrics.json, printed."""
    from wsss.predict import Predictor, evaluate_segmenter
    from wsss.train.inloop import evaluate_inloop_labels

    if config.data.val_split is None:
        print("no data.val_split: skipping the validation score")
        return
    val_set = open_dataset(config.data, config.data.val_split)
    if not val_set.ids or val_set.mask_path(val_set.ids[0]) is None:
        print(f"validation split {config.data.val_split!r} has no masks: skipping the validation score")
        return
    segmenter.eval()
    p = config.predict
    predictor = Predictor(segmenter, p.scales, p.flip)
    scores = evaluate_segmenter(predictor, val_set, crf=config.refine.crf if p.crf else None, batch_size=p.batch_size,
                                out_dir=run.val_predictions, progress=progress)
    result = scores.final
    metrics = {"mode": config.train.segmenter.mode, "split": config.data.val_split, "images": len(val_set.ids),
               "predict": p.model_dump(mode="json"), "segmenter": result.to_dict(classes)}
    print(f"\nsegmenter ({config.train.segmenter.mode}) on split {config.data.val_split}:")
    print(result.summary(classes))
    if p.crf:
        metrics["segmenter_without_crf"] = scores.argmax.to_dict(classes)
        print(f"without the CRF: mIoU {scores.argmax.confusion.miou:.4f}")
    if config.train.segmenter.mode == "single_stage":
        labels = evaluate_inloop_labels(segmenter, config, val_set, batch_size=p.batch_size, progress=progress)
        metrics["pseudo_labels"] = labels.to_dict(classes)
        print(f"its in-loop pseudo-labels (GETAM → PAMR → label rule, final weights): mIoU {labels.confusion.miou:.4f}")
    run.metrics.write_text(json.dumps(metrics, indent=1))
    print(f"val mIoU: segmenter {result.confusion.miou:.4f}; metrics in {run.metrics}")


def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter, list[str], dict]:
    """segmenter.pt → (Segmenter in eval mode, class names, the config dict it was trained with)."""
    from wsss.config import Config

    state = load_checkpoint(path)
    if not {"model", "config", "classes"} <= set(state) or not any(k.startswith("dpt.") for k in state["model"]):
        raise ValueError(f"{path}: not a wsss segmenter checkpoint (expected segmenter.pt of wsss train segmenter)")
    config = Config.model_validate(state["config"])
    segmenter = create_segmenter(config.model.model_copy(update={"pretrained": None}), config.train.segmenter.dpt,
                                 len(state["classes"]))
    segmenter.load_state_dict(state["model"])
    return segmenter.to(device).eval(), list(state["classes"]), state["config"]
