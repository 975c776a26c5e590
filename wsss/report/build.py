"""The one report builder: report.json (machine-readable) and report.html from results.

Both the ``pipeline`` flow and ``wsss report`` hand their results here:

    content, page = build_report(title, notes, stages=stage_results, config=config.model_dump(mode="json"),
                                 results=RunResults(segmenter_result, pseudo_summary, timings))
    write_report(RUN/report.json, RUN/report.html, content, page)

report.json:

    stages          rows of the stage table (mIoU in percent): every map method at
                    raw → +PAMR → +saliency, conflict (→ +SAM, with refine.sam) → +CRF, and the
                    trivial baseline
    stage_columns   the stage names; stage_images: how many images the stage table scored;
                    stage_not_scored: the images it could not score, with the reason
    segmenter       the segmenter's scores on the validation split (mIoU, IoU per class, pixel
                    accuracy, images), its inference settings, its mIoU without the CRF (when
                    predict.crf is on), the mIoU of its in-loop pseudo-labels (single stage), and
                    its mIoU on the stage table's images (what the checks compare); null if none
    classifier      the quality gate's reading of the classifier: mAP against chance (the mean
                    prevalence), skill, per-class AP, prevalence and skill, the classes it cannot
                    tell apart, whether it passed; null when unmeasured
    pseudo_labels   the pseudo-label run on the training split (counts, mIoU, images/s, the
                    labels' foreground / background / ignore shares, each class's share of
                    the images tagged with it, ``spreading``: the classes whose labels spread
                    over the background, why, and what to try; also in the page's warnings)
    timings_s       seconds per pipeline step, and their sum ("total")
    images_per_s    throughput of the pseudo-label flow and of the stage table
    checks          whether GETAM's labels and the segmenter beat the baselines and the trivial one
    review          the review queue of the pseudo-labels: the least confident ids, their
                    confidence and own mIoU, the rank correlation of each confidence field with
                    the per-image mIoU, and the review page's file; null when not made
    config          the settings of the run
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsss.data.npz_maps import read_npz_maps
from wsss.data.base import Dataset
from wsss.data.label_png import colorize, read_label_png
from wsss.eval.classification import ClassifierQuality
from wsss.eval.evaluate import Evaluation
from wsss.eval.review import FIELDS, WORST_SHARE, ReviewQueue
from wsss.eval.segmenter_scores import SegmenterScores
from wsss.eval.stages import STAGES, StageResults
from wsss.files import write_json
from wsss.refine.confidence import DOUBT
from wsss.report.html import Example, Report, write_html
from wsss.viz import heatmap_overlay, label_overlay

__all__ = ["ReviewPage", "RunResults", "SegmenterResult", "build_report", "build_review_page", "write_report", "checks", "TRIVIAL"]

TRIVIAL = "trivial baseline"


@dataclass
class ReviewPage:
    """The review queue of a label folder (``wsss.eval.review``) and what its page shows:
    dataset (the labelled split), label_dir (its <id>.png), maps_dir (saved refined maps,
    <id>.npz, for the heat maps; None: none shown), html (where the page goes)."""

    queue: ReviewQueue
    dataset: Dataset
    label_dir: Path
    maps_dir: Path | None
    html: Path


@dataclass
class SegmenterResult:
    """A segmenter scored on the validation split (``wsss.eval.segmenter_scores``), for the report.

    mode: ``train.segmenter.mode``; predict: the ``predict`` section as a dict (its CRF flag
    decides the rows); inloop: its in-loop labels' scores (single stage) or None; images: the
    validation split's size."""

    mode: str
    scores: SegmenterScores
    classes: list[str]
    predict: dict
    inloop: Evaluation | None
    images: int

    def section(self, stage_ids: list[str] | None) -> dict:
        """The report.json ``segmenter`` entry (scores in percent)."""
        final = self.scores.final().to_dict(self.classes)
        entry = {"mode": self.mode, "mIoU": 100.0 * final["mIoU"],
                 "IoU": {k: None if v is None else 100.0 * v for k, v in final["IoU"].items()},
                 "pixel_accuracy": 100.0 * final["pixel_accuracy"], "images": self.images, "predict": self.predict}
        if self.scores.crf:
            entry["mIoU_without_crf"] = 100.0 * self.scores.argmax().confusion.miou
        if self.scores.filtered:
            entry["mIoU_without_filter"] = 100.0 * self.scores.unfiltered().confusion.miou
        if self.inloop is not None:
            entry["inloop_labels_mIoU"] = 100.0 * self.inloop.confusion.miou
        if stage_ids:
            entry["mIoU_on_stage_images"] = 100.0 * self.scores.final(stage_ids).confusion.miou
            if self.scores.crf:
                entry["mIoU_without_crf_on_stage_images"] = 100.0 * self.scores.argmax(stage_ids).confusion.miou
            if self.scores.filtered:
                entry["mIoU_without_filter_on_stage_images"] = 100.0 * self.scores.unfiltered(stage_ids).confusion.miou
        return entry


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


