"""The Mask2Former-style head (shapes, semantic inference, masked attention) and its training
loss (targets, Hungarian matching, point-sampled set loss, ignore pixels, a tiny overfit)."""

import math

import pytest
import torch
import torch.nn.functional as F

from wsss.models.heads.base import HeadOutput, QueryPredictions
from wsss.models.heads.mask2former import (
    Mask2FormerHead,
    MaskedDecoderLayer,
    attention_mask,
    semantic_probabilities,
    sine_position_encoding,
)
from wsss.train.mask_classification import (
    mask_classification_loss,
    match_queries,
    semantic_targets,
)

torch.set_num_threads(1)

D, C = 32, 3  # ViT width, foreground classes (K = 4 semantic classes, 5 class logits)


def make_tokens(batch, size, stride, has_prefix, seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = (size[0] // stride, size[1] // stride)
    count = grid[0] * grid[1]
    tokens = [(torch.randn(batch, count, D, generator=g),
               torch.randn(batch, 1, D, generator=g) if has_prefix else None) for _ in range(4)]
    return tokens, grid


def logit(p):
    return math.log(p / (1 - p))


# ---------------------------------------------------------------------------------- the head


@pytest.mark.parametrize("stride", [8, 16])
@pytest.mark.parametrize("has_prefix", [False, True])
@pytest.mark.parametrize("size", [(64, 96), (48, 80)])
def test_head_shapes(stride, has_prefix, size):
    torch.manual_seed(0)
    head = Mask2FormerHead(D, stride, C, has_prefix, hidden=16, queries=6, layers=3, heads=2)
    tokens, grid = make_tokens(2, size, stride, has_prefix)
    out = head(tokens, grid, size)
    assert isinstance(out, HeadOutput)
    assert out.seg.shape == (2, C + 1, *size)
    assert len(out.queries) == 3 + 1
    for pred in out.queries:
        assert isinstance(pred, QueryPredictions)
        assert pred.class_logits.shape == (2, 6, C + 2)
        assert pred.mask_logits.shape == (2, 6, size[0] // 4, size[1] // 4)
    assert torch.isfinite(out.seg).all()
    probs = semantic_probabilities(out.queries[-1], size)
    assert torch.allclose(probs.sum(1), torch.ones(2, *size), atol=1e-5)
    assert torch.allclose(out.seg.softmax(1), probs, atol=1e-5)


def test_head_with_no_layers_and_bad_width():
    head = Mask2FormerHead(D, 16, C, False, hidden=16, queries=4, layers=0, heads=2)
    tokens, grid = make_tokens(1, (32, 64), 16, False)
    out = head(tokens, grid, (32, 64))
    assert len(out.queries) == 1 and out.seg.shape == (1, C + 1, 32, 64)
    with pytest.raises(ValueError, match="divisible"):
        Mask2FormerHead(D, 16, C, False, hidden=18, heads=2)


def test_semantic_probabilities_by_hand():
    # K = 2 (background + 1 class), 2 queries, masks at the output size (no resize): 1×2 pixels
    cls = torch.tensor([[[math.log(0.7), math.log(0.2), math.log(0.1)],
                         [math.log(0.1), math.log(0.6), math.log(0.3)]]])  # 1×2×3
    masks = torch.tensor([[[[logit(0.8), logit(0.2)]],
                           [[logit(0.5), logit(0.9)]]]])  # 1×2×1×2
    probs = semantic_probabilities(QueryPredictions(cls, masks), (1, 2))
    expected = []
    for m0, m1 in [(0.8, 0.5), (0.2, 0.9)]:
        p = [0.7 * m0 + 0.1 * m1, 0.2 * m0 + 0.6 * m1]
        expected.append([v / sum(p) for v in p])
    expected = torch.tensor(expected).T.reshape(1, 2, 1, 2)  # B×K×H×W
    assert torch.allclose(probs, expected, atol=1e-6)
    # masks at 1/2: constant masks stay constant when upsampled
    const = torch.tensor([[[[logit(0.8)]], [[logit(0.5)]]]]).expand(1, 2, 2, 3)
    probs = semantic_probabilities(QueryPredictions(cls, const), (4, 6))
    assert probs.shape == (1, 2, 4, 6)
    assert torch.allclose(probs, expected[..., :1].expand(1, 2, 4, 6), atol=1e-6)


def test_attention_mask_thresholds_and_empty_rows():
    logits = torch.tensor([[[[-5.0, 5.0], [5.0, -5.0]],   # query 0: two pixels in its mask
                            [[-9.0, -9.0], [-9.0, -9.0]]]])  # query 1: empty mask
    mask = attention_mask(logits, (2, 2), heads=3)
    assert mask.shape == (3, 2, 4) and mask.dtype == torch.bool
    for h in range(3):
        assert mask[h, 0].tolist() == [True, False, False, True]
        assert mask[h, 1].tolist() == [False] * 4  # empty mask → attends everywhere
    assert not mask.all(-1).any()


def test_masked_cross_attention_ignores_features_outside_the_mask():
    torch.manual_seed(0)
    layer = MaskedDecoderLayer(hidden=16, heads=2).eval()
    query, query_pos = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    memory, memory_pos = torch.randn(1, 12, 16), torch.randn(1, 12, 16)
    outside = torch.zeros(12, dtype=torch.bool)
    outside[[0, 3, 4, 7, 8, 11]] = True
    mask = outside.view(1, 1, 12).repeat(2, 1, 1)  # heads × N × L
    with torch.no_grad():
        ref = layer(query, query_pos, memory, memory_pos, mask)
        noise = torch.randn(1, 12, 16) * 10 * outside.view(1, 12, 1)
        moved = layer(query, query_pos, memory + noise, memory_pos - noise, mask)
        inside = torch.randn(1, 12, 16) * (~outside).view(1, 12, 1)
        moved_inside = layer(query, query_pos, memory + inside, memory_pos, mask)
        unmasked = layer(query, query_pos, memory + noise, memory_pos - noise, None)
    assert torch.allclose(ref, moved, atol=1e-6)
    assert not torch.allclose(ref, moved_inside, atol=1e-3)  # the features it may see do count
    assert not torch.allclose(ref, unmasked, atol=1e-3)      # and the mask is what shields it


def test_empty_previous_masks_give_finite_outputs():
    torch.manual_seed(0)
    head = Mask2FormerHead(D, 16, C, True, hidden=16, queries=4, layers=3, heads=2)
    with torch.no_grad():  # every mask logit = ⟨−1, +1⟩·16 = −16: every query's mask empty
        head.mask_embed[-1].weight.zero_()
        head.mask_embed[-1].bias.fill_(-1.0)
        head.mask_features.weight.zero_()
        head.mask_features.bias.fill_(1.0)
    tokens, grid = make_tokens(2, (64, 64), 16, True)
    out = head(tokens, grid, (64, 64))
    assert (out.queries[0].mask_logits.sigmoid() < 0.5).all()
    assert torch.isfinite(out.seg).all()
    for pred in out.queries:
        assert torch.isfinite(pred.class_logits).all()
    # an empty mask means "attend everywhere", not "attend nowhere": the queries did read the
    # features, so the two images (different tokens) get different class logits at the end
    # (the first prediction, from the learned queries alone, is the same for both)
    assert torch.allclose(out.queries[0].class_logits[0], out.queries[0].class_logits[1])
    assert not torch.allclose(out.queries[-1].class_logits[0], out.queries[-1].class_logits[1], atol=1e-4)


def test_empty_mask_query_attends_everywhere():
    torch.manual_seed(0)
    layer = MaskedDecoderLayer(hidden=16, heads=2).eval()
    mask = attention_mask(torch.full((1, 1, 3, 4), -9.0), (3, 4), heads=2)  # empty mask
    query, query_pos = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    memory, memory_pos = torch.randn(1, 12, 16), torch.randn(1, 12, 16)
    with torch.no_grad():
        out = layer(query, query_pos, memory, memory_pos, mask)
        free = layer(query, query_pos, memory, memory_pos, None)
        other = layer(query, query_pos, torch.randn(1, 12, 16), memory_pos, mask)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, free, atol=1e-6)
    assert not torch.allclose(out, other, atol=1e-3)


def test_sine_position_encoding():
    pos = sine_position_encoding(3, 5, 16)
    assert pos.shape == (1, 15, 16)
    assert torch.unique(pos[0], dim=0).shape[0] == 15  # every position distinct
    with pytest.raises(ValueError):
        sine_position_encoding(3, 5, 10)


# ---------------------------------------------------------------------------------- the loss


def test_semantic_targets():
    labels = torch.tensor([[[0, 2, 255], [2, 2, 0]], [[255, 255, 255], [255, 255, 255]]])
    (classes, masks), (empty_classes, empty_masks) = semantic_targets(labels)
    assert classes.tolist() == [0, 2]
    assert masks.dtype == torch.bool and masks.shape == (2, 2, 3)
    assert masks[0].tolist() == [[True, False, False], [False, False, True]]
    assert masks[1].tolist() == [[False, True, False], [True, True, False]]
    assert empty_classes.shape == (0,) and empty_masks.shape == (0, 2, 3)


def _matching_case():
    # targets: class 1 on points 0-1, class 2 on points 2-3 (K = 3, 4 class logits)
    target_classes = torch.tensor([1, 2])
    target_points = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    # query 0: class says target 0, mask says target 1; query 1 the reverse; query 2: no object
    class_logits = torch.tensor([[0.0, 4.0, 0.0, 0.0],
                                 [0.0, 0.0, 4.0, 0.0],
                                 [0.0, 0.0, 0.0, 6.0]])
    point_logits = torch.tensor([[-6.0, -6.0, 6.0, 6.0],
                                 [6.0, 6.0, -6.0, -6.0],
                                 [0.0, 0.0, 0.0, 0.0]])
    return class_logits, point_logits, target_classes, target_points


def test_match_queries_by_hand():
    args = _matching_case()
    q, t = match_queries(*args, class_weight=1.0, mask_weight=0.0, dice_weight=0.0)
    assert dict(zip(q.tolist(), t.tolist())) == {0: 0, 1: 1}
    q, t = match_queries(*args, class_weight=0.0, mask_weight=1.0, dice_weight=0.0)
    assert dict(zip(q.tolist(), t.tolist())) == {0: 1, 1: 0}
    q, t = match_queries(*args, class_weight=0.0, mask_weight=0.0, dice_weight=1.0)
    assert dict(zip(q.tolist(), t.tolist())) == {0: 1, 1: 0}
    q, t = match_queries(*args)  # defaults 2, 5, 5: the masks win
    assert dict(zip(q.tolist(), t.tolist())) == {0: 1, 1: 0}
    assert q.dtype == t.dtype == torch.long


def test_match_queries_more_targets_than_queries_and_none():
    class_logits, point_logits, _, target_points = _matching_case()
    # 2 queries, 3 targets: the third target (class 0 on no point) resembles no query
    classes3 = torch.tensor([1, 2, 0])
    points3 = torch.cat([target_points, torch.zeros(1, 4)])
    q, t = match_queries(class_logits[:2], point_logits[:2], classes3, points3)
    assert q.tolist() == [0, 1] and t.tolist() == [1, 0]
    q, t = match_queries(class_logits, point_logits, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    assert q.shape == t.shape == (0,) and q.dtype == torch.long


def random_queries(batch, queries, k, mask_size, layers=2, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [QueryPredictions(torch.randn(batch, queries, k + 1, generator=g).requires_grad_(requires_grad),
                             (2 * torch.randn(batch, queries, *mask_size, generator=g)).requires_grad_(requires_grad))
            for _ in range(layers)]


def block_labels(seed=0):
    """2×32×48 labels in 0..3, constant on 4×4 blocks (so they are exact at 1/4), with ignore."""
    g = torch.Generator().manual_seed(seed)
    low = torch.zeros(2, 8, 12, dtype=torch.long)
    low[0, 1:5, 2:7] = 1
    low[0, 4:8, 8:12] = 3
    low[1, 0:3, 0:12] = 2
    low[1, 5:8, 3:6] = 1
    labels = low.repeat_interleave(4, 1).repeat_interleave(4, 2)
    labels[0, 20:32, 0:16] = 255
    labels[1][torch.rand(32, 48, generator=g) < 0.1] = 255  # scattered ignore pixels too
    return low, labels


def test_points_are_valid_pixel_centres_at_any_mask_resolution():
    from wsss.train.mask_classification import _sample_points

    labels = torch.full((1, 16, 24), 255, dtype=torch.long)
    labels[0, 2:9, 5:20] = 1
    (grid, flat), = _sample_points(labels, 300, torch.Generator().manual_seed(0))
    assert (labels.view(-1)[flat] == 1).all()
    y, x = (flat // 24).float(), (flat % 24).float()
    # mask logits at 1/4 holding their own continuous coordinates (a ramp): bilinear sampling at
    # the pixel centres gives (x + 0.5) / 4 − 0.5 (clamped to the border cells' centres)
    ramp_x = torch.arange(6.0).view(1, 1, 1, 6).expand(1, 1, 4, 6)
    ramp_y = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 1, 4, 6)
    got = F.grid_sample(torch.cat([ramp_x, ramp_y], 1), grid, align_corners=False, padding_mode="border")[0, :, 0]
    assert torch.allclose(got[0], ((x + 0.5) / 4 - 0.5).clamp(0, 5), atol=1e-5)
    assert torch.allclose(got[1], ((y + 0.5) / 4 - 0.5).clamp(0, 3), atol=1e-5)
    with pytest.raises(ValueError, match="labels must lie"):
        mask_classification_loss(random_queries(1, 3, 2, (4, 6)), torch.full_like(labels, 4))


def test_loss_finite_positive_on_random_inputs():
    _, labels = block_labels()
    queries = random_queries(2, 5, 4, (8, 12), layers=3)
    loss = mask_classification_loss(queries, labels, num_points=256, generator=torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    one = mask_classification_loss(queries[:1], labels, num_points=256, generator=torch.Generator().manual_seed(0))
    assert loss > one  # deep supervision sums the layers


def test_loss_ignores_mask_logits_at_ignore_pixels():
    labels = torch.randint(0, 4, (2, 32, 48), generator=torch.Generator().manual_seed(1))
    labels[0, 4:28, 8:40] = 255
    labels[1, :, 24:] = 255
    valid = (labels != 255).float().unsqueeze(1)
    # mask cell c (1/4) is read by bilinear samples at label pixels 4c−2 .. 4c+5: cells with no
    # valid pixel there are what the predictions may change freely
    seen = F.max_pool2d(valid, kernel_size=8, stride=4, padding=2)[:, 0] > 0  # 2×8×12
    assert (~seen).any(dim=(1, 2)).all()
    queries = random_queries(2, 5, 4, (8, 12), layers=2)
    changed = [QueryPredictions(q.class_logits, torch.where(~seen[:, None], q.mask_logits + 50 * torch.randn_like(
        q.mask_logits), q.mask_logits)) for q in queries]

    def loss(qs):
        return mask_classification_loss(qs, labels, num_points=512, generator=torch.Generator().manual_seed(3))

    assert torch.allclose(loss(queries), loss(changed), rtol=0, atol=1e-5)
    # the test can fail: changing the logits where valid pixels read them does change the loss
    at_valid = [QueryPredictions(q.class_logits, torch.where(seen[:, None], -q.mask_logits, q.mask_logits))
                for q in queries]
    assert not torch.allclose(loss(queries), loss(at_valid), atol=1e-3)


def test_loss_all_ignore_image():
    _, labels = block_labels()
    labels[1] = 255
    queries = random_queries(2, 5, 4, (8, 12), layers=2, requires_grad=True)
    loss = mask_classification_loss(queries, labels, num_points=128)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(queries[0].class_logits.grad).all()
    assert queries[0].mask_logits.grad[1].abs().sum() == 0  # no mask term for the empty image
    assert queries[0].class_logits.grad[1].abs().sum() > 0  # but "no object" for its queries
    everything = torch.full((1, 16, 16), 255, dtype=torch.long)
    loss = mask_classification_loss(random_queries(1, 3, 4, (4, 4)), everything, num_points=64)
    assert torch.isfinite(loss) and loss > 0


def test_perfect_prediction_beats_random():
    low, labels = block_labels()
    batch, n, k = 2, 6, 4
    cls = torch.full((batch, n, k + 1), -10.0)
    cls[..., k] = 10.0  # unused queries: no object
    masks = torch.full((batch, n, 8, 12), -10.0)
    for b in range(batch):
        for i, c in enumerate(torch.unique(low[b]).tolist()):
            cls[b, i, k], cls[b, i, c] = -10.0, 10.0
            masks[b, i] = torch.where(low[b] == c, 10.0, -10.0)
    perfect = [QueryPredictions(cls, masks)] * 2
    good = mask_classification_loss(perfect, labels, num_points=512, generator=torch.Generator().manual_seed(0))
    bad = mask_classification_loss(random_queries(batch, n, k, (8, 12)), labels, num_points=512,
                                   generator=torch.Generator().manual_seed(0))
    assert good < 0.5 * bad
    assert good < 2.0


def test_gradients_reach_the_head():
    torch.manual_seed(0)
    head = Mask2FormerHead(D, 16, C, True, hidden=16, queries=5, layers=3, heads=2)
    tokens, grid = make_tokens(2, (32, 48), 16, True)
    _, labels = block_labels()
    out = head(tokens, grid, (32, 48))
    loss = mask_classification_loss(out.queries, labels, num_points=256, generator=torch.Generator().manual_seed(0))
    loss.backward()
    missing = [name for name, p in head.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [name for name, p in head.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero


def test_tiny_overfit():
    torch.manual_seed(0)
    size, stride = (64, 64), 16
    head = Mask2FormerHead(D, stride, C, True, hidden=32, queries=8, layers=3, heads=4)
    tokens, grid = make_tokens(1, size, stride, True, seed=5)
    labels = torch.zeros(1, *size, dtype=torch.long)
    labels[0, 8:40, 4:36] = 1
    labels[0, 30:60, 40:62] = 2
    labels[0, 0:20, 44:64] = 3
    labels[0, 44:52, :] = 255
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        out = head(tokens, grid, size)
        loss = mask_classification_loss(out.queries, labels, num_points=512, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad():
        pred = head(tokens, grid, size).seg.argmax(1)
    valid = labels != 255
    accuracy = (pred[valid] == labels[valid]).float().mean().item()
    assert accuracy > 0.9, accuracy
