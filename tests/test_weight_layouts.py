"""model.pretrained reads every layout users arrive with: random-weight files written in each real
key layout from tiny timm models, loaded through create_classifier, compared tensor by tensor."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from wsss.cli import main
from wsss.config import ModelConfig
from wsss.models.checkpoint import FORMAT_VERSION
from wsss.models.classifier import PretrainedWeightsError, create_classifier
from wsss.models.weights import inspect_weights

TINY = dict(name="vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2)
DINOV2 = dict(name="vit_small_patch14_dinov2", img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2)
TINY_ARGS = ["--set", "model.img_size=32", "--set", "model.embed_dim=32", "--set", "model.depth=2",
             "--set", "model.num_heads=2"]
NUM_CLASSES = 3  # the new head; the files' heads have 1000 classes


def released(settings: dict, num_classes: int = 1000, **changes) -> dict[str, torch.Tensor]:
    """The state dict of a timm model of ``settings`` (timm's keys) with every tensor random."""
    options = {k: v for k, v in settings.items() if k != "name"} | changes
    model = timm.create_model(settings["name"], num_classes=num_classes, **options)
    torch.manual_seed(0)
    return {key: torch.randn_like(value) for key, value in model.state_dict().items()}


def loaded(settings: dict, pretrained) -> torch.nn.Module:
    """The classifier create_classifier builds with ``model.pretrained=pretrained``."""
    return create_classifier(ModelConfig(**settings, pretrained=pretrained), NUM_CLASSES)


def layout_of(settings: dict, pretrained) -> str:
    return inspect_weights(create_classifier(ModelConfig(**settings), NUM_CLASSES), pretrained).describe()


def assert_backbone_equals(model: torch.nn.Module, written: dict[str, torch.Tensor], skip: tuple = ()) -> None:
    """Every tensor of the model but the head (and ``skip``) equals the one written; the head is new."""
    own = model.state_dict()
    backbone = [k for k in own if not k.startswith(("head.", "head_dist.")) and k not in skip]
    assert backbone and [k for k in backbone if not torch.equal(own[k], written[k])] == []
    assert own["head.weight"].shape[0] == NUM_CLASSES


@pytest.mark.parametrize("wrap", ["flat", "model", "state_dict-ddp", "model_state", "wsss-classifier"])
def test_timm_and_deit_release(tmp_path, wrap):
    state = released(TINY)
    content = {"flat": state, "model": {"model": state}, "model_state": {"model_state": state, "epoch": 3},
               "state_dict-ddp": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
               "wsss-classifier": {"format": "wsss-classifier", "format_version": FORMAT_VERSION, "model": state,
                                   "model_config": ModelConfig(**TINY).model_dump(mode="json"),
                                   "classes": ["a", "b"], "history": [{"epoch": 1, "val_mAP": 0.5}]}}[wrap]
    torch.save(content, tmp_path / "deit_tiny_patch16_224-a1311bcf.pth")
    assert_backbone_equals(loaded(TINY, tmp_path / "deit_tiny_patch16_224-a1311bcf.pth"), state)
    assert layout_of(TINY, tmp_path / "deit_tiny_patch16_224-a1311bcf.pth").startswith("timm (torch file: ")


def test_safetensors_file_is_recognised_by_its_content(tmp_path):
    state = released(TINY)
    save_file(state, tmp_path / "weights.bin")  # the name says torch, the bytes say safetensors
    assert_backbone_equals(loaded(TINY, tmp_path / "weights.bin"), state)
    assert layout_of(TINY, tmp_path / "weights.bin").startswith("timm (safetensors file: ")


def test_distilled_deit_into_a_plain_and_a_distilled_model(tmp_path):
    distilled = dict(TINY, name="deit_tiny_distilled_patch16_224")
    state = released(distilled)
    torch.save({"model": state}, tmp_path / "deit_distilled.pth")
    # a model without a distillation token: dist_token, head_dist and the token's position dropped
    plain = loaded(TINY, tmp_path / "deit_distilled.pth")
    assert_backbone_equals(plain, state, skip=("pos_embed",))
    assert torch.equal(plain.pos_embed, torch.cat([state["pos_embed"][:, :1], state["pos_embed"][:, 2:]], dim=1))
    weights = inspect_weights(create_classifier(ModelConfig(**TINY), NUM_CLASSES), tmp_path / "deit_distilled.pth")
    assert weights.layout == "deit-distilled" and any("dropped dist_token" in note for note in weights.notes)
    # a distilled model takes everything but the heads
    assert_backbone_equals(loaded(distilled, tmp_path / "deit_distilled.pth"), state)


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_timm_hugging_face_folder(tmp_path, weights_file):
    state = released(TINY)
    folder = tmp_path / "vit_tiny_patch16_224.augreg_in21k"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 1000}))
    if weights_file.endswith(".safetensors"):
        save_file(state, folder / weights_file)
    else:
        torch.save(state, folder / weights_file)
    assert_backbone_equals(loaded(TINY, folder), state)
    assert layout_of(TINY, folder).endswith(f"of a timm Hugging Face folder: {folder / weights_file})")