def _iou_series(iou: np.ndarray, names: list[str]) -> dict[str, float | None]:
    return dict(zip(names, [None if np.isnan(v) else float(v) for v in iou]))


def _stage_page(page: Report, results: StageResults, predictions: Path | None = None) -> None:
    """The stage table, every method's per-class IoU at its final stage, the notes on steps that
    do not help, and examples of the first method (image, heat maps, saliency, labels, the
    segmenter's prediction when ``predictions`` holds its <id>.png, truth)."""
    names = ["background", *results.classes]
    page.stages = results.rows()
    for name, stages in results.methods.items():
        page.per_class_iou[f"{name} (+CRF)"] = _iou_series(stages.crf.iou, names)
    if results.trivial is not None:
        page.per_class_iou[TRIVIAL] = _iou_series(results.trivial.iou, names)
    page.notes += [f"where a step does not help: {line}" for line in results.drops()]
    first = next(iter(results.examples), None)
    for sample, result, i in results.examples.get(first, []):
        tags = ", ".join(results.classes[c] for c in np.flatnonzero(sample.tags))
        pictures = {
            "image": sample.image,
            f"{first} map": heatmap_overlay(sample.image, result.raw[i].max(0).values.cpu().numpy()),
            "+PAMR": heatmap_overlay(sample.image, result.refined[i].max(0).values.cpu().numpy()),
        }
        if result.saliency[i] is not None:
            pictures["saliency"] = np.repeat((result.saliency[i].cpu().numpy()[:, :, None] * 255).astype(np.uint8), 3, 2)
        pictures["pseudo-label"] = label_overlay(sample.image, result.rule[i].cpu().numpy().astype(np.uint8))
        if result.sam is not None:
            pictures["+SAM"] = label_overlay(sample.image, result.sam[i].cpu().numpy().astype(np.uint8))
        pictures["+CRF"] = label_overlay(sample.image, result.labels[i].cpu().numpy().astype(np.uint8))
        prediction = _read_label(predictions / f"{sample.id}.png") if predictions is not None else None
        if prediction is not None and prediction.shape == sample.image.shape[:2]:
            pictures["segmenter"] = label_overlay(sample.image, prediction)
        if sample.mask is not None:
            pictures["ground truth"] = colorize(sample.mask)
        page.examples.append(Example(f"{sample.id} ({tags})", pictures))


def _read_label(path: Path) -> np.ndarray | None:
    """A label PNG, or None when it is missing or unreadable (a picture is then left out)."""
    try:
        return read_label_png(path)
    except (OSError, ValueError):
        return None


