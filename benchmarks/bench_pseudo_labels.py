"""Benchmark: ``wsss pseudo-label``'s whole chain vs the paper's per-image procedure vs the floor
of the chain's parts (issue 16, items 2 and 5).

    python benchmarks/bench_pseudo_labels.py [--images 48] [--paper-images 8] [--batch-size B] [--threads N]
                                             [--device cpu] [--amp] [--quick] [--set KEY=VALUE ...]

DeiT-S/16 (random weights), 20 VOC classes, the settings of configs/voc12_deit_small.yaml with
``refine.saliency.source=none`` and the dense CRF on (10 iterations, a pool of
``refine.crf.workers`` processes). The data set is a temporary folder of ``--images`` JPEGs at a
VOC-like mix of sizes (``batch_fill.voc_like_sizes``: about half 500×375 W×H, a fifth 375×500, a
tenth 500×333, the rest anywhere in 300..500 a side) in random order, each a smooth random
colour field with a few filled shapes, 1 to 3 tags. Measured in one process, one after the other:

- ours:  ``write_pseudo_labels(offline_labeler(...))`` with the CRF in its pool from
         ``crf_executor``, as ``wsss pseudo-label`` runs it (size-grouped batches of
         ``cam.batch_size``; decoding, the chain and the PNG writes). Excluded: model creation,
         the CRF pool's start-up (its workers are started by a first CRF job) and one warm-up
         chain call on one image.
- paper: per image, one at a time (decode, forward, per tagged class one
         ``backward(retain_graph=True)``: ``tests.reference.getam.getam_reference``), PAMR over
         all 20 class channels (``tests.reference.pamr``), the same label rule, and the
         same CRF in this process (the paper's code runs it inline), then the PNG write. On
         ``--paper-images`` evenly spaced images only (it is ~15-20× slower), per image.
- floor: the chain's parts, each alone, on the batches ours forms: the batched GETAM call
         (one forward + one backward per tag slot), PAMR on the tag slots, the label rule, and
         the CRF alone in the same pool with every image's job submitted at once. Summed per
         image. What ours does outside the parts (decoding, resizing to the model input,
         upsampling and normalising the maps, PNG writes) is timed in the same pass and shown
         beside it, not in the floor.
- ours again: ours a second time, last. The first pass is the first to use buffers of each batch
         size (the floor and the paper come after it and reuse what it left mapped); the
         second shows the steady state of a long run, where that first touch is spread over
         thousands of images. Both are printed against the floor.

The process keeps freed memory for reuse (``wsss.allocator.keep_freed_memory``, as the ``wsss``
command does; ``--allocator default`` leaves glibc as it is).

Targets (printed beside the figures, not asserted): ours / paper ≥ 15×, ours over the floor
≤ 1.2×. Memory: the rise of this process's peak RSS during ours (``bench_getam.peak_rise_mb``),
and the same for the CRF pool's processes, summed over them. ``--quick`` (a 2-block ViT,
6 images at half the VOC sizes, 2 paper images) is a smoke run of under a minute.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from batch_fill import voc_like_sizes  # noqa: E402
from bench_getam import MEMORY_SOURCE, USE_HWM, peak_rise_mb  # noqa: E402

from wsss.attention.slots import gather_slots, scatter_slots, tag_slots  # noqa: E402
from wsss.attention.views import normalise_maps  # noqa: E402
from wsss.config import Config, load_config  # noqa: E402
from wsss.data.batching import same_size_batches  # noqa: E402
from wsss.data.folder import FolderDataset, write_folder_dataset_index  # noqa: E402
from wsss.data.label_png import read_label_png, write_label_png  # noqa: E402
from wsss.data.size_limit import at_source_size  # noqa: E402
from wsss.data.tensors import image_to_tensor, resize_image  # noqa: E402
from wsss.data.voc import VOC_CLASSES  # noqa: E402
from wsss.models.vit_geometry import model_input_size, model_stride  # noqa: E402
from wsss.refine.crf import crf_executor, start_crf_pseudo_labels  # noqa: E402
from wsss.refine.label_rule import pseudo_labels  # noqa: E402
from wsss.refine.pamr import pamr  # noqa: E402
from tests.reference.getam import getam_reference  # noqa: E402
from tests.reference.pamr import pamr_reference  # noqa: E402

# timm, and the modules that import it, are imported inside the functions: the CRF pool's
# workers import this script again as their main module, and should stay as light as they are
# under `wsss pseudo-label` (importing timm there would add seconds and hundreds of MB to each).
if TYPE_CHECKING:
    from wsss.refine.chain import PseudoLabeler

CONFIG = ROOT / "configs" / "voc12_deit_small.yaml"
QUICK_MODEL = ["model.name=vit_tiny_patch16_224", "model.embed_dim=64", "model.depth=2", "model.num_heads=2",
               "cam.start_block=null"]


# --- the data set ----------------------------------------------------------------------------
def synthetic_image(h: int, w: int, rng: np.random.Generator) -> Image.Image:
    """An H×W RGB image: a smooth random colour field (a coarse random grid, bicubic) with 2-5
    filled ellipses, rectangles and triangles in random colours, slightly blurred, plus noise."""
    coarse = rng.integers(0, 256, size=(int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
        x1, y1 = x0 + int(rng.integers(w // 8, w // 2)), y0 + int(rng.integers(h // 8, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.int16)
    pixels = pixels + rng.integers(-6, 7, size=pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_dataset(root: Path, count: int, scale: float, seed: int) -> FolderDataset:
    """``count`` JPEGs at ``voc_like_sizes`` (each side × ``scale``), 1-3 VOC tags each."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    tags = {}
    for n, (h, w) in enumerate(voc_like_sizes(count, rng)):
        name = f"{n:05d}.jpg"
        synthetic_image(round(h * scale), round(w * scale), rng).save(root / "images" / name, quality=90)
        tags[name] = [VOC_CLASSES[c] for c in sorted(rng.choice(len(VOC_CLASSES), int(rng.integers(1, 4)), replace=False))]
    write_folder_dataset_index(root, list(VOC_CLASSES), tags)
    return FolderDataset(root)


