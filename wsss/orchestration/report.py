"""The pipeline's report: RUN/report.json (machine-readable) and RUN/report.html.

report.json:

    stages          rows of the stage table (mIoU in percent): GETAM and every baseline at
                    raw → +PAMR → +saliency, conflict → +CRF, and the trivial baseline
    stage_images    how many validation images the stage table scored (report.stage_images)
    segmenter       the segmenter's scores on the validation split (mIoU, IoU per class, ...),
                    its inference settings, its mIoU without the CRF (when predict.crf is on) and
                    the mIoU of its in-loop pseudo-labels on the same images (single stage), and
                    its mIoU on the stage table's images (what the checks compare)
    pseudo_labels   the pseudo-label run on the training split (counts, mIoU, images/s)
    timings_s       seconds per pipeline step, and their sum ("total")
    images_per_s    throughput of the pseudo-label flow and of the stage table
    checks          whether GETAM's labels and the segmenter beat the baselines and the trivial one
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from wsss.attention.views import describe_views
from wsss.data import open_dataset
from wsss.eval.evaluate import evaluate_label_dir
from wsss.eval.stages import STAGES, run_stages, stage_report
from wsss.orchestration.segmenter import validation_predictions
from wsss.orchestration.shards import has_masks, write_json
from wsss.report import Report, write_report
from wsss.train.checkpoint import resolve_device
from wsss.train.classifier import load_classifier

TRIVIAL = "trivial baseline"


def checks(stage_rows: list[dict], segmenter_miou: float | None, method: str = "getam") -> dict:
    """Does ``method``'s final stage beat every baseline's and the trivial baseline, and does the
    segmenter (mIoU in percent) beat them too? Missing rows give None."""
    final = {row["method"]: row.get("+CRF") for row in stage_rows}
    ours = final.get(method)
    baselines = [v for name, v in final.items() if name not in (method, TRIVIAL) and v is not None]
    trivial = final.get(TRIVIAL)
    best_other = max(baselines + ([trivial] if trivial is not None else []), default=None)
    return {
        f"{method}_beats_baselines": None if ours is None or not baselines else bool(ours > max(baselines)),
        f"{method}_beats_trivial": None if ours is None or trivial is None else bool(ours > trivial),
        "segmenter_beats_baselines_and_trivial":
            None if segmenter_miou is None or best_other is None else bool(segmenter_miou > best_other),
    }


def segmenter_training_metrics(config) -> dict:
    """From the segmenter run's metrics.json (written at the end of training): its inference
    settings, its mIoU without the CRF and its in-loop labels' mIoU, in percent ({} when the
    file is missing)."""
    from wsss.train.segmenter import SegmenterRun

    path = SegmenterRun.of(config).metrics
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    extra = {"predict": metrics.get("predict")}
    for key, name in (("segmenter_without_crf", "mIoU_without_crf"), ("pseudo_labels", "inloop_labels_mIoU")):
        if metrics.get(key) is not None:
            extra[name] = 100.0 * metrics[key]["mIoU"]
    return extra


def report_json(stage_rows: list[dict], segmenter_scores: dict | None, segmenter_mode: str, pseudo: dict,
                timings: dict, stage_images: int, config_dump: dict, segmenter_extra: dict | None = None) -> dict:
    """The content of report.json (see the module docstring); scores in percent.
    segmenter_extra: ``segmenter_training_metrics``' entries, added to the segmenter's."""
    segmenter = None
    seg_miou = None
    if segmenter_scores is not None:
        seg_miou = 100.0 * segmenter_scores["mIoU"]
        segmenter = {"mode": segmenter_mode, "mIoU": seg_miou,
                     "IoU": {k: None if v is None else 100.0 * v for k, v in segmenter_scores["IoU"].items()},
                     "pixel_accuracy": 100.0 * segmenter_scores["pixel_accuracy"],
                     "images": segmenter_scores.get("images"), **(segmenter_extra or {})}
    pseudo = dict(pseudo)
    if pseudo.get("mIoU") is not None:
        pseudo["mIoU"] = 100.0 * pseudo["mIoU"]
    methods = sum(1 for row in stage_rows if row["method"] != TRIVIAL)
    stage_seconds = timings.get("stage_table")
    return {
        "stages": stage_rows,
        "stage_columns": list(STAGES),
        "stage_images": stage_images,
        "segmenter": segmenter,
        "pseudo_labels": pseudo,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "images_per_s": {
            "pseudo_labels": pseudo.get("images_per_s"),
            "stage_table": round(stage_images * methods / stage_seconds, 2) if stage_seconds else None,
        },
        "checks": checks(stage_rows, (segmenter or {}).get("mIoU_on_stage_images", seg_miou)),
        "config": config_dump,
    }


def add_segmenter(report, segmenter_scores: dict | None, segmenter_mode: str, extra: dict) -> None:
    """Append the segmenter's rows to a ``wsss.report.Report``'s stage table (with and without
    the CRF, and its in-loop labels, as far as ``extra`` has them) and its per-class IoU."""
    if segmenter_scores is None:
        return
    crf = bool((extra.get("predict") or {}).get("crf"))
    name = f"segmenter ({segmenter_mode}{', +CRF' if crf else ''})"
    report.stages.append({"method": name, "segmenter": 100.0 * segmenter_scores["mIoU"]})
    if "mIoU_without_crf" in extra:
        report.stages.append({"method": f"segmenter ({segmenter_mode}), no CRF", "segmenter": extra["mIoU_without_crf"]})
    if "inloop_labels_mIoU" in extra:
        report.stages.append({"method": "its in-loop pseudo-labels", "segmenter": extra["inloop_labels_mIoU"]})
    if "mIoU_on_stage_images" in extra:
        report.stages.append({"method": f"{name}, on the stage table's images", "segmenter": extra["mIoU_on_stage_images"]})
    report.per_class_iou[name] = dict(segmenter_scores["IoU"])


def write_pipeline_report(config, checkpoint: str | os.PathLike, methods: list[str], segmenter_scores: dict | None,
                          pseudo: dict, timings: dict[str, float]) -> dict:
    """Run the stage table of ``methods`` with the classifier at ``checkpoint`` on the
    validation split (when it has masks), print it, and write RUN/report.html and
    RUN/report.json; returns the JSON content."""
    run_dir = Path(config.run_dir)
    split = config.data.val_split
    dataset = open_dataset(config.data, split)
    mode = config.train.segmenter.mode
    notes = [f"data set: {config.data.root} ({config.data.format}); stage table and segmenter on split {split}, "
             f"pseudo-labels on split {config.data.train_split}",
             f"classifier: {checkpoint}; {describe_views(config.cam)}; saliency: {config.refine.saliency.source}; "
             f"CRF in the pseudo-labels: {config.refine.crf.enabled}",
             "timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())]
    if has_masks(dataset):
        model, _, _ = load_classifier(checkpoint, resolve_device(config.train.device))
        started = time.perf_counter()
        results = run_stages(model, config, dataset, methods, batch_size=config.cam.batch_size, progress=False)
        stage_ids = results.ids
        timings = {**timings, "stage_table": time.perf_counter() - started}
        print(results.text_table())
        report = stage_report(results, "wsss pipeline: pseudo-label stages and segmenter", notes)
        rows, images = results.rows(), results.num_images
    else:
        notes.append(f"split {split} has no masks: no stage table, no segmenter score")
        report, rows, images, stage_ids = Report(title="wsss pipeline", notes=notes), [], 0, []
    timings = {**timings, "total": sum(timings.values())}
    extra = segmenter_training_metrics(config) if segmenter_scores is not None else {}
    if segmenter_scores is not None and rows:  # the checks compare on the stage table's images
        same = evaluate_label_dir(validation_predictions(config), dataset, progress=False, ids=stage_ids)
        extra["mIoU_on_stage_images"] = 100.0 * same.confusion.miou
    add_segmenter(report, segmenter_scores, mode, extra)
    if segmenter_scores is not None:
        parts = [f"segmenter ({mode}) mIoU on {split}: {100 * segmenter_scores['mIoU']:.1f} %"]
        if "mIoU_without_crf" in extra:
            parts.append(f"without the CRF {extra['mIoU_without_crf']:.1f} %")
        if "inloop_labels_mIoU" in extra:
            parts.append(f"its in-loop pseudo-labels {extra['inloop_labels_mIoU']:.1f} %")
        if "mIoU_on_stage_images" in extra:
            parts.append(f"on the stage table's {len(stage_ids)} images {extra['mIoU_on_stage_images']:.1f} %")
        print("; ".join(parts))
    content = report_json(rows, segmenter_scores, mode, pseudo, timings, images, config.model_dump(mode="json"),
                          extra)
    write_report(run_dir / "report.html", report)
    write_json(run_dir / "report.json", content)
    print(f"report: {run_dir / 'report.html'} and {run_dir / 'report.json'}")
    return content
