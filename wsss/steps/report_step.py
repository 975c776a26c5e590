"""The report step: the stage table (every map method through the labelling chain, scored at
every stage) and report.html / report.json, from the one report builder (``wsss.report.build``).

    report(config, checkpoint, split, out, methods)                 # wsss report: OUT/report.html
    pipeline_report(config, checkpoint, methods, results)           # the pipeline: RUN/report.html,
                                                                    # with the segmenter, timings, review
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from wsss.attention.views import describe_views
from wsss.config import Config
from wsss.data import open_dataset
from wsss.data.base import Dataset, DatasetError
from wsss.eval.review import review_queue
from wsss.eval.stages import run_stages
from wsss.layout import RunLayout
from wsss.models.checkpoint import load_classifier, resolve_device
from wsss.report.build import ReviewPage, RunResults, build_report, build_review_page, write_report
from wsss.report.html import write_html
from wsss.steps.label_plan import has_masks
from wsss.steps.segmenter_inputs import labels_dir
from wsss.steps.self_training_saliency import describe_saliency, saliency_config

__all__ = ["report", "pipeline_report", "ReportPage"]


@dataclass(frozen=True)
class ReportPage:
    """Where a report goes and what it says besides its results: report.json, report.html, the
    title, lines of notes, and the review page of a label folder (None: none)."""

    json_path: Path
    html_path: Path
    title: str
    notes: list[str]
    review: ReviewPage | None = None


def report(config: Config, checkpoint: str | os.PathLike, split: str | None, out: str | os.PathLike,
           methods: list[str], labels: str | os.PathLike | None = None) -> dict:
    """``wsss report``: the stage table of ``methods`` on ``config.data`` / ``split`` (which
    needs masks; ``report.stage_images`` of its images) with the classifier at ``checkpoint``,
    and OUT/report.html + OUT/report.json; with ``labels`` (a pseudo-label folder of this data
    set) also OUT/review.html, its least confident labels first (``report.review_images``).
    Returns report.json's content."""
    config = saliency_config(config, require=True)
    out, refine = Path(out), config.refine
    dataset = open_dataset(config.data, split)
    notes = [f"data set: {config.data.root}, split {split or 'all'}",
             f"checkpoint: {checkpoint}",
             describe_views(config.cam),
             f"saliency source: {refine.saliency.source}",
             f"label rule: alpha {refine.label.alpha}, tau {refine.label.tau}, "
             f"conflict {refine.label.conflict}, opening {refine.label.opening}; "
             f"PAMR {refine.pamr.iterations} iterations, dilations {refine.pamr.dilations}"]
    review = None
    if labels is not None:
        labels = Path(labels)
        if not labels.is_dir():
            raise DatasetError(f"--labels {labels}: folder not found (a wsss pseudo-label output folder)")
        maps = labels / "maps"
        review = ReviewPage(review_queue(labels, dataset, count=config.report.review_images), dataset, labels,
                            maps if maps.is_dir() else None, out / "review.html")
    page = ReportPage(out / "report.json", out / "report.html", "wsss: pseudo-label stages", notes, review)
    return _stage_table_report(config, checkpoint, dataset, methods, page, RunResults(), progress=True)


