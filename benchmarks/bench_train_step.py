"""Benchmark: one phase-2 training step of the single-stage segmenter, ours vs the paper's way.

    python benchmarks/bench_train_step.py [--batch 4] [--threads 2] [--repeats 2] [--paper-repeats 1]
                                          [--device cpu] [--amp]

DeiT-S/16 (random weights) with the default DPT head, 224×224 crops, 20 classes, two tags
per image, folder-style saliency (random boxes), SGD; both ways run the same forward, label
rule, losses, second backward and optimizer step. They differ in how the labels are made:

- ours:  ``wsss.train.segmenter_training.step_loss`` (the training loop's code): ONE batched backward
         over the tag slots w.r.t. the attention of blocks ≥ L/2 (no parameter gradients),
         GETAM, PAMR on the tagged channels only (affinities once, shifted sums);
- paper: per image, per tagged class ``logits[i, c].backward(retain_graph=True)`` through
         the whole backbone (parameter gradients accumulated, then zeroed), GETAM from the
         full attention gradients, and the reference PAMR (dilated one-hot convolutions,
         recomputed every iteration) over all 20 class channels.

Times: wall clock, minimum over the repeats (the two ways interleaved after a warm-up step of
ours), for the whole step and for its label part (ours: the labeler call = first backward +
GETAM + PAMR + rule; paper: the backward loop + GETAM, the reference PAMR, the rule). The rest
of the step (forward, DPT head, losses, second backward, SGD) is the same work in both ways;
with DPT's 256-channel head it costs more than the ViT itself, which bounds the whole-step
ratio. Memory on the CPU: the rise of the peak RSS during the first step in a fresh process per way
(VmHWM, see ``bench_getam.peak_rise_mb``; it includes allocating SGD's momentum buffers, the
same for both ways). On a CUDA device, the device's memory instead (host RSS would miss the
tensors): the rise of ``torch.cuda.max_memory_allocated`` above the allocation at the start of
the first step of a freshly built model, optimizer and batch per way, in this process
(``bench_getam.peak_device_mb``; momentum buffers included likewise); other devices: not
measured. Target: paper / ours ≥ 5 for the step.

--device (default cpu; e.g. cuda): the segmenter, its optimizer state and the batch (already
on the device, for both ways: no host-to-device copy is timed) are there; every clock reading
(step and label part) follows a device synchronisation (``torch.cuda.synchronize``).
--amp: both ways train with ``wsss.precision.mixed_precision(device, True)``, the trainer's own
setting (``train.segmenter.amp``): the forward under its autocast (bfloat16 where the device
computes it natively; float16 with a GradScaler on a CUDA GPU without bfloat16; else float32,
said so in the header), both ways' label backward outside it as in the training loop, the loss
backward and SGD step through the scaler. Default off (float32), as the documented numbers were measured.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import timm
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # the repository (tests/reference) and bench_getam
from bench_getam import memory_source, peak_device_mb, peak_rise_mb, precision_line, synchronize  # noqa: E402

from wsss.attention.views import normalise_maps  # noqa: E402
from wsss.config import load_config  # noqa: E402
from wsss.data.tensors import image_to_tensor  # noqa: E402
from wsss.models.attention_capture import AttentionCapture
from wsss.models.vit_geometry import token_layout  # noqa: E402
from wsss.models.checkpoint import resolve_device  # noqa: E402
from wsss.models.segmentation_model import create_segmenter  # noqa: E402
from wsss.precision import autocast_dtype, mixed_precision  # noqa: E402
from wsss.refine.label_rule import pseudo_labels  # noqa: E402
from wsss.refine.inloop import InLoopLabeler  # noqa: E402
from wsss.train.segmenter_training import build_optimizer, segmentation_loss, step_loss  # noqa: E402
from tests.reference.pamr import pamr_reference  # noqa: E402

NUM_CLASSES = 20


class Precision(NamedTuple):
    """Where the step runs and how: the device, the autocast factory and the GradScaler of
    ``wsss.precision.mixed_precision`` (a disabled scaler and ``nullcontext`` without --amp)."""

    device: torch.device
    autocast: Callable[[], ContextManager]
    scaler: torch.amp.GradScaler


def make_config(args: argparse.Namespace):
    return load_config(None, [
        f"model.name={args.model}", f"model.img_size={args.size}", "model.patch_size=null", "model.depth=null",
        "refine.saliency.source=folder", f"train.device={args.device}", f"train.segmenter.amp={str(args.amp).lower()}",
    ])


def make_batch(args: argparse.Namespace, device: torch.device = torch.device("cpu")) -> dict:
    """B random crops: uint8 RGB, their model input, two tags each, a random salient box each;
    made on the CPU (the same values on every device), then moved to ``device`` (has_saliency
    stays on the CPU, as the loader gives it)."""
    rng = np.random.default_rng(0)
    B, S = args.batch, args.size
    rgb = rng.integers(0, 256, size=(B, S, S, 3), dtype=np.uint8)
    tags = np.zeros((B, NUM_CLASSES), np.float32)
    saliency = np.zeros((B, S, S), np.float32)
    for i in range(B):
        tags[i, rng.choice(NUM_CLASSES, args.tags, replace=False)] = 1
        y0, x0 = rng.integers(0, S // 2, size=2)
        saliency[i, y0: y0 + S // 2, x0: x0 + S // 2] = 1
    batch = {"image": torch.stack([image_to_tensor(x) for x in rgb]), "rgb": torch.from_numpy(rgb).permute(0, 3, 1, 2),
             "tags": torch.from_numpy(tags), "saliency": torch.from_numpy(saliency)}
    return {**{k: v.to(device) for k, v in batch.items()}, "has_saliency": torch.ones(B, dtype=torch.bool)}


def build(args: argparse.Namespace):
    config = make_config(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, NUM_CLASSES).train().to(device)
    optimizer = build_optimizer(segmenter, config.train.segmenter)
    labeler = InLoopLabeler(segmenter.backbone, config.cam.start_block, config.refine)
    precision = Precision(device, *mixed_precision(device, args.amp))
    return config, segmenter, optimizer, labeler, make_batch(args, device), precision


class TimedLabeler:
    """An InLoopLabeler whose calls (first backward → labels) are timed: ``seconds`` (the
    device synchronised before each clock reading)."""

    def __init__(self, labeler: InLoopLabeler, device: torch.device) -> None:
        self.labeler, self.device, self.seconds = labeler, device, 0.0

    def capture(self):
        return self.labeler.capture()

    def __call__(self, *args, **kwargs):
        synchronize(self.device)
        t0 = time.perf_counter()
        result = self.labeler(*args, **kwargs)
        synchronize(self.device)
        self.seconds += time.perf_counter() - t0
        return result


def our_step(config, segmenter, optimizer, labeler, batch, precision: Precision) -> dict:
    """The training loop's phase-2 step (as ``train_segmenter`` runs it, autocast and scaler
    included); returns the seconds of its label part."""
    timed_labeler = TimedLabeler(labeler, precision.device)
    optimizer.zero_grad(set_to_none=True)
    loss, _ = step_loss(segmenter, batch, timed_labeler, phase=2, settings=config.train.segmenter,
                        saliency_threshold=config.refine.saliency.threshold, device=precision.device,
                        autocast=precision.autocast)
    precision.scaler.scale(loss).backward()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return {"labels": timed_labeler.seconds}


def paper_step(config, segmenter, optimizer, labeler, batch, precision: Precision) -> dict:
    """The same step with the labels made the paper's way (see the module docstring); returns
    the seconds of its label part (loop: backward loop + GETAM; pamr: reference PAMR + rule).
    With --amp the forward runs under the same autocast as ours and the loss goes through the
    same scaler; the backward loop and the maps run outside autocast, as ours' labeler does."""
    device = precision.device
    backbone = segmenter.backbone
    depth = len(backbone.blocks)
    start = depth // 2 if config.cam.start_block is None else config.cam.start_block
    images, tags, rgb = batch["image"], batch["tags"], batch["rgb"]
    B, _, H, W = images.shape
    layout = token_layout(backbone, (H, W))
    p = layout.num_prefix_tokens
    optimizer.zero_grad(set_to_none=True)
    maps = images.new_zeros(B, NUM_CLASSES, H, W)
    with AttentionCapture(backbone, blocks=range(start, depth), requires_grad=True) as cap:
        with precision.autocast():
            out = segmenter(images)
        synchronize(device)
        t0 = time.perf_counter()
        attentions = cap.attentions
        for a in attentions:
            a.retain_grad()
        for i in range(B):
            for c in torch.nonzero(tags[i] > 0).flatten().tolist():
                segmenter.zero_grad()
                for a in attentions:
                    a.grad = None
                out.logits[i, c].backward(retain_graph=True)
                cam = 0
                for a in attentions:
                    g, att = a.grad[i], a[i].detach()
                    cam = cam + (g * att).clamp(min=0).mean(0) * g.clamp(min=0).mean(0)
                cam = cam.clamp(min=0)[0, p:].reshape(1, 1, *layout.grid)
                maps[i, c] = F.interpolate(cam, size=(H, W), mode="bilinear", align_corners=True)[0, 0]
    synchronize(device)
    t1 = time.perf_counter()
    rule, pamr_settings = config.refine.label, config.refine.pamr
    with torch.no_grad():
        present = (tags > 0)[:, :, None, None]
        raw = normalise_maps(maps) * present
        refined = pamr_reference(rgb.float(), raw, pamr_settings.iterations, pamr_settings.dilations)  # all 20
        refined = normalise_maps(refined) * present
        salient = batch["saliency"] > config.refine.saliency.threshold
        labels = pseudo_labels(refined, tags, salient, alpha=rule.alpha, tau=rule.tau, conflict=rule.conflict,
                               opening=rule.opening)
    synchronize(device)
    t2 = time.perf_counter()
    segmenter.zero_grad(set_to_none=True)
    loss = segmentation_loss(out.seg, labels) + F.multilabel_soft_margin_loss(out.logits.float(), tags)
    precision.scaler.scale(loss).backward()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return {"labels": t2 - t0, "loop": t1 - t0, "pamr": t2 - t1}


