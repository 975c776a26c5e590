"""A confusion matrix over label maps and the segmentation metrics read from it.

Label maps are integer arrays of any shape (usually H×W): 0 = background, 1..C-1 the
foreground classes (``num_classes`` = C counts the background), 255 = ignore.

- gt == 255: the pixel is not counted at all.
- pred == 255 (no prediction) where gt is a class k: a miss for k (counts against k's
  recall, IoU and the pixel accuracy) that is no false positive for any class.

Every metric is NaN where it is undefined (a class that never occurs), never a 0 that would
pull a mean down.
"""

from __future__ import annotations

import numpy as np

from wsss.data.label_png import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates pixel counts: ``matrix[g, p]`` = pixels of ground truth g predicted as p.

    matrix: C×C int64 (rows ground truth, columns prediction).
    missed: C int64, pixels of ground truth g predicted as 255.
    """

    def __init__(self, num_classes: int):
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.missed = np.zeros(num_classes, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> "ConfusionMatrix":
        """Add one prediction: ``pred`` and ``gt`` integer arrays of one shape, values 0..C-1 or 255."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
        for name, array in (("prediction", pred), ("ground truth", gt)):
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"{name} must be an integer label map, got dtype {array.dtype}")
        pred, gt = pred.ravel().astype(np.int64), gt.ravel().astype(np.int64)
        keep = gt != IGNORE_INDEX
        pred, gt = pred[keep], gt[keep]
        for name, array in (("prediction", pred), ("ground truth", gt)):
            bad = (array < 0) | ((array >= self.num_classes) & (array != IGNORE_INDEX))
            if bad.any():
                raise ValueError(
                    f"{name} holds value {int(array[bad][0])}; valid: 0..{self.num_classes - 1} or {IGNORE_INDEX}"
                )
        miss = pred == IGNORE_INDEX
        self.missed += np.bincount(gt[miss], minlength=self.num_classes)
        hit = ~miss
        counts = np.bincount(gt[hit] * self.num_classes + pred[hit], minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add the counts of ``other`` (same num_classes) into this matrix; returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        self.matrix += other.matrix
        self.missed += other.missed
        return self

    @property
    def true_positives(self) -> np.ndarray:
        """C int64."""
        return np.diag(self.matrix).copy()

    @property
    def gt_counts(self) -> np.ndarray:
        """C int64: pixels of each ground-truth class (including those predicted as 255)."""
        return self.matrix.sum(axis=1) + self.missed

    @property
    def pred_counts(self) -> np.ndarray:
        """C int64: pixels predicted as each class (on non-ignored ground truth)."""
        return self.matrix.sum(axis=0)

    @property
    def iou(self) -> np.ndarray:
        """C float64 in [0, 1]: TP / (gt + pred − TP); NaN for a class absent from both."""
        return _ratio(self.true_positives, self.gt_counts + self.pred_counts - self.true_positives)

    @property
    def precision(self) -> np.ndarray:
        """C float64 in [0, 1]: TP / predicted pixels; NaN for a class never predicted."""
        return _ratio(self.true_positives, self.pred_counts)

    @property
    def recall(self) -> np.ndarray:
        """C float64 in [0, 1]: TP / ground-truth pixels; NaN for a class absent from the ground truth."""
        return _ratio(self.true_positives, self.gt_counts)

    @property
    def miou(self) -> float:
        """Mean IoU over the classes where it is defined (background included); NaN if none is."""
        iou = self.iou
        return float(np.mean(iou[~np.isnan(iou)])) if not np.isnan(iou).all() else float("nan")

    @property
    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels (ignored ones excluded), in [0, 1]; NaN when empty."""
        total = int(self.gt_counts.sum())
        return float(self.true_positives.sum() / total) if total else float("nan")

    def table(self, class_names: list[str]) -> str:
        """Fixed-width text table: per-class IoU, precision, recall, then mIoU and pixel accuracy.

        class_names: C names, or the C−1 foreground names (then 'background' is prepended).
        """
        names = list(class_names)
        if len(names) == self.num_classes - 1:
            names = ["background"] + names
        if len(names) != self.num_classes:
            raise ValueError(
                f"got {len(class_names)} class names for a {self.num_classes}-class matrix "
                f"(give {self.num_classes} names, or {self.num_classes - 1} without background)"
            )
        width = max(12, *(len(name) for name in names))
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'prec':>6}  {'recall':>6}  {'pixels':>10}"]
        for name, iou, precision, recall, count in zip(
            names, self.iou, self.precision, self.recall, self.gt_counts
        ):
            lines.append(f"{name:<{width}}  {_fmt(iou)}  {_fmt(precision)}  {_fmt(recall)}  {count:>10d}")
        lines.append(f"{'mIoU':<{width}}  {_fmt(self.miou)}")
        lines.append(f"{'pixel acc.':<{width}}  {_fmt(self.pixel_accuracy)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        pixels = int(self.gt_counts.sum())
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={pixels}, miou={self.miou:.4f})"


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise numerator / denominator as float64, NaN where the denominator is 0."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _fmt(value: float) -> str:
    return f"{'n/a':>6}" if np.isnan(value) else f"{value:>6.4f}"
