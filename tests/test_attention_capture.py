"""AttentionCapture: exact attention, hooks released, flags restored, nothing retained."""

import gc
import weakref

import pytest
import timm
import torch

from wsss.models.attention_capture import AttentionCapture
from wsss.models.vit_geometry import token_layout

torch.set_num_threads(2)


def _tiny(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, depth=4, **kw).eval()


@pytest.fixture(scope="module")
def vit():
    return _tiny("vit_tiny_patch16_224", img_size=64, dynamic_img_size=True)


@pytest.fixture(scope="module")
def distilled():
    return _tiny("deit_tiny_distilled_patch16_224", img_size=64)


@pytest.fixture(scope="module")
def hybrid():
    return _tiny("vit_tiny_r_s16_p8_224", img_size=128)


def _hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()]


def _manual_attention(attn, x):
    """softmax(q kᵀ / √d) from the block's own qkv weights: B×heads×N×N."""
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return (q @ k.transpose(-2, -1) * attn.scale).softmax(-1)


@pytest.mark.parametrize("name,size", [("vit", (48, 80)), ("distilled", (64, 64)),
                                       ("hybrid", (128, 128))])
def test_captured_attention_is_post_softmax(request, name, size):
    model = request.getfixturevalue(name)
    x = torch.randn(2, 3, *size)
    inputs = {}
    handles = [blk.attn.register_forward_pre_hook(
        lambda m, args, i=i: inputs.__setitem__(i, args[0])) for i, blk in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            ref_logits = model(x)  # fused path
            with AttentionCapture(model, blocks=[1, -1]) as cap:
                logits = model(x)
                attns = cap.attentions
    finally:
        for h in handles:
            h.remove()
    layout = token_layout(model, size)
    assert cap.blocks == [1, 3]
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    heads = model.blocks[0].attn.num_heads
    for b, a in zip([1, 3], attns):
        assert a.shape == (2, heads, layout.num_tokens, layout.num_tokens)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, heads, layout.num_tokens))
        torch.testing.assert_close(a, _manual_attention(model.blocks[b].attn, inputs[b]))


def test_token_layout():
    assert token_layout(_tiny("vit_tiny_patch16_224", img_size=64, dynamic_img_size=True),
                        (48, 80)).grid == (3, 5)
    p8 = _tiny("vit_tiny_patch16_224", patch_size=8, img_size=64, dynamic_img_size=True)
    layout = token_layout(p8, (40, 64))
    assert (layout.num_prefix_tokens, layout.grid, layout.num_tokens) == (1, (5, 8), 41)
    with torch.no_grad(), AttentionCapture(p8, blocks=[0]) as cap:
        p8(torch.randn(1, 3, 40, 64))
        assert cap.attentions[0].shape[-1] == 41
    with pytest.raises(ValueError, match="patch values"):
        layout.to_grid(torch.zeros(3, 39))


def test_token_layout_distilled_and_hybrid(distilled, hybrid):
    d = token_layout(distilled, (64, 64))
    assert (d.num_prefix_tokens, d.grid) == (2, (4, 4))
    h = token_layout(hybrid, (128, 128))
    assert (h.num_prefix_tokens, h.grid) == (1, (4, 4))


def test_hooks_released_and_flags_restored(vit):
    vit.blocks[0].attn.fused_attn = False  # one block already unfused: must stay so
    before_flags = [b.attn.fused_attn for b in vit.blocks]
    before_hooks = _hook_counts(vit)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), AttentionCapture(vit, blocks=[2, 3], outputs=[1]) as cap:
        assert [b.attn.fused_attn for b in vit.blocks] == [False, True, False, False]
        assert _hook_counts(vit) != before_hooks
        for _ in range(3):  # repeated forwards overwrite, never accumulate
            vit(x)
        assert len(cap._attn) == 2 and len(cap._out) == 1
        assert cap.outputs[0].shape == (2, 17, vit.embed_dim)
        ref = weakref.ref(cap.attentions[0])
    assert _hook_counts(vit) == before_hooks
    assert [b.attn.fused_attn for b in vit.blocks] == before_flags
    assert cap._attn == {} and cap._out == {} and cap._handles == []
    gc.collect()
    assert ref() is None, "a captured tensor outlived the context"
    vit.blocks[0].attn.fused_attn = True


def test_released_on_error_and_checkpointing_restored(vit):
    before = _hook_counts(vit)
    vit.set_grad_checkpointing(True)
    with pytest.raises(RuntimeError, match="boom"):
        with AttentionCapture(vit):
            assert vit.grad_checkpointing is False
            raise RuntimeError("boom")
    assert vit.grad_checkpointing is True
    vit.set_grad_checkpointing(False)
    assert _hook_counts(vit) == before
    assert all(b.attn.fused_attn for b in vit.blocks)


def test_errors(vit):
    with pytest.raises(ValueError, match="out of range"):
        AttentionCapture(vit, blocks=[4])
    with pytest.raises(TypeError, match="VisionTransformer"):
        AttentionCapture(torch.nn.Linear(2, 2))
    with AttentionCapture(vit, blocks=[0]) as cap:
        with pytest.raises(RuntimeError, match="run a forward"):
            cap.attentions


def test_requires_grad_on_frozen_model(vit):
    for q in vit.parameters():
        q.requires_grad_(False)
    try:
        with AttentionCapture(vit, blocks=[2, 3], requires_grad=True) as cap:
            logits = vit(torch.randn(1, 3, 64, 64))
            g = torch.autograd.grad(logits[0, 1], cap.attentions)
        assert all(t.abs().sum() > 0 for t in g)
    finally:
        for q in vit.parameters():
            q.requires_grad_(True)