WAYS = {"ours": our_step, "paper": paper_step}


def timed(fn, *args) -> dict:
    """{"step": seconds of fn(*args), **the parts fn returns}; the device (args[-1].device)
    synchronised before each clock reading."""
    device = args[-1].device
    synchronize(device)
    t0 = time.perf_counter()
    parts = fn(*args)
    synchronize(device)
    return {"step": time.perf_counter() - t0, **parts}


def _memory_child(way: str, args: argparse.Namespace) -> float:
    torch.set_num_threads(args.threads)
    built = build(args)
    return peak_rise_mb(lambda: WAYS[way](*built))


def memory_mb(way: str, args: argparse.Namespace) -> float:
    """The first step's peak rise: on the CPU in a fresh process (host RSS); on CUDA in this
    process, of a freshly built model, optimizer and batch (device memory allocated)."""
    if args.device.startswith("cuda"):
        built = build(args)
        return peak_device_mb(lambda: WAYS[way](*built), built[-1].device)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_memory_child, (way, args))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tags", type=int, default=2, help="tagged classes per image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed steps of ours (after one warm-up step)")
    ap.add_argument("--paper-repeats", type=int, default=1, help="timed steps of the paper's way")
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="skip the peak-memory measurement (one fresh process per way)")
    ap.add_argument("--device", default="cpu",
                    help="where the segmenter and the batch are (cpu, cuda, cuda:1, ...); timings synchronise it")
    ap.add_argument("--amp", action="store_true",
                    help="both ways with the trainer's mixed precision (wsss.precision.mixed_precision: bfloat16 "
                         "autocast where native, float16 + GradScaler on a CUDA GPU without it, else float32)")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device, "--device")
    except ValueError as e:
        ap.error(str(e))
    args.device = str(device)
    torch.set_num_threads(args.threads)
    built = build(args)
    config = built[0]
    where = (f"device {device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
             else f"device {device}")
    print(f"{args.model} (random weights) + DPT head (features {config.train.segmenter.dpt.features}, head at "
          f"1/{config.train.segmenter.dpt.head_stride}), {args.size}×{args.size} crops, batch {args.batch}, "
          f"{args.tags} tags/image, {NUM_CLASSES} classes; torch {torch.__version__}, timm {timm.__version__}, "
          f"{where}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load avg {os.getloadavg()[0]:.2f}")
    dtype = autocast_dtype(device, args.amp)
    print(precision_line(device, args.amp, dtype, scaled=dtype == torch.float16)
          + " (both ways; weights, optimizer state and losses float32)")
    our_step(*built)  # warm-up: allocates SGD's momentum buffers
    times = {"ours": [], "paper": []}
    for r in range(max(args.repeats, args.paper_repeats)):
        if r < args.repeats:
            times["ours"].append(timed(our_step, *built))
        if r < args.paper_repeats:
            times["paper"].append(timed(paper_step, *built))
    best = {way: min(runs, key=lambda run: run["step"]) for way, runs in times.items()}
    print(f"\n{'way':<6} {'s/step':>8} {'ms/image':>9} {'labels s':>9} {'rest s':>7}  "
          f"(fastest of {args.repeats} / {args.paper_repeats} steps)")
    for way in ("ours", "paper"):
        run = best[way]
        print(f"{way:<6} {run['step']:>8.2f} {run['step'] / args.batch * 1e3:>9.0f} {run['labels']:>9.2f} "
              f"{run['step'] - run['labels']:>7.2f}")
    paper = best["paper"]
    print(f"paper's label part: backward loop + GETAM {paper['loop']:.2f} s, reference PAMR (20 channels) + "
          f"rule {paper['pamr']:.2f} s")
    ratio = paper["step"] / best["ours"]["step"]
    label_ratio = paper["labels"] / best["ours"]["labels"]
    print(f"\nratio paper / ours, whole step: {ratio:.1f}× ({'meets' if ratio >= 5 else 'MISSES'} the target ≥ 5×); "
          f"label part alone: {label_ratio:.1f}×")
    source = memory_source(device)
    if args.memory and source is None:
        print(f"memory: not measured on {device.type} (no peak-allocation counter; host RSS would miss the tensors)")
    elif args.memory:
        del built  # (CUDA: the fresh builds of memory_mb's first steps)
        mem = {way: memory_mb(way, args) for way in ("ours", "paper")}
        where = "first step in a fresh process" if device.type == "cpu" else "first step of a fresh build"
        print(f"memory of one step (MB rise of {source.removesuffix(' during one call in a fresh process')}, "
              f"{where}): ours {mem['ours']:.0f}, paper {mem['paper']:.0f}")
    print(f"load avg at end {os.getloadavg()[0]:.2f} (other processes on the machine skew times)")


if __name__ == "__main__":
    main()
