"""Checkpoints are plain data: read with weights_only=True, files of the previous format
still load, settings a checkpoint holds that are no longer known are ignored, and a file that
would run code on unpickling is refused without running it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsss.cli import main
from wsss.config import ModelConfig, load_config
from wsss.models.checkpoint import (FORMAT_VERSION, classifier_checkpoint, load_checkpoint, load_classifier,
                                    load_segmenter, resolve_device, save_checkpoint)
from wsss.models.classifier import create_classifier
from tests.runs import classifier_of, segmenter_of

LEGACY = Path(__file__).parent / "fixtures" / "legacy"  # written by make_legacy_checkpoints.py at bbb2481


def test_checkpoints_written_before_the_change_still_load():
    expected = torch.load(LEGACY / "expected.pt", weights_only=True)
    model, classes, model_config = load_classifier(LEGACY / "classifier_v1.pt")
    assert classes == expected["classes"] and model_config.depth == 2 and model_config.embed_dim == 16
    segmenter, seg_classes, _ = load_segmenter(LEGACY / "segmenter_v1.pt")
    # the same outputs to float rounding: another CPU's kernels round differently (seen: 6e-8 on an
    # AMD EPYC against the machine that wrote them); a weight loaded wrongly moves them by ~1e-1
    with torch.no_grad():
        torch.testing.assert_close(model(expected["input"]), expected["classifier_logits"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(segmenter(expected["input"]).seg, expected["segmenter_seg"], rtol=1e-5, atol=1e-6)
    assert seg_classes == classes
    assert "config" in load_checkpoint(LEGACY / "classifier_v1.pt")  # format 1, read weights-only


def test_every_file_of_a_run_loads_weights_only(tmp_path):
    config = load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}", "data.synth.num_images=12",
        "data.synth.image_size=32", "model.img_size=32", "model.patch_size=8", "model.embed_dim=16", "model.depth=2",
        "model.num_heads=2", "train.device=cpu", "train.classifier.epochs=1", "train.classifier.batch_size=4",
        "train.classifier.warmup_epochs=0", "train.segmenter.steps=2", "train.segmenter.batch_size=2",
        "train.segmenter.dpt.features=8", "refine.saliency.source=none", "refine.label.opening=3"])
    classifier = classifier_of(config, progress=False)
    segmenter = segmenter_of(config, score=False, progress=False)
    files = [classifier, classifier.parent / "last.pt", segmenter, segmenter.parent / "last.pt"]
    for path in files:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(state, dict), path
    final = torch.load(segmenter, weights_only=True)
    assert final["format"] == "wsss-segmenter" and final["format_version"] == FORMAT_VERSION
    assert set(final) == {"format", "format_version", "model", "model_config", "head", "head_config", "classes",
                          "history"}
    assert final["head"] == "dpt" and final["head_config"]["features"] == 8
    assert torch.load(classifier, weights_only=True)["format"] == "wsss-classifier"


def test_settings_no_longer_known_are_ignored(tmp_path):
    model_config = ModelConfig(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2)
    model = create_classifier(model_config, 3)
    state = classifier_checkpoint(model, model_config, ["a", "b", "c"], [])
    state["model_config"]["a_setting_of_the_past"] = 7
    path = tmp_path / "classifier.pt"
    save_checkpoint(path, state)
    loaded, classes, settings = load_classifier(path)
    assert classes == ["a", "b", "c"] and settings.depth == 2
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


class _Payload:
    """Unpickling this object would create ``marker``: what a crafted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_checkpoint_that_runs_code_is_refused_unrun(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "segmenter.pt"
    torch.save({"model": {}, "classes": ["a"], "payload": _Payload(marker)}, evil)
    with pytest.raises(ValueError, match="cannot read as a plain-data checkpoint"):
        load_checkpoint(evil)
    images = tmp_path / "images"
    images.mkdir()
    assert main(["predict", "--checkpoint", str(evil), "--images", str(images), "--out", str(tmp_path / "out")]) == 2
    assert "plain-data checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_the_same_state_saves_to_the_same_bytes(tmp_path):
    """save_checkpoint is deterministic: a file's digest names its content, not the save."""
    import hashlib

    from wsss.models.checkpoint import save_checkpoint

    state = {"format_version": 3, "model": {"w": torch.arange(12.0).view(3, 4)}, "classes": ["a", "b"]}
    digests = set()
    for name in ("a.pt", "a.pt", "b.pt"):
        save_checkpoint(tmp_path / name, state)
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1


def test_resolve_device_finds_cuda_or_names_the_setting_it_cannot_use():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match=r"--device='gpu0': expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0", "--device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"train\.device='cuda' but CUDA is not available"):
            resolve_device("cuda")
