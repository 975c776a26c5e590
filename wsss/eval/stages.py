"""The stage table: every map method through the same chain, scored at every stage.

Stages, on the same images: raw maps (best background threshold) → +PAMR (best threshold) →
+saliency and conflict map (the label rule) → +SAM (only with ``refine.sam.enabled``) → +CRF
(after SAM when SAM is on). The trivial baseline of the data set is scored on the same images.
One pass per method; saliency is computed once per image and shared by all methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from wsss.config import CamConfig, RefineConfig
from wsss.data.base import Dataset, Sample
from wsss.data.dataset_walk import Walk, run_dataset
from wsss.eval.confusion import ConfusionMatrix
from wsss.eval.evaluate import DEFAULT_THRESHOLDS
from wsss.eval.trivial_baseline import trivial_baseline_label
from wsss.refine.chain import ChainResult, offline_labeler
from wsss.refine.crf import crf_executor
from wsss.refine.saliency import SaliencySource, saliency_source

STAGES = ("raw", "+PAMR", "+saliency, conflict", "+CRF")
SAM_STAGE = "+SAM"  # between "+saliency, conflict" and "+CRF", only when refine.sam is enabled


class SharedSaliency(SaliencySource):
    """Wraps a source and keeps each image's result, so several methods share one computation."""

    def __init__(self, source: SaliencySource):
        self.source, self.name = source, source.name
        self._cache: dict[str, torch.Tensor | None] = {}

    def compute(self, samples, images, sizes):
        missing = [i for i, s in enumerate(samples) if s.id not in self._cache]
        if missing:
            fresh = self.source([samples[i] for i in missing], None if images is None else images[missing],
                                size=sizes[missing[0]])
            for i, mask in zip(missing, fresh):
                self._cache[samples[i].id] = mask
        return [self._cache[s.id] for s in samples]


@dataclass
class MethodStages:
    """Confusion matrices of one method: per threshold for the map stages, one per label stage
    (sam: the SAM stage's labels, None when it is off)."""

    raw: dict[float, ConfusionMatrix]
    pamr: dict[float, ConfusionMatrix]
    rule: ConfusionMatrix
    crf: ConfusionMatrix
    sam: ConfusionMatrix | None = None

    def best(self, sweep: dict[float, ConfusionMatrix]) -> tuple[float, ConfusionMatrix]:
        t = max(sweep, key=lambda k: np.nan_to_num(sweep[k].miou, nan=-1.0))
        return t, sweep[t]

    def matrices(self) -> dict[str, ConfusionMatrix]:
        sam = {} if self.sam is None else {SAM_STAGE: self.sam}
        return {"raw": self.best(self.raw)[1], "+PAMR": self.best(self.pamr)[1],
                "+saliency, conflict": self.rule, **sam, "+CRF": self.crf}


@dataclass
class StageResults:
    classes: list[str]
    methods: dict[str, MethodStages] = field(default_factory=dict)
    trivial: ConfusionMatrix | None = None
    examples: dict[str, list[tuple[Sample, ChainResult, int]]] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)  # the images scored (unreadable ones left out)
    saliency: str = "none"  # the saliency source of the label stage (refine.saliency.source)
    failed: dict[str, str] = field(default_factory=dict)  # image id → why it could not be scored

    @property
    def num_images(self) -> int:
        return len(self.ids)

    @property
    def columns(self) -> tuple[str, ...]:
        """The stage names: :data:`STAGES`, with "+SAM" before "+CRF" when a method has it."""
        if any(stages.sam is not None for stages in self.methods.values()):
            return (*STAGES[:-1], SAM_STAGE, STAGES[-1])
        return STAGES

    def rows(self) -> list[dict]:
        """Stage-table rows (mIoU in percent), one per method, plus the trivial baseline."""
        rows = []
        for name, stages in self.methods.items():
            t_raw, raw = stages.best(stages.raw)
            t_pamr, refined = stages.best(stages.pamr)
            sam = {} if stages.sam is None else {SAM_STAGE: 100 * stages.sam.miou}
            rows.append({"method": name, "raw": 100 * raw.miou, "raw t": t_raw, "+PAMR": 100 * refined.miou,
                         "+PAMR t": t_pamr, "+saliency, conflict": 100 * stages.rule.miou, **sam,
                         "+CRF": 100 * stages.crf.miou})
        if self.trivial is not None:
            rows.append({"method": "trivial baseline", "+CRF": 100 * self.trivial.miou})
        return rows

    def drops(self) -> list[str]:
        """Where a refinement step does not help: one line per method and stage whose mIoU is
        below the previous stage's, then what such a drop means (empty when every step helps)."""
        lines = []
        for name, stages in self.methods.items():
            scores = [(stage, 100 * matrix.miou) for stage, matrix in stages.matrices().items()]
            for (before, a), (stage, b) in zip(scores, scores[1:]):
                if b < a:
                    lines.append(f"{name}: {stage} {b:.1f} is below {before} {a:.1f}")
        if not lines:
            return []
        lines.append("raw and +PAMR are scored at the background threshold that is best against the ground "
                     "truth (the usual protocol for maps); the label stages are made without it, so part of a "
                     "drop at '+saliency, conflict' is the loss of that oracle threshold")
        if self.saliency == "tokencut":
            lines.append("saliency: TokenCut on the classifier's last-block keys; on a ViT trained from tags "
                         "(not self-supervised, as DINO is) the cut often follows colour regions instead of "
                         "objects, and pixels it leaves out become background; compare with "
                         "--set refine.saliency.source=none (background from alpha alone)")
        return lines

    def text_table(self) -> str:
        header = f"{'method':<18}" + "".join(f"{s:>22}" for s in self.columns)
        lines = [f"mIoU (%) on {self.num_images} images; raw and +PAMR at their best background threshold", header]
        for name, stages in self.methods.items():
            cells = []
            for stage, matrix in stages.matrices().items():
                cells.append(f"{100 * matrix.miou:22.1f}")
            lines.append(f"{name:<18}" + "".join(cells))
        if self.trivial is not None:
            lines.append(f"{'trivial baseline':<18}{100 * self.trivial.miou:22.1f}  (every non-background-coloured pixel → the tag)")
        if self.failed:
            first = next(iter(self.failed.items()))
            lines.append(f"not scored: {len(self.failed)} image(s), e.g. {first[0]}: {first[1]}")
        drops = self.drops()
        if drops:
            lines += ["where a step does not help:", *(f"  {line}" for line in drops)]
        return "\n".join(lines)


