"""Each pipeline stage of a finished run against its floor: where the minutes go (issue 30).

    python benchmarks/stage_times.py --run runs/demo [--repeats 3] [--json out.json]

Reads RUN/report.json (the seconds each step of the ``pipeline`` flow took) and RUN/config.yaml,
counts the images each stage handled, then measures on this machine, in this process, the
stage's *floor*: the arithmetic the stage cannot do without, at the run's own settings (batch
sizes, input sizes, views, precision, threads), each timed alone on a batch and multiplied by
the stage's count:

    classifier        epochs trained (history.json) × steps × (forward + backward + AdamW of one batch at model.img_size)
                      + epochs × validation images × (forward of one image, in a batch)
    self_training     round-1 labels: training images × (maps of cam's views + CRF / refine.crf.workers)
                      + round-1 segmenter: self_training.steps × (one training step)
                      + its foreground: (training + validation images) × (its prediction views)
    pseudo_labels     training images × CRF / workers (the second round reuses round 1's maps),
                      or × (maps + CRF / workers) when there is no round 1
    segmenter         train.segmenter.steps × (one training step: forward, loss, backward, AdamW)
    evaluation        validation images × (predict's views + CRF / workers when predict.crf)
    stage table       not given a floor (its work depends on the methods; its seconds are shown)

The CRF's floor is its time per image in this process divided by the pool's workers (it is
perfect parallelism: on 2 cores with 2 workers it also competes with torch). What the floor
leaves out is the stage's overhead: decoding, PAMR and the label rule, writing PNGs, scoring,
checkpoints, starting processes, the flow's bookkeeping. ratio = seconds / floor (1.0: the stage
is all arithmetic; the floor itself is what a faster model, fewer epochs or lower resolution would
cut). The same run measured twice gives floors within a few percent on an idle machine; on a busy
one the floor rises too (run it alone). Prints one row per stage and the machine (processor,
threads, bfloat16).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsss.attention.views import configured_map_method  # noqa: E402
from wsss.config import Config, GuidedFilterConfig, load_config  # noqa: E402
from wsss.data import open_dataset  # noqa: E402
from wsss.data.tensors import image_to_tensor  # noqa: E402
from wsss.layout import RunLayout  # noqa: E402
from wsss.models.checkpoint import load_classifier, load_segmenter  # noqa: E402
from wsss.models.classifier import create_classifier  # noqa: E402
from wsss.precision import (autocast_dtype, cpu_has_native_bf16, explicit_attention_for_training,  # noqa: E402
                            mixed_precision)
from wsss.predict import Predictor  # noqa: E402
from wsss.refine.crf import start_crf_label_maps  # noqa: E402
from wsss.train.segmenter_training import build_optimizer, head_loss  # noqa: E402

DEVICE = torch.device("cpu")


def best_of(call, repeats: int) -> float:
    """Seconds of ``call()``: one warm-up, then the minimum of ``repeats`` runs."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def classifier_costs(config: Config, classes: int, repeats: int) -> tuple[float, float]:
    """(seconds of one training step of a batch, seconds of the forward of one image in a batch)
    of a fresh classifier of the ``model`` section at model.img_size, train.classifier's batch
    size and precision (and its attention kernel: ``explicit_attention_for_training``; the
    trainer validates with the same model)."""
    settings, size = config.train.classifier, config.model.img_size
    model = create_classifier(config.model, classes)
    explicit_attention_for_training(model, DEVICE, autocast_dtype(DEVICE, settings.amp))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    autocast, _ = mixed_precision(DEVICE, settings.amp)
    images = torch.randn(settings.batch_size, 3, size, size)
    tags = (torch.rand(settings.batch_size, classes) > 0.6).float()

    def step():
        with autocast():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images).float(), tags)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    model.train()
    step_s = best_of(step, repeats)
    model.eval()
    with torch.no_grad():
        forward_s = best_of(lambda: model(images), repeats) / settings.batch_size
    return step_s, forward_s


def real_batch(config: Config, split: str, count: int) -> tuple[list[np.ndarray], torch.Tensor]:
    """The first ``count`` images of ``split`` of one size (the demo's are all one size), and their tags."""
    dataset = open_dataset(config.data, split)
    samples = [dataset.load(i, masks=False) for i in dataset.ids[:count * 4]]
    size = samples[0].image.shape
    samples = [s for s in samples if s.image.shape == size][:count]
    return [s.image for s in samples], torch.from_numpy(np.stack([s.tags for s in samples]))


