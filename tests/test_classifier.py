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
    from wsss.train.classifier_schedule import ClassifierSchedule

    cosine = ClassifierSchedule(steps_per_epoch=2, epochs=5, warmup_epochs=1)
    assert [cosine(s) for s in (0, 1)] == [0.5, 1.0]
    assert cosine(2) == 1.0 and 0.0 < cosine(6) < 1.0 and cosine(10) == pytest.approx(0.0)
    assert cosine(3) > cosine(4) > cosine(5)  # the cosine starts right after warm-up
    held = ClassifierSchedule(steps_per_epoch=2, epochs=5, warmup_epochs=1, decay_epochs=2)
    assert [held(s) for s in range(2, 7)] == [1.0] * 5  # held until the last 4 steps (2 epochs)
    assert held(7) < 1.0 and held(8) < held(7) and held(10) == pytest.approx(0.0)
    assert held(8) == pytest.approx(0.5)  # half way through the decay
    assert all(held.after_epoch(e, 0.5) is None for e in range(1, 6)) and held.end_epoch == 5  # no plateau stop


def test_plateau_starts_the_decay_and_ends_training_early():
    from wsss.train.classifier_schedule import ClassifierSchedule

    schedule = ClassifierSchedule(steps_per_epoch=10, epochs=30, warmup_epochs=1, decay_epochs=3,
                                  plateau_epochs=3, plateau_delta=0.01)
    slow_start = [0.28, 0.31, 0.37, 0.39, 0.42, 0.44, 0.47, 0.47, 0.55, 0.61]  # the colour-free variant's first epochs
    assert all(schedule.after_epoch(e, m) is None for e, m in enumerate(slow_start, 1))
    assert schedule.after_epoch(11, 0.613) is None and schedule.after_epoch(12, 0.60) is None  # gains under 0.01
    line = schedule.after_epoch(13, 0.6195)  # 0.0095 above epoch 10's 0.61: the third epoch without a gain
    assert line is not None and "3 epochs without a gain of 0.01 over epoch 10's 0.610" in line and "epochs 14-16" in line
    assert schedule.end_epoch == 16 and schedule(129) == 1.0 and schedule(130) == 1.0
    assert 0 < schedule(145) < 1 and schedule(160) == pytest.approx(0.0)
    assert schedule.after_epoch(14, 0.5) is None and schedule.end_epoch == 16  # decided once

    # its state goes into last.pt, so a resumed run keeps the decay that began
    fresh = ClassifierSchedule(steps_per_epoch=10, epochs=30, warmup_epochs=1, decay_epochs=3, plateau_epochs=3)
    fresh.load_state(schedule.state())
    assert fresh.end_epoch == 16 and fresh.decay_start_epoch == 13 and fresh.plateau_epoch == 13
    assert fresh.best == pytest.approx(0.61) and fresh.best_epoch == 10

    late = ClassifierSchedule(steps_per_epoch=10, epochs=12, warmup_epochs=1, decay_epochs=3, plateau_epochs=3)
    for e in range(1, 9):
        late.after_epoch(e, 0.9)  # flat from epoch 1: a plateau at epoch 4
    assert late.plateau_epoch == 4 and late.end_epoch == 7
    with pytest.raises(ValueError, match="plateau_epochs needs decay_epochs"):
        ClassifierSchedule(steps_per_epoch=10, epochs=12, warmup_epochs=1, plateau_epochs=3)


def test_no_plateau_stop_below_plateau_min_map():
    """The busy-background member's curve (issue 31): flat at 0.53-0.54 for three epochs while still
    learning. With plateau_min_map 0.9 that is no plateau; a flat stretch above 0.9 still is."""
    from wsss.train.classifier_schedule import ClassifierSchedule

    busy = [0.338, 0.362, 0.406, 0.392, 0.422, 0.428, 0.458, 0.473, 0.472, 0.497, 0.507, 0.536, 0.536, 0.520, 0.533]
    eager = ClassifierSchedule(steps_per_epoch=10, epochs=30, warmup_epochs=1, decay_epochs=4, plateau_epochs=3,
                               plateau_delta=0.01)
    patient = ClassifierSchedule(steps_per_epoch=10, epochs=30, warmup_epochs=1, decay_epochs=4, plateau_epochs=3,
                                 plateau_delta=0.01, plateau_min_map=0.9)
    assert [e for e, m in enumerate(busy, 1) if eager.after_epoch(e, m)] == [15]
    assert not any(patient.after_epoch(e, m) for e, m in enumerate(busy, 1)) and patient.end_epoch == 30
    later = [0.62, 0.75, 0.9, 0.93, 0.935, 0.93, 0.938]  # reaches 0.93 at epoch 19, then under +0.01 for 3 epochs
    assert [e for e, m in enumerate(later, 16) if patient.after_epoch(e, m)] == [22] and patient.end_epoch == 26


def test_classifier_run_stops_on_a_plateau_and_stays_stopped(tmp_path, capsys):
    # plateau_delta 1: no epoch can gain it, so epoch 2 (one epoch after epoch 1's best) is a plateau;
    # one epoch of decay follows and training ends after epoch 3 of at most 6
    config = tiny_config(tmp_path, "train.classifier.epochs=6", "train.classifier.decay_epochs=1",
                         "train.classifier.plateau_epochs=1", "train.classifier.plateau_delta=1")
    classifier_of(config, progress=False)
    out = capsys.readouterr().out
    assert "val mAP plateau: 1 epochs without a gain of 1 over epoch 1's" in out and "epochs 3-3" in out
    history = json.loads((tmp_path / "run" / "classifier" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3] and "plateau" in history[1]
    classifier_of(config, progress=False)  # run again: the stop holds, nothing more is trained
    history = json.loads((tmp_path / "run" / "classifier" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    with pytest.raises(ValueError, match="plateau_epochs needs decay_epochs"):
        tiny_config(tmp_path, "train.classifier.plateau_epochs=2")