def _sweep_update(sweep: dict[float, ConfusionMatrix], maps: torch.Tensor, gt: np.ndarray) -> None:
    """maps: C×H×W in [0, 1] (untagged classes 0) → argmax labels at each background threshold."""
    peak, best = maps.max(0)
    peak, label = peak.numpy(), (best + 1).numpy().astype(np.uint8)
    for t, matrix in sweep.items():
        matrix.update(np.where(peak > t, label, 0).astype(np.uint8), gt)


def evenly_spaced(ids: list[str], count: int | None) -> list[str]:
    """``count`` of ``ids`` spread evenly over the list (all of them when count is None or
    not smaller than the list)."""
    if count is None or count >= len(ids):
        return list(ids)
    return [ids[i * len(ids) // count] for i in range(count)]


def run_stages(
    model: torch.nn.Module,
    cam: CamConfig,
    refine: RefineConfig,
    dataset: Dataset,
    methods: list[str],
    stage_images: int | None = None,
    examples: int = 6,
    progress: bool = True,
) -> StageResults:
    """Score every method of ``methods`` at every stage on ``dataset`` (which needs masks), or
    on ``stage_images`` of its images, evenly spaced (``report.stage_images``).

    Each method runs the offline chain of ``cam`` (its views, ``cam.batch_size``) and
    ``refine``; the ``refine.crf`` kernels make the +CRF stage whether or not the CRF is enabled
    for the pseudo-labels (the stage table always shows it). With ``refine.sam.enabled`` the
    SAM stage's labels are scored as "+SAM" and the +CRF stage is the CRF on them.
    """
    shared = SharedSaliency(saliency_source(refine.saliency, model=model, dataset=dataset))
    num = dataset.num_classes + 1
    results = StageResults(classes=list(dataset.classes), trivial=ConfusionMatrix(num), saliency=shared.name)
    ids = evenly_spaced(dataset.ids, stage_images)
    with crf_executor(refine.crf) as executor:  # one pool for every batch
        for name in methods:
            labeler = offline_labeler(model, cam.model_copy(update={"method": name}), refine, dataset, crf=True,
                                      executor=executor, saliency=shared)
            stages = MethodStages({t: ConfusionMatrix(num) for t in DEFAULT_THRESHOLDS},
                                  {t: ConfusionMatrix(num) for t in DEFAULT_THRESHOLDS}, ConfusionMatrix(num), ConfusionMatrix(num),
                                  ConfusionMatrix(num) if refine.sam.enabled else None)
            kept: list = []

            def compute(batch: list[Sample]) -> list[tuple[ChainResult, int]]:
                result = labeler(batch)
                return [(result, i) for i in range(len(batch))]

            def write(sample: Sample, item: tuple[ChainResult, int], stages=stages, kept=kept, name=name) -> None:
                result, i = item
                gt = sample.mask if sample.mask is not None else dataset.read_mask(sample.id)
                _sweep_update(stages.raw, result.raw[i].cpu(), gt)
                _sweep_update(stages.pamr, result.refined[i].cpu(), gt)
                stages.rule.update(result.rule[i].cpu().numpy(), gt)
                if stages.sam is not None and result.sam is not None:
                    stages.sam.update(result.sam[i].cpu().numpy(), gt)
                stages.crf.update(result.labels[i].cpu().numpy(), gt)
                if name == methods[0]:
                    results.trivial.update(trivial_baseline_label(sample.image, sample.tags), gt)
                    results.ids.append(sample.id)
                if len(kept) < examples:
                    kept.append((sample, result, i))

            walk = Walk(ids=ids, batch_size=cam.batch_size, desc=f"stages: {name}", progress=progress,
                        on_failure=results.failed.setdefault, needs_masks=True, size_key=labeler.size_key)
            run_dataset(dataset, compute, write, walk)
            results.methods[name] = stages
            results.examples[name] = kept
    return results
