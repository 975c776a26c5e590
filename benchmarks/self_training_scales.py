"""Measurement: self-training's second round with the first-round segmenter's foreground taken
at other input scales, within one finished run.

    python benchmarks/self_training_scales.py --run RUN [--scales 1.0 1.25 1.25,1.5] [--split train]

RUN is a pipeline run made with ``refine.saliency.source: segmenter`` (it holds
RUN/config.yaml, RUN/self_training/segmenter/segmenter.pt and the first round's saved maps,
RUN/self_training/pseudo_labels/maps). For each scale set: the foreground maps are written to a
fresh temporary folder (timed), the second round's labels are made from the saved maps with
them (the run's label rule and CRF), and scored against the masks. The run's own folders are
not touched. Prints one line per scale set: seconds for the maps, label mIoU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from wsss.config import load_config
from wsss.data import open_dataset
from wsss.eval.evaluate import evaluate_label_dir
from wsss.layout import RunLayout
from wsss.models.checkpoint import load_segmenter
from wsss.predict import Predictor
from wsss.writers.prediction_pngs import write_foreground_maps
from wsss.refine.chain import saved_maps_labeler
from wsss.refine.crf import crf_executor
from wsss.writers.label_pngs import write_pseudo_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--scales", nargs="+", default=["1.0", "1.25", "1.25,1.5"],
                        help="scale sets, each comma-separated")
    parser.add_argument("--split", default="train")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = RunLayout(args.run)
    segmenter, _, _ = load_segmenter(run.self_training.segmenter.final)
    for text in args.scales:
        scales = [float(x) for x in text.split(",")]
        with tempfile.TemporaryDirectory() as tmp:
            maps_dir, labels_dir = Path(tmp) / "saliency", Path(tmp) / "labels"
            maps_dir.mkdir()
            config = load_config(run.config, [f"data.root={run.data}", f"data.saliency_dir={maps_dir}",
                                              "refine.saliency.source=folder"])
            started = time.perf_counter()
            write_foreground_maps(Predictor(segmenter, scales, config.refine.saliency.self_training.flip),
                                  open_dataset(config.data, args.split), maps_dir,
                                  threshold=config.refine.saliency.self_training.threshold, progress=False)
            seconds = time.perf_counter() - started
            dataset = open_dataset(config.data, args.split)  # now with the maps as its saliency folder
            with crf_executor(config.refine.crf) as executor:
                labeler = saved_maps_labeler(run.self_training.pseudo_labels / "maps", config.refine, dataset,
                                             executor=executor)
                write_pseudo_labels(labeler, dataset, labels_dir, batch_size=16, progress=False)
            score = evaluate_label_dir(labels_dir, dataset, progress=False)
        print(f"scales {scales}: foreground maps {seconds:.0f} s, second-round labels mIoU "
              f"{100 * score.confusion.miou:.2f} ({len(dataset.ids) - len(score.missing)} images)", flush=True)


if __name__ == "__main__":
    main()
