"""Mixed precision (wsss.precision): the trainers' autocast and the offline maps' ``cam.amp``."""

from __future__ import annotations

import numpy as np
import torch

from wsss.attention.views import configured_map_method
from wsss.config import CamConfig, ModelConfig
from wsss.models.classifier import create_classifier
from wsss.precision import (autocast_dtype, bfloat16_autocast_dtype, cpu_has_native_bf16, describe_precision,
                            explicit_attention_for_training, mixed_precision)

CPU = torch.device("cpu")


def test_cpu_autocast_follows_native_bf16():
    native = cpu_has_native_bf16()
    assert autocast_dtype(CPU, True) == (torch.bfloat16 if native else None)
    assert bfloat16_autocast_dtype(CPU) == (torch.bfloat16 if native else None)
    assert autocast_dtype(CPU, False) is None
    assert describe_precision(CPU, False) == "float32"
    assert ("bfloat16 autocast on cpu" in describe_precision(CPU, True)) == native


def test_mixed_precision_runs_products_in_bf16_where_native_and_keeps_weights_float32():
    autocast, scaler = mixed_precision(CPU, True)
    assert not scaler.is_enabled()  # loss scaling is for float16 only
    layer = torch.nn.Linear(8, 4)
    with autocast():
        out = layer(torch.randn(2, 8))
    assert out.dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert layer.weight.dtype == torch.float32
    off, _ = mixed_precision(CPU, False)
    with off():
        assert layer(torch.randn(2, 8)).dtype == torch.float32


def _model():
    torch.manual_seed(0)
    return create_classifier(ModelConfig(name="vit_tiny_patch16_224", img_size=64, embed_dim=48, depth=4,
                                         num_heads=3, conv_stem=[16, 32, 48]), 5).eval()


def test_training_under_cpu_bfloat16_uses_explicit_attention_with_the_same_results():
    model = _model()
    x = torch.randn(2, 3, 64, 64)
    fused = model(x)
    assert all(block.attn.fused_attn for block in model.blocks)
    assert explicit_attention_for_training(model, CPU, None) == 0  # float32: the fused kernel stays
    assert explicit_attention_for_training(model, torch.device("cuda"), torch.bfloat16) == 0  # GPUs keep it
    assert all(block.attn.fused_attn for block in model.blocks)
    assert explicit_attention_for_training(model, CPU, torch.bfloat16) == len(model.blocks)
    assert not any(block.attn.fused_attn for block in model.blocks)
    torch.testing.assert_close(model(x), fused, rtol=1e-4, atol=1e-5)  # the same attention, computed explicitly
    assert explicit_attention_for_training(model, CPU, torch.bfloat16) == 0  # nothing left to switch


def test_cam_amp_maps_match_float32_maps():
    """GETAM under bfloat16 autocast (cam.amp) gives float32 maps that correlate with the
    float32 maps above 0.99 on every tagged class; untagged classes stay 0. On a CPU with
    native bfloat16 the maps differ from float32 (the autocast ran); elsewhere they are equal."""
    model = _model()
    torch.manual_seed(1)
    images = torch.randn(3, 3, 64, 48)
    labels = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 1, 0, 0, 1]], dtype=torch.float32)
    exact = configured_map_method(CamConfig(method="getam", start_block=0, scales=[1.0], flip=True))
    mixed = configured_map_method(CamConfig(method="getam", start_block=0, scales=[1.0], flip=True, amp=True))
    a, pa = exact.maps_and_probs(model, images, labels)
    b, pb = mixed.maps_and_probs(model, images, labels)
    assert b.dtype == torch.float32 and pb.dtype == torch.float32 and b.shape == a.shape
    for i, c in labels.nonzero().tolist():
        corr = np.corrcoef(a[i, c].flatten().numpy(), b[i, c].flatten().numpy())[0, 1]
        assert corr > 0.99, (i, c, corr)
    assert torch.all(b[labels == 0] == 0)
    assert torch.allclose(pa, pb, atol=0.02)
    if cpu_has_native_bf16():
        assert not torch.equal(a, b)
    else:
        assert torch.equal(a, b)


def test_cam_amp_wraps_even_a_single_view():
    assert configured_map_method(CamConfig(method="getam")).__class__.__name__ == "GETAM"
    wrapped = configured_map_method(CamConfig(method="getam", amp=True))
    assert wrapped.amp and wrapped.num_views == 1
