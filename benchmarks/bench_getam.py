"""Benchmark: batched GETAM vs the paper's per-image per-class loop vs the backward floor.

    python benchmarks/bench_getam.py [--batch-sizes 1 8 32] [--threads 2] [--device cpu] [--amp]

DeiT-S/16 (random weights) at 224, two tagged classes per image. Per batch size, measured in
the same process and interleaved over the repeats (minimum per-image time is reported):

- forward:  one forward, no grad, timm's fused attention (for scale);
- floor:    one forward with what GETAM captures (blocks ≥ start; the attention outputs, fused
            attention kept: ``ClsRowCapture``), then per tag slot one plain ``autograd.grad``
            over the whole batch w.r.t. those tensors (the least backward work of this path);
- batched:  ``wsss.getam`` (one forward + one vmapped backward over the K tag slots + maps);
- loop:     ``tests.reference.getam.getam_reference`` (per image, per class
            ``backward(retain_graph=True)``); at large batches only ``--loop-images`` images are
            looped and the per-image time extrapolated (said so in the table).

--device (default cpu; e.g. cuda): the model and the inputs are on that device, and every timed
call is bracketed by a device synchronisation (``torch.cuda.synchronize``) so GPU times are the
kernels' real times, not their launch. ``--clock cpu`` is CPU-only.

--amp: every measured procedure (forward, fwd+cap, floor, batched, loop, and the warm-up) runs
under the same ``torch.autocast`` with ``wsss.precision.bfloat16_autocast_dtype(device)``, the
dtype of the offline maps' ``cam.amp``: bfloat16 where the device computes it natively (a CPU
with AVX512-BF16/AMX, a CUDA GPU with bf16), else float32 (said so in the header). Default off
(float32), as the documented numbers were measured.

Peak memory on the CPU: each procedure runs once more in a fresh process (spawned after the timings),
and the rise of that process's peak RSS during the call is reported (``VmHWM`` from
/proc/self/status, reset before the call through /proc/self/clear_refs; psutil sampling when
that is unavailable). A fresh process, because the allocator keeps freed memory mapped and an
earlier, bigger call would hide the peak of a later one. On a CUDA device the host RSS would
miss the tensors, so the device's memory is reported instead: the rise of
``torch.cuda.max_memory_allocated`` above the allocation at the call's start
(``reset_peak_memory_stats`` before it), once per procedure in this process after the timings
(the caching allocator does not hide a peak of *allocated* memory). On other devices (e.g. mps)
memory is not measured. Targets: loop/batched ≥ 10 at batch 8, batched/floor ≤ 1.3.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import timm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the reference implementation is in the tests: tests/reference

from wsss.attention.batched_grad import slot_selector  # noqa: E402
from wsss.attention.slots import tag_slots  # noqa: E402
from wsss.attention.base import eval_mode  # noqa: E402
from wsss.attention.getam import GETAM, getam  # noqa: E402
from wsss.models.checkpoint import resolve_device  # noqa: E402
from wsss.precision import bfloat16_autocast_dtype  # noqa: E402
from tests.reference.getam import getam_reference  # noqa: E402


# --- device and precision --------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so the clock reads real times."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def precision_line(device: torch.device, amp: bool, dtype: torch.dtype | None, scaled: bool = False) -> str:
    """The header line saying which precision actually runs (dtype: the autocast dtype, None = float32)."""
    if dtype is not None:
        return (f"precision: {str(dtype).removeprefix('torch.')} autocast on {device.type}"
                + (" with loss scaling (GradScaler)" if scaled else ""))
    if amp:
        return f"precision: float32 (--amp: no native bfloat16 on {device.type} here)"
    return "precision: float32"


def map_autocast(device: torch.device, amp: bool) -> tuple[Callable[[], object], torch.dtype | None]:
    """(autocast context factory, dtype) of the offline maps with ``cam.amp`` = ``amp`` on ``device``."""
    dtype = bfloat16_autocast_dtype(device) if amp else None
    if dtype is None:
        return nullcontext, None
    return (lambda: torch.autocast(device.type, dtype=dtype)), dtype


# --- peak memory -----------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _can_reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kb("VmHWM")
        return True
    except OSError:
        return False


USE_HWM = _can_reset_hwm()
MEMORY_SOURCE = ("VmHWM of /proc/self/status (reset via /proc/self/clear_refs)" if USE_HWM
                 else "psutil RSS sampled every 1 ms")


def _trim_heap() -> None:
    """Give freed heap back to the OS so earlier calls do not hide this call's peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rise_mb(fn: Callable[[], object]) -> float:
    """MB the process's peak RSS rises above its RSS at the start of ``fn()``."""
    _trim_heap()
    if USE_HWM:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = _status_kb("VmRSS")
        fn()
        return (_status_kb("VmHWM") - start) / 1024
    import psutil

    proc, peak, done = psutil.Process(), [0], threading.Event()
    start = proc.memory_info().rss

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return (max(peak[0], proc.memory_info().rss) - start) / 2**20


