"""The DPT head and the Segmenter: shapes for every ViT family, readouts, one forward for both
outputs, parameter groups, errors."""

import pytest
import torch

from wsss.config import load_config
from wsss.models.heads.dpt import DPTHead, resampler
from wsss.models.segmentation_model import Segmenter, create_segmenter, default_blocks

torch.set_num_threads(1)

FAMILIES = {
    "vit": ("vit_tiny_patch16_224", ["model.patch_size=8", "model.embed_dim=32", "model.num_heads=2", "model.depth=4"]),
    "deit_distilled": ("deit_tiny_distilled_patch16_224",
                       ["model.patch_size=null", "model.embed_dim=32", "model.num_heads=2", "model.depth=4"]),
    "hybrid": ("vit_tiny_r_s16_p8_224", ["model.patch_size=null", "model.depth=2"]),
}


def family_config(family: str, *extra: str):
    name, overrides = FAMILIES[family]
    return load_config(None, [f"model.name={name}", "model.img_size=64", *overrides,
                              "train.segmenter.dpt.features=16", *extra])


def test_default_blocks():
    assert default_blocks(12) == [2, 5, 8, 11]  # DPT's hooks for ViT-B
    assert default_blocks(24) == [5, 11, 17, 23]
    assert default_blocks(6) == [0, 2, 3, 5]
    assert default_blocks(2) == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="depth must be >= 1"):
        default_blocks(0)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("readout", ["ignore", "add", "project"])
def test_shapes_every_family_and_readout(family, readout):
    config = family_config(family, f"train.segmenter.dpt.readout={readout}")
    torch.manual_seed(0)
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, num_classes=3)
    stride = segmenter.stride
    assert stride == {"vit": 8, "deit_distilled": 16, "hybrid": 32}[family]
    for H, W in ((64, 64), (2 * stride, 5 * stride)):  # square and non-square inputs
        out = segmenter(torch.randn(2, 3, H, W))
        assert out.logits.shape == (2, 3)
        assert out.seg.shape == (2, 4, H, W)
        assert torch.isfinite(out.seg).all()


@pytest.mark.parametrize("family", ["vit", "deit_distilled"])
def test_one_forward_gives_the_classifiers_logits(family):
    """The segmenter's class logits are exactly the backbone classifier's output (so GETAM on
    the segmenter's forward is GETAM of that classifier)."""
    config = family_config(family)
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 48)
    out = segmenter(x)
    assert torch.equal(out.logits, segmenter.backbone(x))
    skipped = segmenter(x, with_head=False)
    assert skipped.seg is None and torch.equal(skipped.logits, out.logits)


