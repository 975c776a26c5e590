"""The attention kernel a training step should use: timm's fused ``scaled_dot_product_attention``
against the explicit softmax(QKᵀ/√d)·V, under the trainers' own precision (issue 30).

    python benchmarks/attention_kernel.py [--config configs/demo.yaml] [--repeats 3] [--steps 10] [--amp | --no-amp]

Builds the config's classifier and segmenter (random weights, C = 6 classes) and times, each
kernel in turn and the pair repeated ``--repeats`` times (interleaved, so a busy machine slows
both alike), the mean of ``--steps`` steps of:

    classifier step   forward + multi-label loss + backward + AdamW, train.classifier.batch_size
                      images at model.img_size
    segmenter step    forward + cross-entropy + backward + AdamW, train.segmenter.batch_size crops
                      of train.segmenter.crop_size (default model.img_size)
    segmenter predict forward without gradient of 16 images at 1.5 × model.img_size

``--amp`` (default: the config's train.classifier.amp) runs them under
``wsss.precision.mixed_precision``, i.e. bfloat16 only where this processor computes it
natively. Prints the minimum per kernel and fused / explicit (above 1: explicit is faster).
``wsss.precision.explicit_attention_for_training`` switches training to the explicit form on a
CPU under bfloat16 only; this script is how to check that rule on another processor.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from wsss.config import load_config  # noqa: E402
from wsss.models.classifier import create_classifier  # noqa: E402
from wsss.models.segmentation_model import create_segmenter  # noqa: E402
from wsss.precision import autocast_dtype, mixed_precision  # noqa: E402
from stage_times import processor  # noqa: E402  (the processor's name, as the stage table prints it)

CLASSES = 6
CPU = torch.device("cpu")


def set_fused(model: torch.nn.Module, fused: bool) -> None:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


def mean_seconds(fn, steps: int) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - started) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()
    config = load_config(args.config, [])
    amp = config.train.classifier.amp if args.amp is None else args.amp
    autocast, _ = mixed_precision(CPU, amp)
    dtype = autocast_dtype(CPU, amp)
    torch.manual_seed(0)
    size, seg = config.model.img_size, config.train.segmenter
    crop = seg.crop_size or size

    classifier = create_classifier(config.model, CLASSES)
    c_opt = torch.optim.AdamW(classifier.parameters(), lr=1e-4)
    c_images, c_tags = torch.randn(config.train.classifier.batch_size, 3, size, size), torch.rand(
        config.train.classifier.batch_size, CLASSES).round()
    segmenter = create_segmenter(config.model, seg.head, seg.head_config, CLASSES)
    s_opt = torch.optim.AdamW(segmenter.parameters(), lr=1e-4)
    s_images = torch.randn(seg.batch_size, 3, crop, crop)
    s_labels = torch.randint(0, CLASSES + 1, (seg.batch_size, crop, crop))
    p_size = int(round(size * 1.5 / segmenter.stride)) * segmenter.stride
    p_images = torch.randn(16, 3, p_size, p_size)

    def classifier_step():
        classifier.train()
        with autocast():
            loss = F.multilabel_soft_margin_loss(classifier(c_images).float(), c_tags)
        c_opt.zero_grad(set_to_none=True)
        loss.backward()
        c_opt.step()

    def segmenter_step():
        segmenter.train()
        with autocast():
            loss = F.cross_entropy(segmenter(s_images).seg.float(), s_labels)
        s_opt.zero_grad(set_to_none=True)
        loss.backward()
        s_opt.step()

    @torch.no_grad()
    def segmenter_predict():
        segmenter.eval()
        with autocast():
            segmenter(p_images)

    cases = [("classifier step", classifier, classifier_step), ("segmenter step", segmenter, segmenter_step),
             ("segmenter predict", segmenter, segmenter_predict)]
    print(f"processor: {processor()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"precision: {str(dtype).removeprefix('torch.') if dtype else 'float32'}")
    print(f"{'case':<20}{'fused ms':>10}{'explicit ms':>13}{'fused/explicit':>16}")
    for name, model, fn in cases:
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for fused in (True, False):
                set_fused(model, fused)
                times[fused].append(mean_seconds(fn, args.steps))
        fused_s, explicit_s = min(times[True]), min(times[False])
        print(f"{name:<20}{fused_s * 1000:>10.1f}{explicit_s * 1000:>13.1f}{fused_s / explicit_s:>15.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