def peak_device_mb(fn: Callable[[], object], device: torch.device) -> float:
    """MB the CUDA device's peak allocated memory rises above its allocation at the start of ``fn()``."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - start) / 2**20


def memory_source(device: torch.device) -> str | None:
    """What the memory columns measure on ``device`` (None: not measured there)."""
    if device.type == "cpu":
        return f"{MEMORY_SOURCE} during one call in a fresh process"
    if device.type == "cuda":
        return ("torch.cuda.max_memory_allocated above the allocation at the call's start (device memory; "
                "reset_peak_memory_stats before each call, in this process after the timings)")
    return None


def _memory_child(name: str, B: int, args: argparse.Namespace) -> float:
    """In a fresh process: build the model and inputs, then the peak rise of one call."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, (x, labels, sub) = _model(args, device), _inputs(B, args, device)
    fns = _procedures(model, x, labels, sub, map_autocast(device, args.amp)[0])
    return peak_rise_mb(fns[name])


def memory_mb(name: str, B: int, args: argparse.Namespace) -> float:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_memory_child, (name, B, args))


# --- the measured procedures ----------------------------------------------------------------
def forward_only(model, x, labels):
    with torch.no_grad():
        model(x)


def floor(model, x, labels):
    """One forward (blocks ≥ start captured) + per tag slot one plain backward of the batch."""
    slots = tag_slots(labels)
    with eval_mode(model), torch.enable_grad(), GETAM().capture(model) as cap:  # what batched GETAM captures
        logits = model(x)
        sel = slot_selector(slots, logits.shape[1], logits.dtype)
        K = slots.shape[1]
        for k in range(K):
            torch.autograd.grad(logits, cap.grad_targets, sel[k], retain_graph=k < K - 1)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = CLOCKS["wall"]


def timed(fn: Callable[[], object], device: torch.device = torch.device("cpu")) -> float:
    """Seconds of ``fn()``, the device synchronised before each clock reading."""
    synchronize(device)
    t0 = CLOCK()
    fn()
    synchronize(device)
    return CLOCK() - t0


def _model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(args.model, pretrained=False, num_classes=args.num_classes,
                             img_size=args.img_size).eval().to(device)


