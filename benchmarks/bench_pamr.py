"""Benchmark: fast PAMR on the present classes vs the paper-style reference on all VOC channels.

    python benchmarks/bench_pamr.py [--size 224] [--present 2] [--channels 20] [--threads 2] [--repeats 3]

One image (batch 1), 10 iterations, dilations 1, 2, 4, 8, 12, 24. The class maps have
``--channels`` channels (20 VOC classes) of which ``--present`` are non-zero, as in the
paper's code, which refines all channels:

- reference: ``tests.reference.pamr.pamr_reference`` on all channels (the paper's
  procedure: neighbours re-gathered by dilated convolutions at every iteration);
- fast:      ``wsss.refine.pamr`` on the present channels only (affinities once, then
  weighted sums of 48 shifted views).

Both run in the same process, interleaved over the repeats; the table gives the minimum and
the median per call. The outputs are compared on the present channels. Target: ratio ≥ 20.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the reference implementation is in the tests: tests/reference

from wsss.refine.pamr import pamr, pamr_affinity  # noqa: E402
from tests.reference.pamr import pamr_reference  # noqa: E402


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--present", type=int, default=2, help="present classes")
    parser.add_argument("--channels", type=int, default=20, help="channels the reference refines")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(args.seed)
    S = args.size
    # A blocky image with texture (so the affinities are not trivial) and smooth-ish maps.
    blocks = torch.rand(1, 3, 8, 8, generator=g) * 255
    image = torch.nn.functional.interpolate(blocks, size=(S, S), mode="nearest")
    image = (image + torch.rand(1, 3, S, S, generator=g) * 20).clamp(0, 255)
    masks = torch.zeros(1, args.channels, S, S)
    present = list(range(3, 3 + args.present))
    coarse = torch.rand(1, args.present, 14, 14, generator=g)
    masks[:, present] = torch.nn.functional.interpolate(coarse, size=(S, S), mode="bilinear", align_corners=True)

    pamr(image, masks[:, present])  # warm-up (allocator, thread pool)
    ref_times, fast_times, aff_times = [], [], []
    diff = 0.0
    for _ in range(args.repeats):
        t_ref, ref = _time(lambda: pamr_reference(image, masks))
        t_fast, fast = _time(lambda: pamr(image, masks[:, present]))
        t_aff, _ = _time(lambda: pamr_affinity(image))
        ref_times.append(t_ref)
        fast_times.append(t_fast)
        aff_times.append(t_aff)
        diff = max(diff, (ref[:, present] - fast).abs().max().item())

    def row(name: str, channels: int, times: list[float]) -> str:
        return f"| {name:<38} | {channels:>8} | {min(times) * 1e3:>9.1f} | {statistics.median(times) * 1e3:>10.1f} |"

    print(f"PAMR, {S}×{S}, batch 1, {args.present} present of {args.channels} channels, 10 iterations, "
          f"{args.threads} threads, {args.repeats} repeats; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")
    print()
    print(f"| {'method':<38} | channels | min (ms) | median (ms) |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 11}|{'-' * 12}|")
    print(row("reference (paper-style), all channels", args.channels, ref_times))
    print(row("fast, present channels", args.present, fast_times))
    print(row("  of which: affinities (once)", args.present, aff_times))
    print()
    print(f"speed-up (reference / fast): {min(ref_times) / min(fast_times):.1f}x on the minima, "
          f"{statistics.median(ref_times) / statistics.median(fast_times):.1f}x on the medians (target >= 20x)")
    print(f"max |reference - fast| on the present channels: {diff:.3g}")


if __name__ == "__main__":
    main()
