"""Baseline maps on the GETAM interface: shapes, zeros, distinctness, exact formulas."""

import itertools

import pytest
import timm
import torch

from wsss.attention import MAP_METHODS, AttentionMapMethod, make_map_method
from wsss.attention.base import eval_mode
from wsss.models.attention_capture import AttentionCapture

torch.set_num_threads(2)

LABELS = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.float32)
NAMES = ["getam", "attention", "rollout", "relevance", "gradcam"]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False,
                              num_classes=5, depth=4, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    maps, released = {}, {}
    before = _hooks(model)
    for name in NAMES:
        maps[name] = make_map_method(name)(model, x, LABELS)
        released[name] = _hooks(model) == before and all(b.attn.fused_attn for b in model.blocks)
    return model, x, maps, released


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_shapes_finite_and_untagged_zero(setup):
    model, x, maps, _ = setup
    for name, m in maps.items():
        assert m.shape == (2, 5, 64, 64), name
        assert torch.isfinite(m).all() and (m >= 0).all(), name
        assert (m[LABELS == 0] == 0).all(), name
        assert (m[LABELS > 0].flatten(1).amax(1) > 0).all(), name
        assert not m.requires_grad


def test_methods_differ(setup):
    _, _, maps, _ = setup
    for a, b in itertools.combinations(NAMES, 2):
        assert not torch.allclose(maps[a], maps[b]), (a, b)
    for name in ("attention", "rollout"):  # class-agnostic: same map for both tags of image 0
        assert torch.equal(maps[name][0, 0], maps[name][0, 2])
    for name in ("getam", "relevance", "gradcam"):
        assert not torch.equal(maps[name][0, 0], maps[name][0, 2])


def test_hooks_released_and_flags_restored(setup):
    *_, released = setup
    assert released == {name: True for name in NAMES}


def test_registry():
    assert set(MAP_METHODS) == set(NAMES)
    assert isinstance(make_map_method("getam", start_block=1), AttentionMapMethod)
    with pytest.raises(ValueError) as err:
        make_map_method("gradcam++")
    msg = str(err.value)
    assert "'gradcam++'" in msg and all(n in msg for n in NAMES)


def _per_pair_grads(model, x, targets_of):
    """Paper-style reference: per (image, class) autograd of the captured tensors."""
    with eval_mode(model), AttentionCapture(model, outputs=[len(model.blocks) - 2]) as cap:
        logits = model(x)
        out = {}
        for i, c in zip(*torch.nonzero(LABELS, as_tuple=True)):
            out[int(i), int(c)] = torch.autograd.grad(
                logits[i, c], targets_of(cap), retain_graph=True)
        return [a.detach() for a in cap.attentions], [t.detach() for t in cap.outputs], out


def _upsample(patch_row):
    return torch.nn.functional.interpolate(patch_row.reshape(1, 1, 4, 4), size=(64, 64),
                                           mode="bilinear", align_corners=True)[0, 0]


def test_rollout_and_relevance_equal_full_matrix_products(setup):
    model, x, maps, _ = setup
    atts, _, grads = _per_pair_grads(model, x, lambda cap: cap.attentions)
    eye = torch.eye(18)
    for i in range(2):
        roll = eye
        for a in atts:  # Ã_L ⋯ Ã_1
            m = a[i].mean(0) + eye
            roll = (m / m.sum(-1, keepdim=True)) @ roll
        torch.testing.assert_close(maps["rollout"][i, 3 if i else 0], _upsample(roll[0, 2:]))
    for (i, c), g in grads.items():
        rel = eye
        for a, gb in zip(atts, g):  # R ← R + Ā·R, first block to last
            rel = rel + (gb[i] * a[i]).clamp(min=0).mean(0) @ rel
        torch.testing.assert_close(maps["relevance"][i, c], _upsample(rel[0, 2:]))


def test_gradcam_equals_per_pair(setup):
    model, x, maps, _ = setup
    _, toks, grads = _per_pair_grads(model, x, lambda cap: cap.outputs)
    for (i, c), (g,) in grads.items():
        t, gi = toks[0][i, 2:], g[i, 2:]  # P×D patch tokens of the block entering the last
        cam = (t @ gi.mean(0)).clamp(min=0)
        torch.testing.assert_close(maps["gradcam"][i, c], _upsample(cam))


def test_maps_from_capture_keeps_graph_for_training(setup):
    model, x, maps, _ = setup
    method = make_map_method("getam")
    with method.capture(model) as cap:
        logits = model(x)
        out = method.maps_from_capture(model, logits, cap, LABELS, x.shape[-2:],
                                       retain_graph=True)
        loss = torch.nn.functional.multilabel_soft_margin_loss(logits, LABELS)
        loss.backward()  # the second backward of single-stage training
    assert torch.allclose(out, maps["getam"], rtol=1e-5, atol=1e-8)
    assert model.head.weight.grad is not None
    model.zero_grad(set_to_none=True)
