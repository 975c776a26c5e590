"""The head table: every segmentation head trained on the same pseudo-labels for the same steps.

    python benchmarks/compare_heads.py --run runs/demo --out /tmp/heads

From a finished demo run (``make demo``): its pseudo-labels (RUN/pseudo_labels), its classifier
(the backbone's start) and its settings (RUN/config.yaml: two stage, steps, optimizer, crops,
predict scales/flip/CRF). Each head of ``train.segmenter.head`` is trained two stage in a
process of its own (so its peak memory is its own), then scored on the validation split with
the run's predict settings, with and without the CRF. Every head gets the same width
(``--width``: DPT features, SETR channels, SegFormer embed, Mask2Former hidden; SETR-MLA's
streams half of it) so the table compares designs, not sizes. Prints a markdown table: mIoU
with and without the CRF, parameters of the head and in all, seconds per training step, peak
memory (max RSS of the process), and writes OUT/heads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HEADS = ("dpt", "setr_pup", "setr_mla", "segformer", "mask2former")


def width_overrides(head: str, width: int) -> list[str]:
    return {"dpt": [f"train.segmenter.dpt.features={width}"],
            "setr_pup": [f"train.segmenter.setr_pup.channels={width}"],
            "setr_mla": [f"train.segmenter.setr_mla.channels={width}",
                         f"train.segmenter.setr_mla.stream_channels={max(1, width // 2)}"],
            "segformer": [f"train.segmenter.segformer.embed={width}"],
            "mask2former": [f"train.segmenter.mask2former.hidden={width}"]}[head]


def child(args) -> None:
    """Train and score one head; writes OUT/HEAD/result.json."""
    import torch

    from wsss.config import load_config
    from wsss.layout import RunLayout
    from wsss.models.checkpoint import load_segmenter
    from wsss.steps.segmenter_step import score_segmenter, train_segmenter
    from wsss.train.run_control import RunControl

    run, out = args.run.resolve(), args.out.resolve() / args.child
    overrides = [f"run_dir={out}", f"data.root={run / 'data'}", "train.segmenter.mode=two_stage",
                 f"train.segmenter.labels_dir={run / 'pseudo_labels'}", f"train.segmenter.head={args.child}",
                 f"train.segmenter.init={run / 'classifier' / 'classifier.pt'}",
                 *width_overrides(args.child, args.width)]
    if args.steps:
        overrides.append(f"train.segmenter.steps={args.steps}")
    if args.threads:
        overrides.append(f"train.segmenter.threads={args.threads}")
    config = load_config(run / "config.yaml", overrides)
    files = RunLayout(out).segmenter("two_stage")
    started = time.perf_counter()
    checkpoint = train_segmenter(config, RunControl(restart=True, progress=False))
    train_seconds = time.perf_counter() - started
    result = score_segmenter(config, checkpoint, progress=False)
    segmenter, _, _ = load_segmenter(checkpoint)
    history = torch.load(checkpoint, weights_only=True)["history"]  # one entry per interval, "step" cumulative
    lengths = [h["step"] - (history[i - 1]["step"] if i else 0) for i, h in enumerate(history)]
    steps = history[-1]["step"]
    per_step = sum(h["s_per_step"] * n for h, n in zip(history, lengths)) / steps
    metrics = json.loads(files.metrics.read_text())
    with_crf = metrics["segmenter"]["mIoU"]
    without = metrics.get("segmenter_without_crf", metrics["segmenter"])["mIoU"]
    summary = {"head": args.child, "steps": steps, "mIoU_crf": with_crf, "mIoU": without,
               "head_params": sum(p.numel() for p in segmenter.decoder.parameters()),
               "params": sum(p.numel() for p in segmenter.parameters()), "s_per_step": per_step,
               "train_seconds": train_seconds, "final_seg_loss": history[-1].get("seg"),
               "settings": config.train.segmenter.head_config.model_dump(mode="json")}
    assert result is not None
    (out / "result.json").write_text(json.dumps(summary, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished demo run (runs/demo)")
    parser.add_argument("--out", type=Path, required=True, help="where each head's run goes")
    parser.add_argument("--heads", default=",".join(HEADS), help=f"comma-separated, of {', '.join(HEADS)}")
    parser.add_argument("--width", type=int, default=64, help="every head's width (the demo's DPT features: 64)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the run's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    run = args.run.resolve()
    for needed in (run / "config.yaml", run / "data", run / "pseudo_labels", run / "classifier" / "classifier.pt"):
        if not needed.exists():
            sys.exit(f"error: {needed} not found (run `make demo` first, or give --run)")
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    unknown = sorted(set(heads) - set(HEADS))
    if unknown:
        sys.exit(f"error: unknown heads {unknown}; expected some of {', '.join(HEADS)}")
    rows = []
    for head in heads:
        command = [sys.executable, __file__, "--run", str(run), "--out", str(args.out), "--child", head,
                   "--width", str(args.width), *(["--steps", str(args.steps)] if args.steps else []),
                   *(["--threads", str(args.threads)] if args.threads else [])]
        print(f"{head}: training and scoring ...", flush=True)
        process = subprocess.Popen(command)
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"{head}: failed (exit {os.waitstatus_to_exitcode(status)})")
            continue
        row = json.loads((args.out.resolve() / head / "result.json").read_text())
        row["peak_rss_mb"] = usage.ru_maxrss / 1024
        rows.append(row)
        print(f"{head}: mIoU {100 * row['mIoU_crf']:.1f} with CRF, {100 * row['mIoU']:.1f} without, "
              f"{row['s_per_step']:.2f} s/step, {row['peak_rss_mb']:.0f} MB", flush=True)
    (args.out / "heads.json").write_text(json.dumps(rows, indent=1))
    print(f"\nsame pseudo-labels ({run / 'pseudo_labels'}), {rows[0]['steps'] if rows else '?'} steps each, "
          f"width {args.width}\n")
    print("| head | mIoU +CRF | mIoU | head params | all params | s/step | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['head']} | {100 * row['mIoU_crf']:.1f} | {100 * row['mIoU']:.1f} | {row['head_params'] / 1e6:.2f} M "
              f"| {row['params'] / 1e6:.2f} M | {row['s_per_step']:.2f} | {row['peak_rss_mb'] / 1024:.2f} GB |")
    return 0 if len(rows) == len(heads) else 1


if __name__ == "__main__":
    sys.exit(main())