# --- the three measurements ------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, fn()), CUDA work included (synchronised when CUDA is in use)."""
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def run_ours(labeler: PseudoLabeler, dataset: FolderDataset, out: Path, config: Config) -> dict:
    """The chain over the whole data set, as ``wsss pseudo-label`` runs it: {seconds, counts,
    peak_mb (this process), pool_mb (the CRF pool's processes, see :func:`pool_peak_rise_mb`),
    cuda_mb (peak CUDA memory allocated, when CUDA is in use)}."""
    from wsss.writers.label_pngs import write_pseudo_labels

    result: dict = {}

    def ours() -> None:
        result["seconds"], result["counts"] = timed(lambda: write_pseudo_labels(
            labeler, dataset, out, batch_size=config.cam.batch_size, progress=False))

    if torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    result["pool_mb"] = pool_peak_rise_mb(lambda: result.update(peak_mb=peak_rise_mb(ours)))
    if torch.cuda.is_initialized():
        result["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def paper_image(model: torch.nn.Module, dataset: FolderDataset, image_id: str, config: Config, out: Path) -> None:
    """The paper's procedure for one image: decode → loop GETAM → PAMR over all C channels →
    label rule → CRF in this process → PNG."""
    sample = dataset.load(image_id)
    H, W = sample.image.shape[:2]
    device = next(model.parameters()).device
    x = image_to_tensor(resize_image(sample.image, model_input_size((H, W), model_stride(model))))[None].to(device)
    tags = torch.from_numpy(sample.tags)[None].to(device)  # 1×C
    maps = getam_reference(model, x, tags, start_block=config.cam.start_block)  # 1×C×h×w
    pamr_config, rule = config.refine.pamr, config.refine.label
    with torch.no_grad():
        present = (tags > 0)[:, :, None, None]
        raw = normalise_maps(F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=True)) * present
        rgb = torch.from_numpy(sample.image).permute(2, 0, 1)[None].to(device).float()  # 1×3×H×W
        refined = normalise_maps(pamr_reference(rgb, raw, pamr_config.iterations, pamr_config.dilations)) * present
        labels = pseudo_labels(refined, tags, None, alpha=rule.alpha, tau=rule.tau, conflict=rule.conflict,
                               opening=rule.opening)  # 1×H×W
    label, = start_crf_pseudo_labels([sample.image], [labels[0].to(torch.uint8).cpu().numpy()], config.refine.crf)()
    write_label_png(out / f"{image_id}.png", label)


