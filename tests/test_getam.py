"""Batched GETAM equals the paper's per-image per-class loop; side-effect free."""

import pytest
import timm
import torch

from wsss import getam
from wsss.attention.getam import GETAM
from wsss.models.attention_capture import AttentionCapture
from wsss.models.vit_geometry import token_layout
from tests.reference.getam import getam_reference

torch.set_num_threads(2)

LABELS = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.float32)


def _tiny(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, depth=4, **kw)


FAMILIES = {
    "vit": (lambda: _tiny("vit_tiny_patch16_224", img_size=64), (64, 64)),
    "vit_dynamic_nonsquare": (
        lambda: _tiny("vit_tiny_patch16_224", img_size=64, dynamic_img_size=True), (48, 80)),
    "deit_distilled": (lambda: _tiny("deit_tiny_distilled_patch16_224", img_size=64), (64, 64)),
    "hybrid_nonsquare": (
        lambda: _tiny("vit_tiny_r_s16_p8_224", img_size=128, dynamic_img_size=True), (128, 96)),
    "conv_stem_nonsquare": (lambda: _conv_stem(), (64, 48)),  # model.conv_stem (BatchNorm in the stem)
}


def _conv_stem():
    from wsss.config import ModelConfig
    from wsss.models.classifier import create_classifier

    torch.manual_seed(0)
    return create_classifier(ModelConfig(name="vit_tiny_patch16_224", img_size=64, embed_dim=48, depth=4, num_heads=3,
                                         conv_stem=[16, 32, 48]), 5)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, size = FAMILIES[request.param]
    model = build()
    torch.manual_seed(1)
    return request.param, model, torch.randn(3, 3, *size)


def _rel_err(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("start", [None, 1])
def test_batched_equals_loop(family, start):
    name, model, x = family
    ref = getam_reference(model, x, LABELS, start_block=start)
    out = getam(model, x, LABELS, start_block=start)
    assert out.shape == (3, 5, *x.shape[-2:]) and out.dtype == torch.float32
    assert ref.abs().max() > 0
    assert _rel_err(out, ref) <= 1e-5, name
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert (out[LABELS == 0] == 0).all()
    assert (out[LABELS > 0].flatten(1).amax(1) > 0).all()


def test_distilled_uses_cls_row_and_skips_both_prefix_tokens():
    model = FAMILIES["deit_distilled"][0]().eval()
    x = torch.randn(2, 3, 64, 64)
    layout = token_layout(model, (64, 64))
    assert layout.num_prefix_tokens == 2 and layout.num_tokens == 18
    labels = torch.tensor([[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.float32)
    # independent per-pair computation, read at the cls row (0) and columns 2..17
    with AttentionCapture(model, blocks=[2, 3]) as cap:
        logits = model(x)
        g = torch.autograd.grad(logits[1, 3], cap.attentions)
        m = sum((gb[1] * a[1]).relu().mean(0) * gb[1].relu().mean(0)
                for gb, a in zip(g, cap.attentions)).relu()
    expected = torch.nn.functional.interpolate(
        m[0, 2:].reshape(1, 1, 4, 4), size=(64, 64), mode="bilinear", align_corners=True)[0, 0]
    out = getam(model, x, labels)
    assert _rel_err(out[1, 3], expected) <= 1e-5


def test_one_backward_call_and_untouched_grads(monkeypatch):
    model = FAMILIES["vit"][0]().train()
    x = torch.randn(3, 3, 64, 64)
    params = list(model.parameters())
    for q in params[::2]:
        q.grad = torch.randn_like(q)
    saved = [None if q.grad is None else q.grad.clone() for q in params]
    calls = []
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls.append(kwargs.get("is_grads_batched", False))
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    out = getam(model, x, LABELS)  # B=3, K=3 tag slots
    assert calls == [True], "expected ONE batched backward over the K tag slots"
    monkeypatch.undo()
    for q, s in zip(params, saved):
        assert (q.grad is None) if s is None else torch.equal(q.grad, s)
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():  # works under no_grad too, same result
        again = getam(model, x, LABELS)
    assert torch.equal(out, again)


def test_frozen_model_single_tag_and_no_tags():
    model = FAMILIES["vit"][0]().eval()
    x = torch.randn(2, 3, 64, 64)
    one = torch.tensor([[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)  # K = 1
    ref = getam_reference(model, x, one)
    for q in model.parameters():
        q.requires_grad_(False)
    assert _rel_err(getam(model, x, one), ref) <= 1e-5
    assert (getam(model, x, torch.zeros(2, 5)) == 0).all()


def test_start_block_validation():
    model = FAMILIES["vit"][0]().eval()
    x = torch.randn(1, 3, 64, 64)
    lab = torch.tensor([[0, 1, 0, 0, 0.]])
    assert torch.equal(getam(model, x, lab, start_block=-1), getam(model, x, lab, start_block=3))
    with pytest.raises(ValueError, match="start_block 4 out of range"):
        getam(model, x, lab, start_block=4)
    assert list(GETAM().attention_blocks(12)) == list(range(6, 12))
    with pytest.raises(ValueError, match="labels"):
        getam(model, x, torch.zeros(2, 5))


def test_fallback_per_slot_when_vmap_fails(monkeypatch):
    model = FAMILIES["vit"][0]().eval()
    x = torch.randn(3, 3, 64, 64)
    expected = getam(model, x, LABELS)
    real_grad = torch.autograd.grad

    def no_vmap(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented for aten::fake_op")
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_vmap)
    with pytest.warns(RuntimeWarning, match="one backward per tag slot"):
        out = getam(model, x, LABELS)
    assert _rel_err(out, expected) <= 1e-5


def test_getam_keeps_fused_attention_and_falls_back_when_dropout_is_live():
    from wsss.models.attention_capture import AttentionCapture
    from wsss.models.cls_row_capture import ClsRowCapture

    model = FAMILIES["vit"][0]()
    method = GETAM(1)
    assert isinstance(method.capture(model.eval()), ClsRowCapture)
    model.train()
    assert isinstance(method.capture(model), ClsRowCapture)  # attn_drop p = 0: still exact
    for block in model.blocks:
        block.attn.attn_drop.p = 0.1
    assert isinstance(method.capture(model), AttentionCapture)  # dropout inside the fused kernel
    assert isinstance(method.capture(model.eval()), ClsRowCapture)


def test_cls_row_path_equals_full_matrices_with_frozen_parameters():
    """The training loop and a frozen backbone: same maps from both captures, no .grad written."""
    from wsss.attention.base import AttentionMapMethod

    model, x = FAMILIES["vit"][0]().eval(), torch.randn(3, 3, 64, 64)
    for p in model.parameters():
        p.requires_grad_(False)
    fast = getam(model, x, LABELS, start_block=1)
    full_method = GETAM(1)
    full_method.capture = lambda m: AttentionMapMethod.capture(full_method, m)  # the N×N path
    full = full_method(model, x, LABELS)
    assert fast.abs().max() > 0 and _rel_err(fast, full) <= 1e-5
    assert all(p.grad is None for p in model.parameters())
    assert all(b.attn.fused_attn for b in model.blocks)
