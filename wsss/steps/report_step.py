"""The stage table and the report of a run (the pipeline's last step, and ``wsss report``).

    content = stage_table_report(checkpoint, dataset, cam, refine, methods, device, json_path, html_path,
                                 title, notes, stage_images=..., segmenter=..., pseudo=..., timings=...)

Runs the stage table with the classifier at ``checkpoint`` when the data set has masks,
prints it, and hands everything to the one report builder (``wsss.report.build``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from wsss.config import CamConfig, RefineConfig
from wsss.data.base import Dataset
from wsss.eval.classification import ClassifierQuality
from wsss.eval.stages import run_stages
from wsss.models.checkpoint import load_classifier, resolve_device
from wsss.steps.label_plan import has_masks
from wsss.report.build import ReviewPage, SegmenterResult, build_report, build_review_page, write_report
from wsss.report.html import write_html

__all__ = ["stage_table_report"]


def stage_table_report(checkpoint: str | os.PathLike, dataset: Dataset, cam: CamConfig, refine: RefineConfig,
                       methods: list[str], device: str, json_path: str | os.PathLike, html_path: str | os.PathLike,
                       title: str, notes: list[str], stage_images: int | None = None,
                       segmenter: SegmenterResult | None = None, pseudo: dict | None = None,
                       timings: dict[str, float] | None = None, config: dict | None = None,
                       classifier: ClassifierQuality | None = None, progress: bool = False,
                       review: ReviewPage | None = None, segmenter_predictions: str | os.PathLike | None = None) -> dict:
    """Stage table of ``methods`` on ``dataset`` (``stage_images`` of its images, evenly
    spaced; all when None), then report.json and report.html (and, with ``review``, its review
    page); returns the JSON content. segmenter_predictions: the segmenter's validation
    predictions (<id>.png), shown beside the examples."""
    timings, notes, stages = dict(timings or {}), list(notes), None
    if has_masks(dataset):
        model, _, _ = load_classifier(checkpoint, resolve_device(device))
        started = time.perf_counter()
        stages = run_stages(model, cam, refine, dataset, methods, stage_images=stage_images, progress=progress)
        timings["stage_table"] = time.perf_counter() - started
        print(stages.text_table())
    else:
        notes.append("the data set has no masks: the quality of the pseudo-labels is unmeasured (no stage table, no "
                     "segmenter score); shown instead: the classifier's per-class AP and the labels' coverage and "
                     "ignore share")
    review_html = None
    if review is not None:
        review_html = os.path.relpath(review.html, os.path.dirname(os.path.abspath(html_path)))
    content, page = build_report(title, notes, stages=stages, segmenter=segmenter, pseudo=pseudo, timings=timings,
                                 config=config, classifier=classifier, review=None if review is None else review.queue,
                                 review_html=review_html,
                                 segmenter_predictions=None if segmenter_predictions is None else Path(segmenter_predictions))
    if segmenter is not None:
        entry = content["segmenter"]
        parts = [f"segmenter ({segmenter.mode}) mIoU: {entry['mIoU']:.1f} %"]
        if "mIoU_without_crf" in entry:
            parts.append(f"without the CRF {entry['mIoU_without_crf']:.1f} %")
        if "inloop_labels_mIoU" in entry:
            parts.append(f"its in-loop pseudo-labels {entry['inloop_labels_mIoU']:.1f} %")
        if "mIoU_on_stage_images" in entry:
            parts.append(f"on the stage table's {content['stage_images']} images {entry['mIoU_on_stage_images']:.1f} %")
        print("; ".join(parts))
    write_report(json_path, html_path, content, page)
    print(f"report: {html_path} and {json_path}")
    if review is not None:
        write_html(review.html, build_review_page(f"{title}: review queue", review))
        print(f"{review.queue.summary()}; page: {review.html}")
    return content