def map_seconds(config: Config, checkpoint: Path, images: list[np.ndarray], tags: torch.Tensor, repeats: int) -> float:
    """Seconds per image of the map method of ``cam`` (its views, precision) on a batch of
    ``cam.batch_size`` real images, the run's classifier."""
    model, _, _ = load_classifier(checkpoint, DEVICE)
    method = configured_map_method(config.cam)
    x = torch.stack([image_to_tensor(image) for image in images])
    return best_of(lambda: method(model, x, tags), repeats) / len(images)


def crf_seconds(config: Config, images: list[np.ndarray], repeats: int) -> float:
    """Seconds per image of the dense CRF (refine.crf) in this process on real images with
    smooth random probabilities of C+1 labels."""
    rng = np.random.default_rng(0)
    classes = 1 + len(open_dataset(config.data, config.data.train_split).classes)
    probs = []
    for image in images:
        logits = torch.from_numpy(rng.normal(size=(1, classes, 8, 8)).astype(np.float32))
        smooth = torch.nn.functional.interpolate(logits * 3, size=image.shape[:2], mode="bilinear")
        probs.append(torch.softmax(smooth, dim=1)[0].numpy())
    crf = config.refine.crf.model_copy(update={"workers": 1})
    return best_of(lambda: start_crf_label_maps(images, probs, crf)(), repeats) / len(images)


def segmenter_step_seconds(config: Config, checkpoint: Path, repeats: int, batch: int | None = None) -> float:
    """Seconds of one two-stage training step of the run's segmenter: forward of a batch of
    random crops, the head's loss against random labels, backward, the optimiser's step."""
    settings = config.train.segmenter
    segmenter, classes, _ = load_segmenter(checkpoint, DEVICE)
    explicit_attention_for_training(segmenter, DEVICE, autocast_dtype(DEVICE, settings.amp))  # as the trainer
    crop = settings.crop_size or config.model.img_size
    batch = batch or settings.batch_size
    optimizer = build_optimizer(segmenter, settings)
    autocast, _ = mixed_precision(DEVICE, settings.amp)
    images = torch.randn(batch, 3, crop, crop)
    labels = torch.randint(0, len(classes) + 1, (batch, crop, crop))

    def step():
        with autocast():
            loss = head_loss(segmenter(images), labels, settings)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    segmenter.train()
    return best_of(step, repeats)


def predict_seconds(checkpoint: Path, images: list[np.ndarray], scales: list[float], flip: bool, repeats: int,
                    guided: GuidedFilterConfig | None = None) -> float:
    """Seconds per image of the segmenter's prediction over ``scales`` (× the mirror image), with
    the guided filter when ``guided`` has a radius."""
    segmenter, _, _ = load_segmenter(checkpoint, DEVICE)
    predictor = Predictor(segmenter, scales, flip, guided)
    return best_of(lambda: predictor(images), repeats) / len(images)


def split_size(config: Config, split: str | None) -> int:
    return 0 if split is None else len(open_dataset(config.data, split))


