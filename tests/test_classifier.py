"""Classifier training on a tiny generated data set: runs, resumes, loads local weights."""

import hashlib
import json

import numpy as np
import pytest
import torch

from wsss.cli import main
from wsss.config import load_config
from wsss.eval.classification import multilabel_metrics
from wsss.models.classifier import PretrainedWeightsError, create_classifier, load_pretrained
from wsss.train.augment import augment
from wsss.models.checkpoint import load_classifier
from tests.runs import classifier_of


def tiny_config(tmp_path, *extra):
    return load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}", "data.synth.num_images=24",
        "data.synth.image_size=48", "model.img_size=48", "model.patch_size=8", "model.embed_dim=32",
        "model.depth=2", "model.num_heads=2", "train.classifier.epochs=2", "train.classifier.batch_size=8",
        "train.classifier.warmup_epochs=1", *extra,
    ])


def test_train_resume_and_load(tmp_path, capsys):
    config = tiny_config(tmp_path)
    path = classifier_of(config, progress=False)
    model, classes, saved = load_classifier(path)
    assert len(classes) == 6 and saved.depth == 2
    assert model(torch.zeros(1, 3, 48, 64)).shape == (1, 6)  # dynamic image size
    history = json.loads((tmp_path / "run" / "classifier" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and all(0 <= h["val_mAP"] <= 1 for h in history)

    # an interrupted run (last.pt after epoch 2 of 3) resumes at epoch 3 and keeps the history
    longer = tiny_config(tmp_path, "train.classifier.epochs=3")
    classifier_of(longer, progress=False)
    assert "resuming from" in capsys.readouterr().out
    history = json.loads((tmp_path / "run" / "classifier" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]

    # a finished run run again trains nothing and leaves classifier.pt as it is: its digest is
    # what label folders record, so a re-run must not change it
    final = tmp_path / "run" / "classifier" / "classifier.pt"
    digest, mtime = hashlib.sha256(final.read_bytes()).hexdigest(), final.stat().st_mtime_ns
    classifier_of(longer, progress=False)
    assert hashlib.sha256(final.read_bytes()).hexdigest() == digest and final.stat().st_mtime_ns == mtime

    other = tiny_config(tmp_path, "model.embed_dim=48", "train.classifier.epochs=3")
    with pytest.raises(ValueError, match="another model or class list; use --restart"):
        classifier_of(other, progress=False)


def test_pretrained_weights_errors(tmp_path):
    config = tiny_config(tmp_path)
    model = create_classifier(config.model, 6)
    with pytest.raises(PretrainedWeightsError, match="not found"):
        load_pretrained(model, tmp_path / "missing.pth")
    # weights of the same backbone with a 1000-class head and another grid: load fine
    donor_config = config.model.model_copy(update={"img_size": 32})
    donor = create_classifier(donor_config, 1000)
    torch.save({"model": donor.state_dict()}, tmp_path / "donor.pth")
    load_pretrained(model, tmp_path / "donor.pth")
    assert torch.equal(model.blocks[0].attn.qkv.weight, donor.blocks[0].attn.qkv.weight)
    # a deeper donor has unexpected keys; a shallower one leaves keys missing
    deeper = create_classifier(config.model.model_copy(update={"depth": 3}), 6)
    torch.save(deeper.state_dict(), tmp_path / "deeper.pth")
    with pytest.raises(PretrainedWeightsError, match=r"unexpected keys \(\d+\): \['blocks\.2\."):
        load_pretrained(model, tmp_path / "deeper.pth")
    state = {k: v for k, v in donor.state_dict().items() if not k.startswith("blocks.1.")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(PretrainedWeightsError, match=r"missing keys \(\d+\): \['blocks\.1\."):
        load_pretrained(model, tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="cannot read"):
        load_pretrained(model, tmp_path / "junk.pth")


def test_cli_reports_missing_weights(tmp_path, capsys):
    code = main(["train", "classifier", "--set", f"run_dir={tmp_path}", "--set", f"data.root={tmp_path / 'd'}",
                 "--set", "data.synth.num_images=12", "--set", "data.synth.image_size=48",
                 "--set", f"model.pretrained={tmp_path / 'nope.pth'}"])
    assert code == 2 and "nope.pth not found" in capsys.readouterr().err


def test_unknown_model_name():
    config = load_config(None, ["model.name=vit_nonexistent_patch3"])
    with pytest.raises(ValueError, match="is not a timm model"):
        create_classifier(config.model, 3)


def test_augment_shapes_and_determinism():
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    a = augment(image, 32, np.random.default_rng(5))
    b = augment(image, 32, np.random.default_rng(5))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_multilabel_metrics_by_hand():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    perfect = multilabel_metrics(targets * 0.9 + 0.05, targets)
    assert perfect["mAP"] == pytest.approx(1.0) and perfect["F1"] == [1.0, 1.0]
    scores = np.array([[0.9, 0.2], [0.6, 0.1], [0.4, 0.8], [0.1, 0.3]])
    metrics = multilabel_metrics(scores, targets)
    # class 0: ranking 0.9(+), 0.6(-), 0.4(+) → AP = (1 + 2/3) / 2; F1: tp 1, fp 1, fn 1 → 0.5
    assert metrics["AP"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["F1"][0] == pytest.approx(0.5)
    # class 1: 0.8(+), 0.3(-), 0.2(-), 0.1(+) → AP = (1 + 2/4) / 2; F1: tp 1, fn 1 → 2/3
    assert metrics["AP"][1] == pytest.approx(0.75) and metrics["F1"][1] == pytest.approx(2 / 3)


def test_quality_gate_measures_skill_against_chance(capsys):
    from wsss.config import QualityGateConfig
    from wsss.eval.classification import ClassifierQuality
    from wsss.steps.classifier_gate import QualityGateError, enforce_gate

    classes = ["a", "b", "c"]
    good = ClassifierQuality(classes, [0.95, 0.9, 0.3], [0.25, 0.5, 0.25], min_skill=0.2, class_min_skill=0.2)
    assert good.skill == pytest.approx([(0.95 - 0.25) / 0.75, 0.8, (0.3 - 0.25) / 0.75])
    assert good.chance_map == pytest.approx(1 / 3) and good.passed and good.weak == ["c"]
    assert good.to_dict()["weak_classes"] == ["c"] and good.to_dict()["passed"] is True
    enforce_gate(good, QualityGateConfig())
    assert "cannot tell apart (skill below 0.20): c (AP 0.30, prevalence 0.25)" in capsys.readouterr().out
    chance = ClassifierQuality(classes, [0.27, 0.52, float("nan")], [0.25, 0.5, 0.0], min_skill=0.2,
                               class_min_skill=0.2)
    assert not chance.passed and chance.weak == ["a", "b"] and chance.chance_map == pytest.approx(0.375)
    with pytest.raises(QualityGateError, match="too close to chance.*mAP 0.395 against 0.375"):
        enforce_gate(chance, QualityGateConfig())
    enforce_gate(chance, QualityGateConfig(force=True))  # named setting: go on anyway
    assert "going on because train.classifier.gate.force is set" in capsys.readouterr().out
    enforce_gate(None, QualityGateConfig())  # unmeasured: said, not stopped
    assert "not checked" in capsys.readouterr().out


def test_classifier_history_keeps_per_class_ap_and_prevalence(tmp_path):
    from wsss.config import QualityGateConfig
    from wsss.steps.classifier_gate import classifier_quality

    path = classifier_of(tiny_config(tmp_path, "train.classifier.epochs=1"), progress=False)
    quality = classifier_quality(path, QualityGateConfig())
    assert quality is not None and len(quality.ap) == len(quality.prevalence) == 6
    assert all(0 <= p <= 1 for p in quality.prevalence) and 0 <= quality.mean_ap <= 1


def test_conv_stem_classifier_saves_and_loads(tmp_path):
    from wsss.models.vit_geometry import model_stride, token_layout
    from wsss.models.checkpoint import classifier_checkpoint, save_checkpoint

    config = tiny_config(tmp_path, "model.conv_stem=[8, 16, 32]", "model.conv_stem_extra=1")
    model = create_classifier(config.model, 6).eval()
    assert model_stride(model) == 8 and token_layout(model, (48, 64)).grid == (6, 8)
    strides = [m.stride[0] for m in model.patch_embed.backbone if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 1, 2, 1, 2, 1]  # conv_stem_extra: a stride-1 conv after each stride-2 one
    path = tmp_path / "classifier.pt"
    save_checkpoint(path, classifier_checkpoint(model, config.model, [f"c{i}" for i in range(6)], []))
    loaded, _, settings = load_classifier(path)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        assert settings.conv_stem == [8, 16, 32] and settings.conv_stem_extra == 1 and torch.equal(loaded(x), model(x))


def test_learning_rate_warms_up_then_holds_then_decays():
    from wsss.train.classifier_training import lr_factor

    cosine = lr_factor(warmup_steps=2, total_steps=10)
    assert [cosine(s) for s in (0, 1)] == [0.5, 1.0]
    assert cosine(2) == 1.0 and 0.0 < cosine(6) < 1.0 and cosine(10) == pytest.approx(0.0)
    assert cosine(3) > cosine(4) > cosine(5)  # the cosine starts right after warm-up
    held = lr_factor(warmup_steps=2, total_steps=10, decay_steps=4)
    assert [held(s) for s in range(2, 7)] == [1.0] * 5  # held until the last 4 steps
    assert held(7) < 1.0 and held(8) < held(7) and held(10) == pytest.approx(0.0)
    assert held(8) == pytest.approx(0.5)  # half way through the decay