def build_review_page(title: str, review: ReviewPage) -> Report:
    """The review page: the least confident pseudo-labels first, each with its image, refined
    map (when saved), pseudo-label, what the confidence doubts (the pixels the CRF relabelled or
    left ignored, ``OUT/doubt/<id>.png``) and ground truth with the label's true mIoU (when the
    data set has masks), the table of their confidence, and how well the confidence ranks the
    labels' true quality."""
    queue = review.queue
    page = Report(title=title, notes=[queue.summary(),
                                      "confidence: wsss.refine.confidence (score: the label's expected mIoU from the CRF's "
                                      "and the ignore's share of the labelled objects, map support, the share of a tag's "
                                      "map outside its label, tag probability and tag count); the least confident first; "
                                      "'doubt' marks the pixels the CRF relabelled or left ignored, and those where a "
                                      "tag's map is strong but the label is not that class"])
    if queue.correlation is not None:
        page.tables["How well the confidence ranks the labels (Spearman ρ with per-image mIoU; 1 = exactly)"] = [
            {"confidence field": name, "ρ": queue.correlation.get(name)} for name in FIELDS if name in queue.correlation]
        if queue.worst_found is not None:
            page.tables["How well the confidence ranks the labels (Spearman ρ with per-image mIoU; 1 = exactly)"].append(
                {"confidence field": f"the {WORST_SHARE:.0%} worst labels among the {WORST_SHARE:.0%} least confident",
                 "ρ": queue.worst_found})
    rows = []
    for rank, image_id in enumerate(queue.ids, start=1):
        c = queue.confidence[image_id]
        row = {"rank": rank, "image": image_id, **{name: c.get(name) for name in FIELDS}}
        if queue.miou is not None:
            row["mIoU (%)"] = None if image_id not in queue.miou else 100.0 * queue.miou[image_id]
        rows.append(row)
    page.tables[f"The {len(rows)} least confident of {len(queue.confidence)} pseudo-labels"] = rows
    for image_id in queue.ids:
        try:
            sample = review.dataset.load(image_id, masks=queue.miou is not None)
        except (OSError, ValueError):
            continue
        label = _read_label(review.label_dir / f"{image_id}.png")
        pictures = {"image": sample.image}
        maps_file = None if review.maps_dir is None else review.maps_dir / f"{image_id}.npz"
        if maps_file is not None and maps_file.is_file():
            maps, _ = read_npz_maps(maps_file)
            if maps.shape[1:] == sample.image.shape[:2] and len(maps):
                pictures["refined map"] = heatmap_overlay(sample.image, maps.max(0))
        if label is not None and label.shape == sample.image.shape[:2]:
            pictures["pseudo-label"] = label_overlay(sample.image, label)
        doubt = _read_label(review.label_dir / DOUBT / f"{image_id}.png")
        if doubt is not None and doubt.shape == sample.image.shape[:2]:
            pictures["doubt"] = label_overlay(sample.image, (doubt > 0).astype(np.uint8))
        if sample.mask is not None:
            pictures["ground truth"] = colorize(sample.mask)
        tags = ", ".join(review.dataset.classes[c] for c in np.flatnonzero(sample.tags))
        score = queue.confidence[image_id].get("score")
        truth = "" if queue.miou is None or image_id not in queue.miou else f"; true mIoU {100 * queue.miou[image_id]:.1f} %"
        page.examples.append(Example(f"{image_id} ({tags}; score {score}{truth})", pictures))
    return page


def _segmenter_page(page: Report, segmenter: SegmenterResult, entry: dict) -> None:
    """The segmenter's rows of the stage table (with and without the CRF, its in-loop labels,
    on the stage table's images) and its per-class IoU."""
    crf = bool(segmenter.predict.get("crf"))
    guided = ", guided filter" if "mIoU_without_filter" in entry else ""
    name = f"segmenter ({segmenter.mode}{guided}{', +CRF' if crf else ''})"
    page.stages.append({"method": name, "segmenter": entry["mIoU"]})
    if "mIoU_without_crf" in entry:
        page.stages.append({"method": f"segmenter ({segmenter.mode}{guided}), no CRF", "segmenter": entry["mIoU_without_crf"]})
    if guided:
        page.stages.append({"method": f"segmenter ({segmenter.mode}) alone: no filter, no CRF",
                            "segmenter": entry["mIoU_without_filter"]})
    if "inloop_labels_mIoU" in entry:
        page.stages.append({"method": "its in-loop pseudo-labels", "segmenter": entry["inloop_labels_mIoU"]})
    if "mIoU_on_stage_images" in entry:
        page.stages.append({"method": f"{name}, on the stage table's images", "segmenter": entry["mIoU_on_stage_images"]})
    if "mIoU_without_crf_on_stage_images" in entry:
        page.stages.append({"method": f"segmenter ({segmenter.mode}{guided}), no CRF, on the stage table's images",
                            "segmenter": entry["mIoU_without_crf_on_stage_images"]})
    if "mIoU_without_filter_on_stage_images" in entry:
        page.stages.append({"method": f"segmenter ({segmenter.mode}) alone, on the stage table's images",
                            "segmenter": entry["mIoU_without_filter_on_stage_images"]})
    page.per_class_iou[name] = {k: None if v is None else v / 100.0 for k, v in entry["IoU"].items()}