def pipeline_report(config: Config, checkpoint: str | os.PathLike, methods: list[str], results: RunResults) -> dict:
    """The pipeline's last step: the stage table on ``data.val_split`` with the classifier at
    ``checkpoint``, and RUN/report.html + RUN/report.json with the run's ``results`` (its
    segmenter's predictions among the examples) and RUN/review.html of its pseudo-labels.
    ``config`` as the user gave it (self-training's saliency folder is set here)."""
    run, data = RunLayout(config.run_dir), config.data
    notes = [f"data set: {data.root} ({data.format}); stage table and segmenter on split {data.val_split}, "
             f"pseudo-labels on split {data.train_split}",
             f"classifier: {checkpoint}; {describe_views(config.cam)}; saliency: {describe_saliency(config)}; "
             f"CRF in the pseudo-labels: {config.refine.crf.enabled}",
             f"segmenter mode: {config.train.segmenter.mode} (train.segmenter.mode: two_stage learns from the "
             f"pseudo-labels written above, single_stage makes its labels in the loop by double backward)",
             "timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in results.timings.items()),
             *_corrections_note(run.segmenter(config.train.segmenter.mode).corrections_record),
             *config.report.notes]
    labelling = saliency_config(config)
    review = None
    labels = labels_dir(config.train.segmenter, run) or run.pseudo_labels
    if config.report.review_images and labels.is_dir():
        train = open_dataset(labelling.data, data.train_split)
        maps = next((m for m in (labels / "maps", run.self_training.pseudo_labels / "maps") if m.is_dir()), None)
        review = ReviewPage(review_queue(labels, train, count=config.report.review_images), train, labels, maps,
                            run.review_html)
    page = ReportPage(run.report_json, run.report_html, "wsss pipeline: pseudo-label stages and segmenter", notes,
                      review)
    results = replace(results, segmenter_predictions=run.segmenter(config.train.segmenter.mode).val_predictions)
    return _stage_table_report(labelling, checkpoint, open_dataset(labelling.data, data.val_split), methods, page,
                               results, progress=False, settings=config)


def _corrections_note(record: Path) -> list[str]:
    """The report's line on ``train.segmenter.corrections`` (from the segmenter's
    corrections.json), or none when the segmenter learnt from pseudo-labels alone."""
    if not record.is_file():
        return []
    facts = json.loads(record.read_text(encoding="utf-8"))
    return [f"corrections: the segmenter learnt from {facts['images']} corrected label(s) in place of their "
            f"pseudo-labels ({facts['source']}; which ones: {record.parent / 'manifest.jsonl'})"]


def _stage_table_report(config: Config, checkpoint: str | os.PathLike, dataset: Dataset, methods: list[str],
                        page: ReportPage, results: RunResults, progress: bool, settings: Config | None = None) -> dict:
    """The stage table of ``methods`` on ``dataset`` (``report.stage_images`` of its images,
    evenly spaced) when it has masks, printed, then the report of ``page``; returns report.json's
    content. settings: the config recorded in the report (None: ``config``)."""
    notes, stages = list(page.notes), None
    timings = dict(results.timings)
    if has_masks(dataset):
        model, _, _ = load_classifier(checkpoint, resolve_device(config.train.device))
        started = time.perf_counter()
        stages = run_stages(model, config.cam, config.refine, dataset, methods, stage_images=config.report.stage_images,
                            progress=progress)
        timings["stage_table"] = time.perf_counter() - started
        print(stages.text_table())
    else:
        notes.append("the data set has no masks: the quality of the pseudo-labels is unmeasured (no stage table, no "
                     "segmenter score); shown instead: the classifier's per-class AP and the labels' coverage and "
                     "ignore share")
    review = page.review
    review_html = None if review is None else os.path.relpath(review.html, os.path.dirname(os.path.abspath(page.html_path)))
    content, html = build_report(page.title, notes, stages=stages, results=replace(results, timings=timings),
                                 config=(settings or config).model_dump(mode="json"),
                                 review=None if review is None else review.queue, review_html=review_html)
    segmenter = results.segmenter
    if segmenter is not None:
        entry = content["segmenter"]
        parts = [f"segmenter ({segmenter.mode}) mIoU: {entry['mIoU']:.1f} %"]
        if "mIoU_without_crf" in entry:
            parts.append(f"without the CRF {entry['mIoU_without_crf']:.1f} %")
        if "inloop_labels_mIoU" in entry:
            parts.append(f"its in-loop pseudo-labels {entry['inloop_labels_mIoU']:.1f} %")
        if "mIoU_on_stage_images" in entry:
            parts.append(f"on the stage table's {content['stage_images']} images {entry['mIoU_on_stage_images']:.1f} %"
                         + (f" ({entry['mIoU_without_crf_on_stage_images']:.1f} % without the CRF)"
                            if "mIoU_without_crf_on_stage_images" in entry else ""))
        print("; ".join(parts))
    write_report(page.json_path, page.html_path, content, html)
    print(f"report: {page.html_path} and {page.json_path}")
    if review is not None:
        write_html(review.html, build_review_page(f"{page.title}: review queue", review))
        print(f"{review.queue.summary()}; page: {review.html}")
    return content