def run_floor(labeler: PseudoLabeler, dataset: FolderDataset, config: Config, executor, out: Path) -> dict:
    """Seconds of each of the chain's parts run alone on the batches ours forms ("getam",
    "pamr", "rule", "crf") and of the work outside them ("decode", "resize", "maps", "write");
    "batches": the images in each batch."""
    model, method, chain = labeler.model, labeler.method, labeler.chain
    t = dict.fromkeys(("getam", "pamr", "rule", "crf", "decode", "resize", "maps", "write"), 0.0)
    images, rules, samples, t["batches"] = [], [], [], []
    batches = iter(same_size_batches(dataset, dataset.ids, config.cam.batch_size, lambda i, reason: print(i, reason)))
    while True:
        seconds, batch = timed(lambda: next(batches, None))
        if batch is None:
            break
        t["decode"] += seconds
        t["batches"].append(len(batch))
        (H, W), = {s.image.shape[:2] for s in batch}
        seconds, inputs = timed(lambda: torch.stack(
            [image_to_tensor(resize_image(s.image, model_input_size((H, W), labeler.stride))) for s in batch]
        ).to(labeler.device))
        t["resize"] += seconds
        tags = torch.from_numpy(np.stack([s.tags for s in batch])).to(labeler.device)  # B×C
        rgb = torch.from_numpy(np.stack([s.image for s in batch])).to(labeler.device).permute(0, 3, 1, 2)  # B×3×H×W
        seconds, maps = timed(lambda: method(model, inputs, tags))  # B×C×h×w
        t["getam"] += seconds
        slots = tag_slots(tags)  # B×K
        with torch.no_grad():
            seconds, slot_maps = timed(lambda: gather_slots(normalise_maps(
                F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=True)), slots))  # B×K×H×W
            t["maps"] += seconds
            seconds, slot_maps = timed(lambda: pamr(rgb.float(), slot_maps, iterations=chain.pamr.iterations,
                                                    dilations=chain.pamr.dilations))  # B×K×H×W
            t["pamr"] += seconds
            seconds, refined = timed(lambda: normalise_maps(scatter_slots(slot_maps, slots, tags.shape[1]))
                                     * (tags > 0)[:, :, None, None])  # B×C×H×W
            t["maps"] += seconds
            rule = chain.rule
            seconds, batch_rule = timed(lambda: pseudo_labels(refined, tags, None, alpha=rule.alpha, tau=rule.tau,
                                                          conflict=rule.conflict, opening=rule.opening))  # B×H×W
            t["rule"] += seconds
        images += [s.image for s in batch]
        rules += list(batch_rule.to(torch.uint8).cpu().numpy())
        samples += batch
    t["crf"], labels = timed(lambda: start_crf_pseudo_labels(images, rules, config.refine.crf, executor=executor)())
    t["write"], _ = timed(lambda: [write_label_png(out / f"{s.id}.png", at_source_size(label, s))
                                   for s, label in zip(samples, labels)])
    return t


# --- reporting -------------------------------------------------------------------------------
def _proc_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def pool_peak_rise_mb(fn: Callable[[], object]) -> float:
    """Run ``fn()``; MB the peak RSS of this process's descendants (the CRF workers, their
    forkserver) rose above their RSS at the start, summed over them (VmHWM, reset through
    /proc/PID/clear_refs; NaN where that is unavailable)."""
    pids = [child.pid for child in psutil.Process().children(recursive=True)]
    start = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            start[pid] = _proc_kb(pid, "VmRSS")
        except OSError:
            pass
    fn()
    if not USE_HWM or not start:
        return float("nan")
    return sum(_proc_kb(pid, "VmHWM") - kb for pid, kb in start.items()) / 1024


