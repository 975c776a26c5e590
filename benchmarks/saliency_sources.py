"""Measurement: the label rule's mIoU with each saliency source, on images that have masks.

    python benchmarks/saliency_sources.py --run RUN --config configs/demo.yaml [--split train]
        [--images 120] [--segmenter RUN/self_training/segmenter/segmenter.pt] [--taus 0.9 0.97 1.0]
        [--thresholds 0.3 0.5 0.7]

For ``--images`` evenly spaced images of the split, the GETAM maps of the run's classifier go
through the config's chain up to PAMR once; then the label rule (the config's α, opening and
conflict map; no CRF) runs with every source and completion quantile τ:

- none: background from α alone (τ still sets which pixels the conflict map's classes claim);
- tokencut: the normalized cut on the classifier's last-block keys (the config's tau, objects);
- segmenter: the foreground of a segmenter (``--segmenter``, e.g. self-training's first round)
  at the config's ``refine.saliency.self_training`` scales (or ``--scales``) and flip, binarised
  at the config's threshold or at each of ``--thresholds``, with or without its two-label CRF
  (``--crf``);
- ground truth: the masks' foreground as saliency, a ceiling for analysis only (no run of wsss
  ever uses masks as saliency).

Prints one line per source and τ: label mIoU, and the saliency's foreground IoU against the
masks. The masks only score; they never enter a label except in the ceiling row.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from wsss.config import load_config
from wsss.data import open_dataset
from wsss.data.label_png import IGNORE_INDEX, read_label_png
from wsss.data.tensors import image_to_tensor
from wsss.eval.confusion import ConfusionMatrix
from wsss.eval.stages import evenly_spaced
from wsss.models.vit_geometry import model_input_size, model_stride
from wsss.models.checkpoint import load_classifier, load_segmenter
from wsss.predict import Predictor, start_foreground_masks
from wsss.refine.chain import offline_labeler
from wsss.refine.crf import crf_executor
from wsss.refine.label_rule import pseudo_labels
from wsss.refine.saliency import NoSaliency, TokenCutSaliency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with classifier/classifier.pt")
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--segmenter", type=Path, default=None, help="segmenter.pt whose foreground is a source")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.9, 0.97, 1.0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=None,
                        help="foreground-probability thresholds of the segmenter source (default: the config's "
                             "refine.saliency.self_training.threshold)")
    parser.add_argument("--scales", type=float, nargs="+", default=None,
                        help="the segmenter source's input scales (default: refine.saliency.self_training.scales)")
    parser.add_argument("--crf", choices=["config", "off", "on", "both"], default="config",
                        help="the segmenter source's two-label CRF (config: refine.saliency.self_training.crf)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(args.config, [f"data.root={args.run / 'data'}", *args.overrides])
    model, classes, _ = load_classifier(args.run / "classifier" / "classifier.pt")
    dataset = open_dataset(config.data, args.split)
    labeler = offline_labeler(model, config.cam, config.refine, dataset, crf=False, saliency=NoSaliency())
    rule = config.refine.label
    settings = config.refine.saliency
    tokencut = TokenCutSaliency(model, tau=settings.tokencut_tau, eps=settings.tokencut_eps,
                                objects=settings.tokencut_objects)
    predictor = None
    if args.segmenter is not None:
        segmenter, _, _ = load_segmenter(args.segmenter)
        predictor = Predictor(segmenter, args.scales or settings.self_training.scales, settings.self_training.flip)
    crf_modes = {"config": [settings.self_training.crf], "off": [False], "on": [True], "both": [False, True]}[args.crf]

    scores: dict[str, ConfusionMatrix] = {}
    overlap: dict[str, list[int]] = {}
    ids = evenly_spaced(dataset.ids, args.images)
    started = time.perf_counter()
    with crf_executor(config.refine.crf if any(crf_modes) else None) as executor:
        for start in range(0, len(ids), 8):
            batch = [dataset.load(i) for i in ids[start:start + 8]]
            result = labeler(batch)
            maps, (H, W) = result.refined, result.refined.shape[-2:]
            tags = torch.from_numpy(np.stack([s.tags for s in batch]))
            truth = [s.mask if s.mask is not None else read_label_png(dataset.mask_path(s.id)) for s in batch]
            foreground = [(t > 0) & (t != IGNORE_INDEX) for t in truth]

            def score(name: str, saliency: torch.Tensor | None, tau: float) -> None:
                labels = pseudo_labels(maps, tags, saliency, alpha=rule.alpha, tau=tau, conflict=rule.conflict,
                                       opening=rule.opening)
                matrix = scores.setdefault(name, ConfusionMatrix(len(classes) + 1))
                for label, gt in zip(labels, truth):
                    matrix.update(label.numpy().astype(np.uint8), gt)

            def count(name: str, saliency: torch.Tensor) -> None:
                both = overlap.setdefault(name, [0, 0])
                for mask, fg in zip(saliency.numpy(), foreground):
                    both[0] += int((mask & fg).sum())
                    both[1] += int((mask | fg).sum())

            for tau in args.taus:  # τ also sets the conflict map's claims, with or without saliency
                score(f"none, tau {tau}", None, tau)
            size = model_input_size((H, W), model_stride(model))
            inputs = torch.stack([image_to_tensor(s.image) for s in batch]) if size == (H, W) else None
            sources = {"ground truth (ceiling)": torch.from_numpy(np.stack(foreground))}
            if inputs is not None:
                with torch.no_grad():
                    sources["tokencut"] = torch.stack(tokencut(batch, inputs, size=(H, W)))
            if predictor is not None:
                images = [s.image for s in batch]
                probs = predictor(images)
                for threshold in args.thresholds or [settings.self_training.threshold]:
                    for crf in crf_modes:
                        masks = start_foreground_masks(images, probs, threshold, config.refine.crf if crf else None,
                                                       executor if crf else None)()
                        sources[f"segmenter > {threshold:g}{' +CRF' if crf else ''}"] = torch.from_numpy(np.stack(masks))
            for name, saliency in sources.items():
                count(name, saliency)
                for tau in args.taus:
                    score(f"{name}, tau {tau}", saliency, tau)
    print(f"{len(ids)} images of {config.data.root} ({args.split}), {time.perf_counter() - started:.0f} s; "
          f"label rule alpha {rule.alpha}, opening {rule.opening}, conflict {rule.conflict}; no CRF")
    print(f"{'source':<34}{'label mIoU':>12}{'saliency fg IoU':>18}")
    for name, matrix in scores.items():
        source = name.split(", tau")[0]
        fg = overlap.get(source)
        print(f"{name:<34}{100 * matrix.miou:12.1f}" + (f"{100 * fg[0] / max(fg[1], 1):18.1f}" if fg else ""))


if __name__ == "__main__":
    main()