def write_hub_cache(home, repo_id: str, state: dict) -> None:
    """``repo_id`` as huggingface_hub caches it: blobs, a snapshot of links, refs/main naming it."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (repo / "blobs" / "c0ffee").write_text(json.dumps({"architecture": "vit_tiny_patch16_224"}))
    save_file(state, repo / "blobs" / "beef")
    (repo / "snapshots" / revision / "config.json").symlink_to("../../blobs/c0ffee")
    (repo / "snapshots" / revision / "model.safetensors").symlink_to("../../blobs/beef")


def test_hf_hub_name_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    state = released(TINY)
    write_hub_cache(tmp_path / "hf", "timm/vit_tiny_patch16_224.augreg_in21k", state)
    assert_backbone_equals(loaded(TINY, "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k"), state)
    described = layout_of(TINY, "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k")
    assert described.startswith("timm (safetensors file of hf-hub:timm/vit_tiny_patch16_224.augreg_in21k in the local")


def test_hf_hub_name_missing_from_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    expected = tmp_path / "hf" / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k" / "refs" / "main"
    with pytest.raises(PretrainedWeightsError, match="not in the local Hugging Face cache") as error:
        loaded(TINY, "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k")
    assert str(expected) in str(error.value) and "model.allow_download=true" in str(error.value)
    with pytest.raises(PretrainedWeightsError, match="is not hf-hub:ORG/NAME"):
        loaded(TINY, "hf-hub:vit_tiny_patch16_224")


def test_dino_backbone(tmp_path):
    state = released(TINY, num_classes=0)  # DINO's backbones have no head
    assert not [k for k in state if k.startswith("head.")]
    torch.save(state, tmp_path / "dino_deitsmall16_pretrain.pth")
    assert_backbone_equals(loaded(TINY, tmp_path / "dino_deitsmall16_pretrain.pth"), state)
    assert layout_of(TINY, tmp_path / "dino_deitsmall16_pretrain.pth").startswith("dino (")


def test_dino_training_checkpoint_reads_the_teacher(tmp_path):
    teacher, student = released(TINY, num_classes=0), released(TINY, num_classes=0)
    student = {k: v + 1 for k, v in student.items()}
    dino_head = {"head.mlp.0.weight": torch.randn(64, 32), "head.last_layer.weight_g": torch.randn(256, 1)}
    torch.save({
        "student": {f"module.backbone.{k}": v for k, v in student.items()} | {f"module.{k}": v for k, v in dino_head.items()},
        "teacher": {f"backbone.{k}": v for k, v in teacher.items()} | dino_head,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "params": [0, 1]}]},
        "epoch": 100, "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536),
        "dino_loss": {"center": torch.zeros(1, 256)},
    }, tmp_path / "dino_deitsmall16_pretrain_full_checkpoint.pth")
    model = loaded(TINY, tmp_path / "dino_deitsmall16_pretrain_full_checkpoint.pth")
    assert_backbone_equals(model, teacher)
    assert layout_of(TINY, tmp_path / "dino_deitsmall16_pretrain_full_checkpoint.pth").startswith("dino-training (")


def test_dinov2_with_mask_token_layer_scales_and_a_37x37_grid(tmp_path):
    state = released(DINOV2, num_classes=0, img_size=518) | {"mask_token": torch.randn(1, 32)}
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 32) and "blocks.1.ls2.gamma" in state
    torch.save(state, tmp_path / "dinov2_vits14_pretrain.pth")
    model = loaded(DINOV2, tmp_path / "dinov2_vits14_pretrain.pth")
    assert_backbone_equals(model, state, skip=("pos_embed",))
    assert model.pos_embed.shape == (1, 1 + 2 * 2, 32)  # resampled to the 28 px grid, the class position kept
    assert torch.equal(model.pos_embed[:, 0], state["pos_embed"][:, 0])
    weights = inspect_weights(create_classifier(ModelConfig(**DINOV2), NUM_CLASSES), tmp_path / "dinov2_vits14_pretrain.pth")
    assert weights.layout == "dinov2" and "dropped mask_token (the model has none)" in weights.notes


def test_mae_pretraining_drops_the_decoder(tmp_path):
    encoder = released(TINY, num_classes=0)
    decoder = {"mask_token": torch.randn(1, 1, 16), "decoder_embed.weight": torch.randn(16, 32),
               "decoder_pos_embed": torch.randn(1, 5, 16), "decoder_blocks.0.norm1.weight": torch.randn(16),
               "decoder_norm.weight": torch.randn(16), "decoder_pred.weight": torch.randn(768, 16)}
    torch.save({"model": encoder | decoder, "optimizer": {"state": {}, "param_groups": []}, "epoch": 399,
                "scaler": {"scale": 65536.0}, "args": argparse.Namespace(model="mae_vit_tiny", mask_ratio=0.75)},
               tmp_path / "mae_pretrain_vit_tiny.pth")
    assert_backbone_equals(loaded(TINY, tmp_path / "mae_pretrain_vit_tiny.pth"), encoder)
    weights = inspect_weights(create_classifier(ModelConfig(**TINY), NUM_CLASSES), tmp_path / "mae_pretrain_vit_tiny.pth")
    assert weights.layout == "mae" and "dropped the MAE decoder and mask_token (6 tensors)" in weights.notes


def write_google_npz(state: dict[str, torch.Tensor], path, num_heads: int) -> None:
    """timm's ``_load_weights`` inverted: each timm tensor under its Google JAX name, in JAX's
    layout (dense kernels in×out, the patch kernel H×W×in×out, q/k/v and out split by head)."""
    w = {k: v.numpy() for k, v in state.items()}
    dim = w["cls_token"].shape[-1]
    arrays = {"embedding/kernel": w["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
              "embedding/bias": w["patch_embed.proj.bias"], "cls": w["cls_token"],
              "Transformer/posembed_input/pos_embedding": w["pos_embed"],
              "Transformer/encoder_norm/scale": w["norm.weight"], "Transformer/encoder_norm/bias": w["norm.bias"],
              "head/kernel": w["head.weight"].T, "head/bias": w["head.bias"]}
    for i in range(1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))):
        block, ours = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        attention = block + "MultiHeadDotProductAttention_1/"
        for name, weight, bias in zip(("query", "key", "value"), np.split(w[ours + "attn.qkv.weight"], 3),
                                      np.split(w[ours + "attn.qkv.bias"], 3)):
            arrays[f"{attention}{name}/kernel"] = weight.T.reshape(dim, num_heads, dim // num_heads)
            arrays[f"{attention}{name}/bias"] = bias.reshape(num_heads, dim // num_heads)
        arrays[attention + "out/kernel"] = w[ours + "attn.proj.weight"].reshape(dim, num_heads, -1).transpose(1, 2, 0)
        arrays[attention + "out/bias"] = w[ours + "attn.proj.bias"]
        for jax, timm_name in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            arrays[f"{block}{jax}/scale"], arrays[f"{block}{jax}/bias"] = w[f"{ours}{timm_name}.weight"], w[f"{ours}{timm_name}.bias"]
        for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
            arrays[f"{block}MlpBlock_3/{dense}/kernel"] = w[f"{ours}mlp.{fc}.weight"].T
            arrays[f"{block}MlpBlock_3/{dense}/bias"] = w[f"{ours}mlp.{fc}.bias"]
    np.savez(path, **arrays)


def test_google_npz_round_trip(tmp_path):
    state = released(TINY)
    write_google_npz(state, tmp_path / "ViT-Ti_16.npz", num_heads=2)
    assert_backbone_equals(loaded(TINY, tmp_path / "ViT-Ti_16.npz"), state)
    weights = inspect_weights(create_classifier(ModelConfig(**TINY), NUM_CLASSES), tmp_path / "ViT-Ti_16.npz")
    assert weights.describe().startswith("google-npz (NumPy .npz file: ") and weights.tensors == 8 + 2 * 16
    # a deeper file and a wider one do not fit, and say why
    write_google_npz(released(TINY, depth=3), tmp_path / "deeper.npz", num_heads=2)
    with pytest.raises(PretrainedWeightsError, match=r"looks like: google-npz.*unexpected keys \(16\).*encoderblock_2"):
        loaded(TINY, tmp_path / "deeper.npz")
    write_google_npz(released(TINY, embed_dim=48), tmp_path / "wider.npz", num_heads=2)
    with pytest.raises(PretrainedWeightsError, match=r"looks like: google-npz.*shape mismatches.*embedding/kernel"):
        loaded(TINY, tmp_path / "wider.npz")


def test_unfitting_files_name_the_layout_and_the_keys(tmp_path):
    dinov2 = released(DINOV2, num_classes=0) | {"mask_token": torch.randn(1, 32)}
    torch.save(dinov2, tmp_path / "dinov2.pth")
    no_layer_scale = dict(DINOV2, name="vit_tiny_patch16_224")  # a plain ViT has no ls1/ls2
    with pytest.raises(PretrainedWeightsError, match=r"looks like: dinov2.*unexpected keys \(4\): \['blocks\.0\.ls1\.gamma"):
        loaded(no_layer_scale, tmp_path / "dinov2.pth")
    torch.save({"model": released(TINY, patch_size=8)}, tmp_path / "patch8.pth")
    with pytest.raises(PretrainedWeightsError, match=r"looks like: timm.*shape mismatches: \['patch_embed\.proj\.weight "
                                                     r"\(32, 3, 8, 8\) vs \(32, 3, 16, 16\)"):
        loaded(TINY, tmp_path / "patch8.pth")
    torch.save({"conv1.weight": torch.randn(8, 3, 7, 7), "fc.weight": torch.randn(10, 8)}, tmp_path / "resnet.pth")
    with pytest.raises(PretrainedWeightsError, match=r"looks like: unknown.*missing keys.*unexpected keys \(2\)"):
        loaded(TINY, tmp_path / "resnet.pth")
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 32), "note": "text"}}, tmp_path / "mixed.pth")
    with pytest.raises(PretrainedWeightsError, match=r"not tensors: \['note \(str\)'\]"):
        loaded(TINY, tmp_path / "mixed.pth")
    (tmp_path / "folder").mkdir()
    with pytest.raises(PretrainedWeightsError, match="not a timm Hugging Face folder .*config.json"):
        loaded(TINY, tmp_path / "folder")


def test_weights_inspect_command(tmp_path, capsys):
    torch.save({"model": released(TINY)}, tmp_path / "deit.pth")
    assert main(["weights", "inspect", str(tmp_path / "deit.pth"), "--model", "vit_tiny_patch16_224", *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    assert f"layout: timm (torch file: {tmp_path / 'deit.pth'})" in out
    assert "tensors: 32" in out and "kept the model's own head" in out and "OK: the weights fit" in out

    torch.save({"model": released(TINY, depth=3)}, tmp_path / "deeper.pth")
    assert main(["weights", "inspect", str(tmp_path / "deeper.pth"), "--model", "vit_tiny_patch16_224", *TINY_ARGS]) == 1
    out = capsys.readouterr().out
    assert "layout: timm" in out and "DOES NOT FIT" in out and "unexpected keys (12): ['blocks.2." in out

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["weights", "inspect", str(tmp_path / "junk.pth"), "--model", "vit_tiny_patch16_224", *TINY_ARGS]) == 2
    assert "error: " in capsys.readouterr().err
    assert main(["weights", "inspect", str(tmp_path / "nope.pth"), *TINY_ARGS]) == 2
    assert "nope.pth not found" in capsys.readouterr().err
