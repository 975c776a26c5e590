"""Benchmark: one phase-2 training step of the single-stage segmenter, ours vs the paper's way.

    python benchmarks/bench_train_step.py [--batch 4] [--threads 2] [--repeats 2] [--paper-repeats 1]

DeiT-S/16 (random weights) with the default DPT head, 224×224 crops, 20 classes, two tags
per image, folder-style saliency (random boxes), SGD; both ways run the same forward, label
rule, losses, second backward and optimizer step. They differ in how the labels are made:

- ours:  ``wsss.train.segmenter.step_loss`` (the training loop's code): ONE batched backward
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
ratio. Memory: the rise of the peak RSS during the first step in a fresh process per way
(VmHWM, see ``bench_getam.peak_rise_mb``; it includes allocating SGD's momentum buffers, the
same for both ways). Target: paper / ours ≥ 5 for the step.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_getam import MEMORY_SOURCE, peak_rise_mb  # noqa: E402

from wsss.attention.views import normalise_maps  # noqa: E402
from wsss.config import load_config  # noqa: E402
from wsss.data.tensors import image_to_tensor  # noqa: E402
from wsss.models.attention_capture import AttentionCapture, token_layout  # noqa: E402
from wsss.models.segmenter import create_segmenter  # noqa: E402
from wsss.refine.label_rule import pseudo_labels  # noqa: E402
from wsss.refine.pamr_reference import pamr_reference  # noqa: E402
from wsss.refine.inloop import InLoopLabeler  # noqa: E402
from wsss.train.segmenter import build_optimizer, segmentation_loss, step_loss  # noqa: E402

NUM_CLASSES = 20


def make_config(args: argparse.Namespace):
    return load_config(None, [
        f"model.name={args.model}", f"model.img_size={args.size}", "model.patch_size=null", "model.depth=null",
        "refine.saliency.source=folder", "train.device=cpu",
    ])


def make_batch(args: argparse.Namespace) -> dict:
    """B random crops: uint8 RGB, their model input, two tags each, a random salient box each."""
    rng = np.random.default_rng(0)
    B, S = args.batch, args.size
    rgb = rng.integers(0, 256, size=(B, S, S, 3), dtype=np.uint8)
    tags = np.zeros((B, NUM_CLASSES), np.float32)
    saliency = np.zeros((B, S, S), np.float32)
    for i in range(B):
        tags[i, rng.choice(NUM_CLASSES, args.tags, replace=False)] = 1
        y0, x0 = rng.integers(0, S // 2, size=2)
        saliency[i, y0: y0 + S // 2, x0: x0 + S // 2] = 1
    return {"image": torch.stack([image_to_tensor(x) for x in rgb]), "rgb": torch.from_numpy(rgb).permute(0, 3, 1, 2),
            "tags": torch.from_numpy(tags), "saliency": torch.from_numpy(saliency),
            "has_saliency": torch.ones(B, dtype=torch.bool)}


def build(args: argparse.Namespace):
    config = make_config(args)
    torch.manual_seed(0)
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, NUM_CLASSES).train()
    optimizer = build_optimizer(segmenter, config.train.segmenter)
    return config, segmenter, optimizer, InLoopLabeler(segmenter.backbone, config.cam.start_block, config.refine), make_batch(args)


class TimedLabeler:
    """An InLoopLabeler whose calls (first backward → labels) are timed: ``seconds``."""

    def __init__(self, labeler: InLoopLabeler) -> None:
        self.labeler, self.seconds = labeler, 0.0

    def capture(self):
        return self.labeler.capture()

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        result = self.labeler(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        return result


def our_step(config, segmenter, optimizer, labeler, batch) -> dict:
    """The training loop's phase-2 step; returns the seconds of its label part."""
    timed_labeler = TimedLabeler(labeler)
    optimizer.zero_grad(set_to_none=True)
    loss, _ = step_loss(segmenter, batch, timed_labeler, phase=2, settings=config.train.segmenter,
                        saliency_threshold=config.refine.saliency.threshold, device=torch.device("cpu"))
    loss.backward()
    optimizer.step()
    return {"labels": timed_labeler.seconds}


def paper_step(config, segmenter, optimizer, labeler, batch) -> dict:
    """The same step with the labels made the paper's way (see the module docstring); returns
    the seconds of its label part (loop: backward loop + GETAM; pamr: reference PAMR + rule)."""
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
        out = segmenter(images)
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
    t2 = time.perf_counter()
    segmenter.zero_grad(set_to_none=True)
    loss = segmentation_loss(out.seg, labels) + F.multilabel_soft_margin_loss(out.logits, tags)
    loss.backward()
    optimizer.step()
    return {"labels": t2 - t0, "loop": t1 - t0, "pamr": t2 - t1}


WAYS = {"ours": our_step, "paper": paper_step}


def timed(fn, *args) -> dict:
    """{"step": seconds of fn(*args), **the parts fn returns}."""
    t0 = time.perf_counter()
    parts = fn(*args)
    return {"step": time.perf_counter() - t0, **parts}


def _memory_child(way: str, args: argparse.Namespace) -> float:
    torch.set_num_threads(args.threads)
    built = build(args)
    return peak_rise_mb(lambda: WAYS[way](*built))


def memory_mb(way: str, args: argparse.Namespace) -> float:
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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    built = build(args)
    config = built[0]
    print(f"{args.model} (random weights) + DPT head (features {config.train.segmenter.dpt.features}, head at "
          f"1/{config.train.segmenter.dpt.head_stride}), {args.size}×{args.size} crops, batch {args.batch}, "
          f"{args.tags} tags/image, {NUM_CLASSES} classes; torch {torch.__version__}, timm {timm.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load avg {os.getloadavg()[0]:.2f}")
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
    if args.memory:
        mem = {way: memory_mb(way, args) for way in ("ours", "paper")}
        print(f"memory of one step (MB rise of {MEMORY_SOURCE}, first step in a fresh process): "
              f"ours {mem['ours']:.0f}, paper {mem['paper']:.0f}")
    print(f"load avg at end {os.getloadavg()[0]:.2f} (other processes on the machine skew times)")


if __name__ == "__main__":
    main()