def _classifier_page(page: Report, quality: ClassifierQuality) -> None:
    """The classifier's per-class AP against chance, and the classes it cannot tell apart."""
    page.tables["Classifier (validation split)"] = [
        {"class": name, "AP": ap, "prevalence (chance AP)": p, "skill": k,
         "told apart": "yes" if name not in quality.weak else "NO"}
        for name, ap, p, k in zip(quality.classes, quality.ap, quality.prevalence, quality.skill)
    ] + [{"class": "mean", "AP": quality.mean_ap, "prevalence (chance AP)": quality.chance_map,
          "skill": quality.mean_skill, "told apart": "passed the gate" if quality.passed else "BELOW THE GATE"}]
    page.notes.append(quality.summary())


@dataclass
class RunResults:
    """What a pipeline run adds to its report beside the stage table (``wsss report`` has none of
    it): the segmenter's scores, the pseudo-label run's summary (counts, mIoU as a fraction,
    images/s, label shares), seconds per step, the quality gate's reading of the classifier, and
    the folder of the segmenter's validation predictions (<id>.png, a column of the examples)."""

    segmenter: SegmenterResult | None = None
    pseudo: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    classifier: ClassifierQuality | None = None
    segmenter_predictions: Path | None = None


def _label_share_page(page: Report, pseudo: dict) -> None:
    """The pseudo-labels' share of the images per class (no masks needed) and a warning for each
    class whose labels spread over the background (``wsss.eval.label_spread``)."""
    spreading = {item["class"]: item for item in pseudo.get("spreading") or []}
    for name, item in spreading.items():
        page.warnings.append(f"the pseudo-labels of class {name!r} spread over the background: {item['why']}. "
                             f"Try: {item['try']}")
    shares = pseudo.get("class_shares") or {}
    if shares:
        page.tables["Pseudo-labels per class (no masks needed)"] = [
            {"class": name, "images tagged": s["images"],
             "mean share of those images": None if s["mean_share"] is None else f"{100 * s['mean_share']:.1f} %",
             "images it covers ≥ 70 %": None if s["full_images"] is None else f"{100 * s['full_images']:.0f} %",
             "spreads": "yes" if name in spreading else ""}
            for name, s in shares.items()]


def build_report(title: str, notes: list[str], stages: StageResults | None = None, results: RunResults = RunResults(),
                 config: dict | None = None, review: ReviewQueue | None = None,
                 review_html: str | None = None) -> tuple[dict, Report]:
    """report.json's content and the HTML page of the results handed in (any may be None).
    review: the review queue (its page at ``review_html``, relative to the report)."""
    segmenter, pseudo, timings, classifier = results.segmenter, results.pseudo, results.timings, results.classifier
    segmenter_predictions = results.segmenter_predictions
    page = Report(title=title, notes=list(notes))
    if review is not None:
        page.notes.append(review.summary() + (f"; the review page: {review_html}" if review_html else ""))
    if classifier is not None:
        _classifier_page(page, classifier)
    rows, stage_ids = [], None
    if stages is not None:
        _stage_page(page, stages, segmenter_predictions)
        rows, stage_ids = stages.rows(), stages.ids
    entry = None
    if segmenter is not None:
        entry = segmenter.section(stage_ids)
        _segmenter_page(page, segmenter, entry)
    timings = {k: float(v) for k, v in (timings or {}).items()}
    if timings:
        timings["total"] = sum(timings.values())
    pseudo = dict(pseudo or {})
    _label_share_page(page, pseudo)
    if pseudo.get("mIoU") is not None:
        pseudo["mIoU"] = 100.0 * pseudo["mIoU"]
    images = stages.num_images if stages is not None else 0
    methods = sum(1 for row in rows if row["method"] != TRIVIAL)
    stage_seconds = timings.get("stage_table")
    content = {
        "stages": rows,
        "stage_columns": list(STAGES if stages is None else stages.columns),
        "stage_images": images,
        "stage_not_scored": {} if stages is None else dict(stages.failed),
        "segmenter": entry,
        "classifier": None if classifier is None else classifier.to_dict(),
        "pseudo_labels": pseudo,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "images_per_s": {
            "pseudo_labels": pseudo.get("images_per_s"),
            "stage_table": round(images * methods / stage_seconds, 2) if stage_seconds else None,
        },
        "checks": checks(rows, None if entry is None else entry.get("mIoU_on_stage_images", entry["mIoU"])),
        "review": None if review is None else {**review.to_dict(), "page": review_html},
        "notes": page.notes,
        "config": config,
    }
    return content, page


def write_report(json_path: str | os.PathLike, html_path: str | os.PathLike, content: dict, page: Report) -> None:
    """Write report.json and report.html (atomically)."""
    write_json(json_path, content)
    write_html(html_path, page)