def test_reassembled_resolutions_and_gradients():
    """Block maps reach 1/4, 1/8, 1/16, 1/32 of the input; every parameter of the head gets a
    gradient from the segmentation output."""
    config = family_config("vit")
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, num_classes=3)
    x = torch.randn(1, 3, 64, 128)
    grid = (8, 16)  # stride 8
    patches = torch.randn(1, 128, 32)
    prefix = torch.randn(1, 1, 32)
    sizes = [tuple(stage(patches, prefix, grid).shape[-2:]) for stage in segmenter.decoder.reassemble]
    assert sizes == [(16, 32), (8, 16), (4, 8), (2, 4)]
    segmenter(x).seg.square().mean().backward()
    missing = [n for n, p in segmenter.decoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("head_stride", [2, 4])
def test_head_resolution(head_stride):
    config = family_config("vit", f"train.segmenter.dpt.head_stride={head_stride}")
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, num_classes=3)
    seen = []
    segmenter.decoder.head.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape[-2:])))
    assert segmenter(torch.randn(1, 3, 64, 96)).seg.shape[-2:] == (64, 96)
    assert seen == [(64 // head_stride, 96 // head_stride)]
    with pytest.raises(ValueError, match="head_stride 8: expected 2"):
        DPTHead(dim=32, stride=8, num_classes=3, head_stride=8)


def test_resampler_kinds():
    assert isinstance(resampler(4, 16, 4), torch.nn.ConvTranspose2d)
    assert isinstance(resampler(4, 16, 16), torch.nn.Identity)
    down = resampler(4, 8, 32)
    assert down(torch.randn(1, 4, 16, 16)).shape[-2:] == (4, 4)
    odd = resampler(4, 14, 4)  # e.g. patch 14: a non-integer factor
    assert odd(torch.randn(1, 4, 10, 10)).shape[-2:] == (35, 35)


def test_head_and_backbone_parameter_groups():
    config = family_config("deit_distilled")
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, num_classes=3)
    heads = {n for n, _ in segmenter.head_parameters()}
    rest = {n for n, _ in segmenter.backbone_parameters()}
    assert {"backbone.head.weight", "backbone.head_dist.weight"} <= heads
    assert any(n.startswith("decoder.") for n in heads) and not any(n.startswith("decoder.") for n in rest)
    assert "backbone.blocks.0.attn.qkv.weight" in rest and "backbone.cls_token" in rest
    assert heads.isdisjoint(rest) and len(heads) + len(rest) == len(list(segmenter.parameters()))


def test_errors_name_bad_values():
    config = family_config("vit")
    backbone = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, 3).backbone
    head = DPTHead(dim=32, stride=8, num_classes=3, features=16)
    with pytest.raises(ValueError, match=r"blocks must be 4 ascending indices in 0..3.*\[0, 1, 2, 9\]"):
        Segmenter(backbone, head, [0, 1, 2, 9])
    with pytest.raises(ValueError, match="readout 'mean': expected one of ignore, add, project"):
        DPTHead(dim=32, stride=8, num_classes=3, readout="mean")
    with pytest.raises(ValueError, match="readout 'project' needs prefix tokens"):
        DPTHead(dim=32, stride=8, num_classes=3, readout="project", has_prefix=False)
    with pytest.raises(ValueError, match="channels must list 4 values"):
        DPTHead(dim=32, stride=8, num_classes=3, channels=[8, 8])
    with pytest.raises(ValueError, match="images must be B×3×H×W"):
        Segmenter(backbone, head, [0, 1, 2, 3])(torch.randn(3, 64, 64))
    assert Segmenter(backbone, head, [-4, -3, -2, -1]).blocks == [0, 1, 2, 3]


def test_stem_skip_feeds_the_conv_stems_quarter_map_to_the_head(tmp_path):
    """DPT-Hybrid style: the conv stem's 1/4 map joins the last fusion stage; it changes the output
    and learns, other calls of the backbone keep nothing, and a checkpoint restores it."""
    from wsss.models.checkpoint import load_segmenter, save_checkpoint, segmenter_checkpoint

    config = load_config(None, ["model.conv_stem=[8,16,32]", "model.embed_dim=32", "model.depth=2",
                                "model.num_heads=2", "model.img_size=32", "train.segmenter.dpt.features=16",
                                "train.segmenter.dpt.stem_skip=true"])
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, num_classes=3)
    assert segmenter.decoder.uses_stem and segmenter.decoder.stem_project.in_channels == 16  # conv_stem[1]
    images = torch.randn(2, 3, 32, 48)
    out = segmenter(images)
    assert out.seg.shape == (2, 4, 32, 48)
    out.seg.square().mean().backward()
    assert segmenter.decoder.stem_project.weight.grad.abs().sum() > 0
    stem = segmenter.backbone.patch_embed.backbone
    assert stem[stem.stride4()[0]](torch.zeros(1, 16, 8, 8)).shape == (1, 16, 8, 8)  # the hooked ReLU
    segmenter.backbone(images)  # a forward of the backbone alone (GETAM's): nothing is kept
    assert segmenter._stem == []
    with torch.no_grad():
        segmenter.decoder.stem_project.weight.zero_()
        without = segmenter.eval()(images).seg
        segmenter.decoder.stem_project.weight.normal_()
        assert not torch.allclose(segmenter(images).seg, without)
    path = tmp_path / "segmenter.pt"
    save_checkpoint(path, segmenter_checkpoint(segmenter, config.model, config.train.segmenter.dpt, ["a", "b", "c"], []))
    loaded, _, _ = load_segmenter(path)
    assert loaded.decoder.uses_stem and torch.equal(loaded(images).seg, segmenter(images).seg)

    plain = load_config(None, ["model.conv_stem=null", "model.patch_size=8", "train.segmenter.dpt.stem_skip=true"])
    with pytest.raises(ValueError, match="stem_skip needs a conv stem"):
        create_segmenter(plain.model, "dpt", plain.train.segmenter.dpt, num_classes=3)
