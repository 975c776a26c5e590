"""The training loss of mask-classification heads (``wsss.models.heads.mask2former``).

As MaskFormer (Cheng et al., NeurIPS 2021) and Mask2Former (Cheng et al., CVPR 2022) train
them, with DETR's set prediction loss (Carion et al., ECCV 2020):

1. **Targets**: per image, one binary mask per semantic class present (background 0 included;
   pixels labelled 255 belong to no mask): :func:`semantic_targets`.
2. **Points**: Mask2Former computes the mask terms on sampled points instead of whole masks,
   for memory. Here each image gets ``num_points`` points drawn uniformly (with replacement)
   among its NON-ignore pixels (no importance sampling: the paper's over-sampling of uncertain
   points is left out), once per call; the same points serve the matching and the losses of
   every decoder layer. The mask logits (at 1/4 of the labels' resolution, or any resolution
   covering the same field of view) are read at the pixel centres with ``F.grid_sample``
   (bilinear, align_corners=False: label pixel (y, x) of an H×W map sits at normalised
   ((2x+1)/W − 1, (2y+1)/H − 1), which is the same place in the coarser mask grid; border
   padding, so the outermost pixels read the border cells as bilinear upsampling does); the
   targets are read at the same pixels.
3. **Matching** per image and per layer: the Hungarian assignment
   (``scipy.optimize.linear_sum_assignment``) of queries to targets minimising
   −class_weight · p(target class) + mask_weight · BCE + dice_weight · Dice on the points
   (:func:`match_queries`; no gradient through it).
4. **Loss** per layer: class_weight · CE over all queries (matched → their target's class,
   unmatched → "no object", whose class weight is ``no_object_weight``) + mask_weight · sigmoid
   BCE + dice_weight · Dice of the matched queries on the points (each averaged over the
   matched masks of the batch). :func:`mask_classification_loss` sums it over the layers (deep
   supervision).

Ignore pixels never enter a term: no point is drawn there and no target covers them, so the
loss depends on the mask logits only through bilinear samples at valid pixel centres (the
mask cells within one cell of a valid pixel). An image with no valid pixel has no targets and
no points: all its queries are "no object" in the class loss, and it adds no mask term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from wsss.models.heads.base import QueryPredictions

__all__ = ["IGNORE_INDEX", "dice_loss", "mask_classification_loss", "match_queries", "semantic_targets"]

IGNORE_INDEX = 255


def semantic_targets(labels: Tensor) -> list[tuple[Tensor, Tensor]]:
    """labels B×H×W int64 (0 background, 1..C, 255 ignore) → per image (classes T int64,
    ascending, the classes present; masks T×H×W bool, masks[t] = labels == classes[t]). Ignore
    pixels are in no mask; an all-ignore image gives T = 0 (shapes (0,) and 0×H×W)."""
    if labels.dim() != 3:
        raise ValueError(f"labels must be B×H×W, got shape {tuple(labels.shape)}")
    targets = []
    for image in labels:
        classes = torch.unique(image)
        classes = classes[classes != IGNORE_INDEX].long()
        targets.append((classes, image.unsqueeze(0) == classes[:, None, None]))
    return targets


def dice_loss(probs: Tensor, targets: Tensor) -> Tensor:
    """Dice loss per row: probs, targets M×P in [0, 1] → M, 1 − (2Σpt + 1) / (Σp + Σt + 1)."""
    return 1 - (2 * (probs * targets).sum(-1) + 1) / (probs.sum(-1) + targets.sum(-1) + 1)


def match_queries(
    class_logits: Tensor,
    point_logits: Tensor,
    target_classes: Tensor,
    target_points: Tensor,
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
) -> tuple[Tensor, Tensor]:
    """Hungarian matching of N queries to T targets of one image.

    class_logits: N×(K+1); point_logits: N×P mask logits at P points; target_classes: T int64
    in 0..K−1; target_points: T×P float 0/1. Cost[n, t] = −class_weight · softmax(class)[n, c_t]
    + mask_weight · mean_P BCE(point_logits[n], target_points[t]) + dice_weight ·
    Dice(sigmoid(point_logits[n]), target_points[t]). Returns (query_idx, target_idx), int64 of
    length min(N, T), query_idx ascending, on the inputs' device (T > N: only N targets are
    matched; T = 0: both empty). No gradient.
    """
    device = class_logits.device
    n, t = class_logits.shape[0], target_classes.shape[0]
    if t == 0 or n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    with torch.no_grad():
        logits = point_logits.float()
        targets = target_points.float()
        points = max(1, logits.shape[1])
        cost_class = -class_logits.float().softmax(-1)[:, target_classes]  # N×T
        # BCE(x, y) = y·softplus(−x) + (1 − y)·softplus(x), averaged over the points
        cost_bce = (F.softplus(-logits) @ targets.T + F.softplus(logits) @ (1 - targets).T) / points
        probs = logits.sigmoid()
        cost_dice = 1 - (2 * probs @ targets.T + 1) / (probs.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)
        cost = class_weight * cost_class + mask_weight * cost_bce + dice_weight * cost_dice
        cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
        rows, cols = linear_sum_assignment(cost.cpu().double().numpy())
    return (torch.as_tensor(rows, dtype=torch.long, device=device),
            torch.as_tensor(cols, dtype=torch.long, device=device))


def _sample_points(labels: Tensor, num_points: int, generator: torch.Generator | None
                   ) -> list[tuple[Tensor, Tensor] | None]:
    """Per image: (grid 1×1×P×2 normalised (x, y) of the sampled pixel centres, flat pixel
    indices P) among the non-ignore pixels, or None when the image has no valid pixel."""
    _, height, width = labels.shape
    draw_device = generator.device if generator is not None else labels.device
    samples = []
    for image in labels:
        valid = (image.reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)
        if valid.numel() == 0:
            samples.append(None)
            continue
        pick = torch.randint(valid.numel(), (num_points,), generator=generator, device=draw_device)
        flat = valid[pick.to(labels.device)]
        y, x = flat // width, flat % width
        grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)
        samples.append((grid.view(1, 1, -1, 2), flat))
    return samples


def mask_classification_loss(
    queries: list[QueryPredictions],
    labels: Tensor,
    num_points: int = 1024,
    class_weight: float = 2.0,
    mask_weight: float = 5.0,
    dice_weight: float = 5.0,
    no_object_weight: float = 0.1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The set prediction loss summed over the decoder layers' predictions (scalar).

    queries: per layer, class_logits B×N×(K+1) and mask_logits B×N×h'×w' (h'×w' covering the
    labels' field of view, normally H/4×W/4); labels: B×H×W int64 in 0..K−1 or 255 (ignore);
    num_points: P points per image, uniform among its non-ignore pixels (``generator`` draws
    them; once per call, shared by the layers). Per layer: class_weight · weighted CE over all
    B·N queries (no-object class weight ``no_object_weight``; weighted mean as
    ``F.cross_entropy``) + mask_weight · mean BCE + dice_weight · Dice over the matched masks
    of the batch. Images without a valid pixel: class term only (every query "no object").
    """
    if not queries:
        raise ValueError("mask_classification_loss needs at least one prediction")
    if labels.dim() != 3:
        raise ValueError(f"labels must be B×H×W, got shape {tuple(labels.shape)}")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    batch, _, k1 = queries[0].class_logits.shape
    if labels.shape[0] != batch:
        raise ValueError(f"{labels.shape[0]} label maps for a batch of {batch} predictions")
    labels = labels.long()
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= k1 - 1))
    if bool(bad.any()):
        raise ValueError(f"labels must lie in 0..{k1 - 2} or be {IGNORE_INDEX}")
    targets = semantic_targets(labels)
    samples = _sample_points(labels, num_points, generator)
    # target points per image: T×P float, read at the sampled pixels
    target_points = [
        (masks.reshape(masks.shape[0], -1)[:, s[1]].float() if s is not None else None)
        for (_, masks), s in zip(targets, samples)
    ]
    no_object = k1 - 1
    weight = torch.ones(k1, device=queries[0].class_logits.device)
    weight[no_object] = no_object_weight
    total = labels.new_zeros((), dtype=torch.float32)
    for pred in queries:
        class_logits, mask_logits = pred.class_logits, pred.mask_logits
        class_target = torch.full(class_logits.shape[:2], no_object, dtype=torch.long, device=class_logits.device)
        matched_logits, matched_targets = [], []
        for b in range(batch):
            if samples[b] is None or targets[b][0].numel() == 0:
                continue
            grid, _ = samples[b]
            point_logits = F.grid_sample(mask_logits[b:b + 1].float(), grid.to(mask_logits.device, torch.float32),
                                         mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0]
            q_idx, t_idx = match_queries(class_logits[b], point_logits, targets[b][0], target_points[b],
                                         class_weight, mask_weight, dice_weight)
            class_target[b, q_idx] = targets[b][0][t_idx]
            matched_logits.append(point_logits[q_idx])
            matched_targets.append(target_points[b][t_idx])
        loss = class_weight * F.cross_entropy(class_logits.float().flatten(0, 1), class_target.flatten(),
                                              weight=weight)
        if matched_logits:
            logits, target = torch.cat(matched_logits), torch.cat(matched_targets)
            num_masks = max(1, logits.shape[0])
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(-1).sum() / num_masks
            dice = dice_loss(logits.sigmoid(), target).sum() / num_masks
            loss = loss + mask_weight * bce + dice_weight * dice
        total = total + loss
    return total