def _inputs(B: int, args: argparse.Namespace, device: torch.device):
    """Made on the CPU (the same values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(B)
    x = torch.randn(B, 3, args.img_size, args.img_size, generator=g)
    labels = torch.zeros(B, args.num_classes)
    for i in range(B):
        labels[i, torch.randperm(args.num_classes, generator=g)[: args.tags]] = 1
    n_loop = B if B <= args.loop_full_up_to else min(B, args.loop_images)
    return x.to(device), labels.to(device), list(range(n_loop))


def _procedures(model, x, labels, sub, autocast=nullcontext) -> dict[str, Callable[[], object]]:
    """The measured calls, each under ``autocast()`` (the same for all, so ratios are like for like)."""
    def under_autocast(fn: Callable[[], object]) -> Callable[[], object]:
        def run():
            with autocast():
                return fn()
        return run

    return {
        "forward": under_autocast(lambda: forward_only(model, x, labels)),
        "forward_grad": under_autocast(lambda: _forward_grad(model, x)),
        "floor": under_autocast(lambda: floor(model, x, labels)),
        "batched": under_autocast(lambda: getam(model, x, labels)),
        "loop": under_autocast(lambda: getam_reference(model, x, labels, image_indices=sub)),
    }


def bench_batch(model, B: int, args, device: torch.device, autocast=nullcontext) -> dict:
    x, labels, sub = _inputs(B, args, device)
    n_loop = len(sub)
    runs = _procedures(model, x, labels, sub, autocast)
    runs["batched"]()  # warm-up (under the same autocast)
    synchronize(device)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for name, fn in runs.items():
            if name == "loop" and r >= args.loop_repeats:
                continue
            times[name].append(timed(fn, device))
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    # per image; the loop's subset time is extrapolated: forward + per-image cost × B
    loop_total = best["forward_grad"] + (best["loop"] - best["forward_grad"]) * B / n_loop
    res = {
        "B": B,
        "forward": best["forward"] / B,
        "forward_grad": best["forward_grad"] / B,
        "floor": best["floor"] / B,
        "batched": best["batched"] / B,
        "batched_median": med["batched"] / B,
        "floor_median": med["floor"] / B,
        "loop": loop_total / B,
        "loop_images": n_loop,
    }
    if args.memory and device.type == "cpu":
        res["mem"] = {k: memory_mb(k, B, args) for k in ("floor", "batched", "loop")}
    elif args.memory and device.type == "cuda":
        res["mem"] = {k: peak_device_mb(runs[k], device) for k in ("floor", "batched", "loop")}
    return res


def _forward_grad(model, x):
    with eval_mode(model), torch.enable_grad(), GETAM().capture(model):
        model(x)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="deit_small_patch16_224")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=20)
    ap.add_argument("--tags", type=int, default=2, help="tagged classes per image")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--loop-repeats", type=int, default=1, help="repeats of the slow loop")
    ap.add_argument("--loop-full-up-to", type=int, default=8,
                    help="batch sizes up to this run the loop over every image")
    ap.add_argument("--loop-images", type=int, default=4,
                    help="larger batches run the loop on this many images, extrapolated")
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="skip the peak-memory measurements (one fresh process per call)")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="cpu = process CPU time of all threads: with --threads 1 it is robust "
                         "to other processes competing for the cores (--device cpu only)")
    ap.add_argument("--device", default="cpu",
                    help="where the model and inputs are (cpu, cuda, cuda:1, ...); timings synchronise it")
    ap.add_argument("--amp", action="store_true",
                    help="every procedure under bfloat16 autocast where the device computes bfloat16 natively "
                         "(wsss.precision.bfloat16_autocast_dtype, as cam.amp); else float32, said so")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device, "--device")
    except ValueError as e:
        ap.error(str(e))
    if args.clock == "cpu" and device.type != "cpu":
        ap.error(f"--clock cpu measures host CPU time, not the work of --device {args.device}: use --clock wall")
    args.device = str(device)
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    autocast, dtype = map_autocast(device, args.amp)

    torch.set_num_threads(args.threads)
    model = _model(args, device)
    where = (f"device {device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
             else f"device {device}")
    print(f"{args.model} (random weights) at {args.img_size}, {args.tags} tags/image, "
          f"{args.num_classes} classes, torch {torch.__version__}, timm {timm.__version__}, {where}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load avg {os.getloadavg()[0]:.2f}")
    print(precision_line(device, args.amp, dtype) + " (all procedures alike)")
    source = memory_source(device)
    memory = ("off (--no-memory)" if not args.memory
              else f"MB rise of {source}" if source is not None
              else f"not measured on {device.type} (no peak-allocation counter; host RSS would miss the tensors)")
    print(f"times: {args.clock}-clock ms per image, min of {args.repeats} interleaved repeats "
          f"(loop: {args.loop_repeats}){', device synchronised around each call' if device.type != 'cpu' else ''}; "
          f"peak memory: {memory}\n")
    head = (f"{'batch':>5} {'forward':>8} {'fwd+cap':>8} {'floor':>8} {'batched':>8} {'loop':>9} "
            f"{'loop/bat':>8} {'bat/floor':>9} {'mem floor':>9} {'mem bat':>8} {'mem loop':>8}")
    print(head)
    print("-" * len(head))
    notes, checks = [], []
    for B in args.batch_sizes:
        r = bench_batch(model, B, args, device, autocast)
        star = "*" if r["loop_images"] < B else " "
        if star == "*":
            notes.append(f"* batch {B}: loop timed on {r['loop_images']} of {B} images (each "
                         f"pair's backward still spans the whole batch), per-image time "
                         f"extrapolated as forward + (subset time - forward) × {B}/"
                         f"{r['loop_images']}")
        m = r.get("mem", {"floor": float("nan"), "batched": float("nan"), "loop": float("nan")})
        print(f"{B:>5} {r['forward'] * 1e3:>8.1f} {r['forward_grad'] * 1e3:>8.1f} "
              f"{r['floor'] * 1e3:>8.1f} "
              f"{r['batched'] * 1e3:>8.1f} {r['loop'] * 1e3:>8.1f}{star} "
              f"{r['loop'] / r['batched']:>8.1f} {r['batched'] / r['floor']:>9.2f} "
              f"{m['floor']:>9.0f} {m['batched']:>8.0f} {m['loop']:>8.0f}", flush=True)
        notes.append(f"  batch {B}: median batched {r['batched_median'] * 1e3:.1f} ms, median "
                     f"floor {r['floor_median'] * 1e3:.1f} ms per image "
                     f"(median ratio {r['batched_median'] / r['floor_median']:.2f})")
        speedup, overhead = r["loop"] / r["batched"], r["batched"] / r["floor"]
        checks.append(f"  batch {B}: batched/floor {overhead:.2f} "
                      f"({'meets' if overhead <= 1.3 else 'MISSES'} ≤ 1.3)"
                      + (f", loop/batched {speedup:.1f} ({'meets' if speedup >= 10 else 'MISSES'}"
                         " ≥ 10)" if B == 8 else ""))
    print("\ncolumns: forward = no-grad fused forward; fwd+cap = forward with grad and blocks ≥ "
          "L/2 captured as GETAM captures them (fused attention kept); floor = fwd+cap + one plain backward per tag slot; batched = "
          "wsss.getam; loop = paper's per-(image, class) backward loop")
    print("\n".join(notes))
    print("targets:\n" + "\n".join(checks))
    print(f"load avg at end {os.getloadavg()[0]:.2f} (other processes on the machine skew times)")


if __name__ == "__main__":
    main()