def floors(config: Config, run: RunLayout, repeats: int) -> tuple[dict[str, dict], dict[str, float]]:
    """Per stage: {"images", "floor", "how"}; and the unit costs measured (seconds)."""
    train_n, val_n = split_size(config, config.data.train_split), split_size(config, config.data.val_split)
    settings, segmenter_settings = config.train.classifier, config.train.segmenter
    classes = len(open_dataset(config.data, config.data.train_split).classes)
    images, tags = real_batch(config, config.data.train_split, config.cam.batch_size)
    workers = max(1, config.refine.crf.workers) if config.refine.crf.enabled else 1
    unit = {}
    unit["classifier_step"], unit["classifier_forward"] = classifier_costs(config, classes, repeats)
    unit["map"] = map_seconds(config, run.classifier.final, images, tags, repeats)
    unit["crf"] = crf_seconds(config, images[:4], repeats) if config.refine.crf.enabled else 0.0
    mode = segmenter_settings.mode
    segmenter = run.segmenter(mode).final
    unit["segmenter_step"] = segmenter_step_seconds(config, segmenter, repeats)
    predict = config.predict
    unit["predict"] = predict_seconds(segmenter, images, predict.scales, predict.flip, repeats, predict.guided_filter)
    crf_share = unit["crf"] / workers
    steps = max(1, train_n // settings.batch_size)
    # the epochs it trained: fewer than train.classifier.epochs when a plateau ended it early
    history = run.classifier.history
    epochs = len(json.loads(history.read_text())) if history.is_file() else settings.epochs
    stages = {
        "train_classifier": {"images": epochs * (steps * settings.batch_size + val_n),
                             "floor": epochs * (steps * unit["classifier_step"] + val_n * unit["classifier_forward"]),
                             "how": f"{epochs} epochs × ({steps} steps of {settings.batch_size} + {val_n} val)"},
    }
    saliency = config.refine.saliency
    if saliency.source == "segmenter":
        st = saliency.self_training
        unit["self_training_predict"] = predict_seconds(segmenter, images, st.scales, st.flip, repeats)
        stages["self_training"] = {
            "images": 2 * train_n + val_n,
            "floor": train_n * (unit["map"] + crf_share) + st.steps * unit["segmenter_step"]
            + (train_n + val_n) * unit["self_training_predict"],
            "how": f"{train_n} maps + CRF, {st.steps} segmenter steps, {train_n + val_n} foregrounds"}
        stages["pseudo_labels"] = {"images": train_n, "floor": train_n * crf_share,
                                   "how": f"{train_n} × CRF / {workers} (round 1's maps reused)"}
    else:
        stages["pseudo_labels"] = {"images": train_n, "floor": train_n * (unit["map"] + crf_share),
                                   "how": f"{train_n} × (maps + CRF / {workers})"}
    stages["train_segmenter"] = {"images": segmenter_settings.steps * segmenter_settings.batch_size,
                                 "floor": segmenter_settings.steps * unit["segmenter_step"],
                                 "how": f"{segmenter_settings.steps} steps of {segmenter_settings.batch_size} ({mode})"}
    stages["evaluate_segmenter"] = {"images": val_n,
                                    "floor": val_n * (unit["predict"] + (crf_share if predict.crf else 0.0)),
                                    "how": f"{val_n} × (predict views{' + CRF / ' + str(workers) if predict.crf else ''})"}
    return stages, unit


def processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a finished pipeline run (default runs/demo)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each unit cost (the minimum is kept)")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    report_path = args.run / "report.json"
    if not report_path.is_file():
        sys.exit(f"error: {report_path} not found (run `make demo` or `wsss demo --out {args.run}` first)")
    report = json.loads(report_path.read_text())
    config = load_config(args.run / "config.yaml")
    if config.train.classifier.threads:
        torch.set_num_threads(config.train.classifier.threads)
    run = RunLayout(args.run)
    timings = report["timings_s"]
    stages, unit = floors(config, run, args.repeats)
    print(f"{processor()}, {torch.get_num_threads()} threads, native bfloat16: {cpu_has_native_bf16()}; "
          f"run {args.run} (classifier amp {config.train.classifier.amp}, cam amp {config.cam.amp})")
    print("unit costs (s): " + ", ".join(f"{k} {v:.4f}" for k, v in unit.items()))
    print(f"{'stage':20s} {'seconds':>8s} {'images':>7s} {'img/s':>7s} {'floor s':>8s} {'ratio':>6s}  floor counts")
    rows = []
    for name, seconds in timings.items():
        if name == "total":
            continue
        stage = stages.get(name, {})
        floor = stage.get("floor")
        images = stage.get("images")
        rate = images / seconds if images and seconds else None
        ratio = seconds / floor if floor else None
        rows.append({"stage": name, "seconds": seconds, "images": images, "images_per_s": rate, "floor_s": floor,
                     "ratio": ratio, "floor_counts": stage.get("how", "")})
        print(f"{name:20s} {seconds:8.1f} {images if images else '':>7} {f'{rate:.1f}' if rate else '':>7s} "
              f"{f'{floor:.1f}' if floor else '':>8s} {f'{ratio:.2f}' if ratio else '':>6s}  {stage.get('how', '')}")
    known = sum(r["floor_s"] for r in rows if r["floor_s"])
    print(f"{'total':20s} {timings['total']:8.1f} {'':>7s} {'':>7s} {known:8.1f} {timings['total'] / known:6.2f}  "
          "(floor: the stages that have one)")
    if args.json:
        args.json.write_text(json.dumps({"processor": processor(), "threads": torch.get_num_threads(),
                                         "native_bf16": cpu_has_native_bf16(), "unit_s": unit, "stages": rows,
                                         "total_s": timings["total"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