def agreement(paper_dir: Path, ours_dir: Path, ids: list[str]) -> float:
    """Share of pixels where the paper's and our label PNGs agree, over ``ids``."""
    same = total = 0
    for image_id in ids:
        a, b = read_label_png(paper_dir / f"{image_id}.png"), read_label_png(ours_dir / f"{image_id}.png")
        same, total = same + int((a == b).sum()), total + a.size
    return same / total


def load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--paper-images", type=int, default=8, help="images the paper's procedure runs on (evenly spaced)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="cam.batch_size of ours and the floor (default: the config's)")
    ap.add_argument("--device", default="cpu", help="where the model and the chain's tensors live (cpu, cuda, ...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allocator", choices=["keep", "default"], default="keep",
                    help="keep: freed memory kept for reuse, as the wsss command runs (wsss.allocator; for the "
                         "whole process, so for all three); default: glibc's own behaviour")
    ap.add_argument("--amp", action="store_true",
                    help="ours and the floor with cam.amp (bfloat16 maps where the device computes bfloat16 "
                         "natively, wsss.precision); the paper's procedure stays float32")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="one more setting on top of the config, e.g. refine.crf.workers=1 (repeatable)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: a 2-block ViT (width 64), 6 images at half the VOC sizes, 2 paper images")
    args = ap.parse_args(argv)
    import timm

    from wsss.allocator import keep_freed_memory

    kept = args.allocator == "keep" and keep_freed_memory()

    from wsss.models.classifier import create_classifier
    from wsss.refine.chain import offline_labeler

    scale = 1.0
    overrides = ["refine.saliency.source=none", "refine.crf.enabled=true", "model.pretrained=null"]
    if args.batch_size is not None:
        overrides.append(f"cam.batch_size={args.batch_size}")
    if args.amp:
        overrides.append("cam.amp=true")
    if args.quick:
        args.images, args.paper_images, scale = 6, 2, 0.5
        overrides += QUICK_MODEL
    overrides += args.set
    torch.set_num_threads(args.threads)
    config = load_config(CONFIG, overrides)
    crf = config.refine.crf
    print(f"load avg at start (1/5/15 min) {load_avg()} on {os.cpu_count()} CPUs")
    print(f"{config.model.name}{' (quick: ' + ', '.join(QUICK_MODEL[1:4]) + ')' if args.quick else ''}, random "
          f"weights, {len(VOC_CLASSES)} classes, {CONFIG.relative_to(ROOT)} + {', '.join(overrides[:2] + args.set)}: batch "
          f"{config.cam.batch_size}, start block {config.cam.start_block}, PAMR {config.refine.pamr.iterations} it., "
          f"CRF {crf.iterations} it. in {crf.workers} workers; torch {torch.__version__}, timm {timm.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; allocator: "
          f"{'freed memory kept for reuse (wsss.allocator)' if kept else 'glibc default'}")
    from wsss.precision import bfloat16_autocast_dtype

    native = bfloat16_autocast_dtype(torch.device(args.device)) is not None
    print(f"maps of ours and the floor: {'bfloat16 autocast (cam.amp)' if args.amp and native else 'float32'}"
          f"{' (--amp: this device has no native bfloat16)' if args.amp and not native else ''}; the paper's: float32")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = write_dataset(tmp / "data", args.images, scale, args.seed)
        sizes = [dataset.load(i).image.shape[:2] for i in dataset.ids]
        paper_ids = dataset.ids[:: max(1, len(dataset.ids) // max(1, args.paper_images))][: args.paper_images]
        paper_sizes = [sizes[dataset.ids.index(i)] for i in paper_ids]
        print(f"{len(sizes)} images, {len(set(sizes))} sizes, mean {np.mean([h * w for h, w in sizes]) / 1e3:.0f} "
              f"kpixels; paper subset {len(paper_ids)} images, mean "
              f"{np.mean([h * w for h, w in paper_sizes]) / 1e3:.0f} kpixels")
        torch.manual_seed(0)
        model = create_classifier(config.model, len(VOC_CLASSES)).eval().to(args.device)
        with crf_executor(crf) as executor:
            # start the pool's workers: one small CRF job per worker
            tiny = np.zeros((8, 8), np.uint8)
            tiny[2:6, 2:6] = 1
            start_crf_pseudo_labels([np.zeros((8, 8, 3), np.uint8)] * crf.workers, [tiny] * crf.workers, crf,
                                    executor=executor)()
            labeler = offline_labeler(model, config.cam, config.refine, dataset, executor=executor)
            labeler([dataset.load(dataset.ids[0])])  # warm-up call, excluded

            n, n_paper = len(dataset.ids), len(paper_ids)
            print(f"\n{'':<6} {'images':>6} {'s/image':>8} {'images/s':>9}  load avg after (1/5/15 min)", flush=True)
            ours = run_ours(labeler, dataset, tmp / "ours", config)
            ours_per = ours["seconds"] / n
            print(f"{'ours':<6} {n:>6} {ours_per:>8.3f} {1 / ours_per:>9.3f}  {load_avg()}  {ours['counts']}", flush=True)
            paper_seconds, _ = timed(lambda: [paper_image(model, dataset, i, config, tmp / "paper") for i in paper_ids])
            paper_per = paper_seconds / n_paper
            print(f"{'paper':<6} {n_paper:>6} {paper_per:>8.3f} {1 / paper_per:>9.3f}  {load_avg()}  (on {n_paper} of the "
                  f"{n} images; CRF in this process)", flush=True)
            floor = run_floor(labeler, dataset, config, executor, tmp / "floor")
            again = run_ours(labeler, dataset, tmp / "ours_again", config)
        same = agreement(tmp / "paper", tmp / "ours", paper_ids)

    parts, outside = ("getam", "pamr", "rule", "crf"), ("decode", "resize", "maps", "write")
    floor_per, outside_per = sum(floor[k] for k in parts) / n, sum(floor[k] for k in outside) / n
    print(f"{'floor':<6} {n:>6} {floor_per:>8.3f} {1 / floor_per:>9.3f}  {load_avg()}")
    again_per = again["seconds"] / n
    print(f"{'again':<6} {n:>6} {again_per:>8.3f} {1 / again_per:>9.3f}  {load_avg()}  (ours again, last: buffers "
          f"of every batch size already in the process)")
    lengths = floor["batches"]
    print(f"\nbatches (ours and the floor): {len(lengths)}, mean {np.mean(lengths):.2f} images, sizes {lengths}")
    print("floor, ms per image: " + ", ".join(f"{k} {floor[k] / n * 1e3:.0f}" for k in parts)
          + (f" (crf: all {n} jobs at once in the pool)" if crf.workers > 1 else " (crf: in this process)"))
    print("outside the floor, ms per image: " + ", ".join(f"{k} {floor[k] / n * 1e3:.0f}" for k in outside)
          + f" (sum {outside_per * 1e3:.0f}; maps = upsample, normalise, slots in and out)")
    print(f"\nours / paper: {paper_per / ours_per:.1f}× (target ≥ 15×)")
    for name, per in (("ours", ours_per), ("ours again", again_per)):
        print(f"{name} over the floor: {per / floor_per:.2f}× (target ≤ 1.2×); over the floor + the work outside it: "
              f"{per / (floor_per + outside_per):.2f}×")
    print(f"paper vs ours labels on the {n_paper} paper images: {100 * same:.2f} % of pixels equal")
    pool = (f"{ours['pool_mb']:.0f} MB in the CRF pool's processes (the same, summed over them)" if crf.workers > 1
            else "no CRF pool (refine.crf.workers=1: the CRF runs in this process)")
    print(f"peak memory of ours: {ours['peak_mb']:.0f} MB rise of {MEMORY_SOURCE} in this process, {pool}"
          + (f"; CUDA peak allocated {ours['cuda_mb']:.0f} MB" if "cuda_mb" in ours else ""))
    print("excluded from ours: model creation, CRF pool start-up, one warm-up chain call on one image")
    print(f"load avg at end (1/5/15 min) {load_avg()} (other processes on the machine skew times)")


if __name__ == "__main__":
    main()
