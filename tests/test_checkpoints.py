"""Checkpoints are plain data: read with weights_only=True, a file of an older format is refused
with the versions and what to do, settings a checkpoint holds that are no longer known are
ignored, and a file that would run code on unpickling is refused without running it."""

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

def old_format(kind: str, version: int) -> dict:
    """A small checkpoint in the key layout of an older format: 1 (no format_version, the whole
    configuration under "config") or 2 (a segmenter with only the DPT head, weights under "dpt.")."""
    model = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2}
    weights = {"backbone.cls_token": torch.zeros(1, 1, 16), "dpt.head.weight": torch.zeros(3, 8, 1, 1)}
    if version == 1:
        return {"model": weights, "config": {"model": model, "train": {"segmenter": {"dpt": {"features": 8}}}},
                "classes": ["a", "b", "c"]}
    return {"format": f"wsss-{kind}", "format_version": version, "model": weights, "model_config": model,
            "dpt": {"features": 8}, "classes": ["a", "b", "c"], "history": []}


@pytest.mark.parametrize(("kind", "version"), [("classifier", 1), ("segmenter", 1), ("segmenter", 2)])
def test_a_checkpoint_of_an_older_format_is_refused_with_what_to_do(tmp_path, kind, version):
    path = tmp_path / f"{kind}.pt"
    torch.save(old_format(kind, version), path)
    load = {"classifier": load_classifier, "segmenter": load_segmenter}[kind]
    with pytest.raises(ValueError) as refused:
        load(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: checkpoint format version {version}")
    assert ("(it has no format_version)" in message) == (version == 1)
    assert f"expected version {FORMAT_VERSION}" in message and FORMAT_VERSION > 2
    assert message.endswith(f"re-train it (wsss train {kind})")


def test_a_file_that_is_no_checkpoint_is_not_taken_for_an_old_one(tmp_path):
    """A resume file (last.pt: no classes, no format) is not a checkpoint to re-train."""
    torch.save({"model": {}, "step": 3}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt: not a wsss segmenter checkpoint \(expected segmenter\.pt"):
        load_segmenter(tmp_path / "last.pt")


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
