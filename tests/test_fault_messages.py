"""Faults of issue 29 that ended a run with a traceback, a wrong exit status, a message without
the file's name, or not at all: values that are not classes in one mask or prediction, --pred
naming nothing usable, predictions of other ids, a JPEG named .png (item 8); --out naming a
file, a full disk (item 10); settings refused late or not at all: --scales nan, lr=.inf,
cam.start_block=99 (item 11); non-UTF-8 and BOM-prefixed text files, a JSON or random file given
as weights (item 12)."""

from __future__ import annotations

import errno
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import CLASSES
from wsss.cli import main
from wsss.config import ConfigError, ModelConfig, config_to_yaml, load_config
from wsss.data import FolderDataset
from wsss.data.base import DatasetError
from wsss.data.label_png import read_label_png, write_label_png
from wsss.models.checkpoint import classifier_checkpoint, load_checkpoint, save_checkpoint
from wsss.models.classifier import create_classifier

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "source.json"  # what claims an output folder (wsss.steps.provenance.SOURCE)
DISK_FULL = 3  # the exit status the README gives a full disk (wsss.lifetime.DISK_FULL)
TINY = ["model.img_size=48", "model.patch_size=8", "model.embed_dim=32", "model.depth=2", "model.num_heads=2"]
NO_SALIENCY = ["--set", "refine.saliency.source=none"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    """An untrained 2-block classifier of the conftest classes, as a run leaves it:
    RUN/classifier/classifier.pt beside RUN/config.yaml (the settings its commands use)."""
    run = tmp_path_factory.mktemp("run")
    config = load_config(None, [f"run_dir={run}", *TINY])
    torch.manual_seed(0)
    model = create_classifier(config.model, len(CLASSES))
    path = run / "classifier" / "classifier.pt"
    save_checkpoint(path, classifier_checkpoint(model, config.model, CLASSES, []))
    (run / "config.yaml").write_text(config_to_yaml(config))
    return path


def copy_masks_as_predictions(dataset: Path, pred: Path) -> None:
    for mask in (dataset / "masks").glob("*.png"):
        write_label_png(pred / mask.name, read_label_png(mask))


# item 8: wsss evaluate

def test_a_value_that_is_not_a_class_fails_that_image_alone(folder_dataset, tmp_path, capsys):
    pred = tmp_path / "pred"
    copy_masks_as_predictions(folder_dataset, pred)
    label = read_label_png(pred / "img1.png")
    label[0, :5] = 7  # 3 classes: 0..3 and 255 are labels
    write_label_png(pred / "img1.png", label)
    mask_path = folder_dataset / "masks" / "img2.png"
    mask = read_label_png(mask_path)
    mask[-1, -3:] = 9
    write_label_png(mask_path, mask)
    scores_path = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(pred), "--dataset", str(folder_dataset), "--json", str(scores_path)]) == 0
    out = capsys.readouterr().out
    assert f"{pred / 'img1.png'}: prediction holds value(s) 7 that are not classes (expected 0..3" in out
    assert f"{mask_path}: mask holds value(s) 9 that are not classes (expected 0..3" in out
    scores = json.loads(scores_path.read_text())
    assert set(scores["unusable"]) == {"img1", "img2"} and scores["not_scored"] == 2
    assert scores["mIoU"] == pytest.approx(1.0)  # the other 4 are scored: copies of their masks


def test_pred_naming_no_folder_or_a_file_is_an_error(folder_dataset, tmp_path, capsys):
    scores = tmp_path / "scores.json"
    missing, file, empty = tmp_path / "missing", tmp_path / "file.png", tmp_path / "empty"
    file.write_bytes(b"x")
    empty.mkdir()
    for pred, said in ((missing, "no such folder"), (file, "a file, not a folder"), (empty, "no predictions in it")):
        code = main(["evaluate", "--pred", str(pred), "--dataset", str(folder_dataset), "--json", str(scores)])
        assert code == 2
        assert f"error: {pred}: {said}" in capsys.readouterr().err
        assert not scores.exists()  # no JSON of NaN scores


def test_predictions_of_ids_not_in_the_split_are_reported(folder_dataset, tmp_path, capsys):
    pred = tmp_path / "pred"
    copy_masks_as_predictions(folder_dataset, pred)
    assert main(["evaluate", "--pred", str(pred), "--dataset", str(folder_dataset), "--split", "val",
                 "--json", str(tmp_path / "s.json")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {pred}: 4 prediction(s) of ids not in {folder_dataset} (split val), not scored: img0, img1, img2, " \
           "img3" in err
    assert json.loads((tmp_path / "s.json").read_text())["not_in_dataset"] == 4
    for name in ("img4.png", "img5.png"):
        (pred / name).rename(pred / f"other_{name}")
    assert main(["evaluate", "--pred", str(pred), "--dataset", str(folder_dataset), "--split", "val"]) == 2
    assert f"error: {pred}: none of its 6 prediction(s) is of an image of {folder_dataset} (split val)" \
        in capsys.readouterr().err


def test_a_jpeg_mask_named_png_is_refused_by_name(folder_dataset, tmp_path, capsys):
    pred = tmp_path / "pred"
    copy_masks_as_predictions(folder_dataset, pred)
    mask_path = folder_dataset / "masks" / "img3.png"
    Image.fromarray(read_label_png(mask_path)).save(mask_path, format="JPEG", quality=95)  # lossy bytes, .png name
    with pytest.raises(ValueError, match=re.escape(f"{mask_path}: JPEG data, not a PNG: a label map must be a lossless")):
        read_label_png(mask_path)
    assert main(["evaluate", "--pred", str(pred), "--dataset", str(folder_dataset)]) == 0
    assert f"img3: ValueError: {mask_path}: JPEG data, not a PNG" in capsys.readouterr().out
    assert main(["data", "check", str(folder_dataset), "--quiet"]) == 1  # listed as a bad mask
    assert "JPEG data, not a PNG" in capsys.readouterr().out


# item 10: --out naming a file, a full disk

@pytest.mark.parametrize("command", ["pseudo-label", "cam", "saliency", "predict"])
def test_out_naming_an_existing_file_is_an_error_line(command, folder_dataset, classifier, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("my notes")
    where = ["--images", str(folder_dataset / "images")] if command == "predict" else ["--dataset", str(folder_dataset)]
    for target in (out, out / "labels"):
        assert main([command, "--checkpoint", str(classifier), *where, "--out", str(target)]) == 2
        error = capsys.readouterr().err
        assert f"error: {target}: the output folder names an existing file" in error and "not a folder" in error
    assert out.read_text() == "my notes"


def _on_a_full_disk(folder: Path, args: list[str]) -> subprocess.CompletedProcess | None:
    """``python -m wsss ARGS`` with ``folder`` a small tmpfs filled to the last byte (a real full
    disk), in a user and mount namespace of its own (no root needed where unprivileged namespaces
    are allowed); None when this machine allows neither."""
    if shutil.which("unshare") is None:
        return None
    folder.mkdir()
    script = ('mount -t tmpfs -o size=64k tmpfs "$1" || exit 97; head -c 1M /dev/zero > "$1/filler" 2>/dev/null; '
              'shift; exec "$@"')
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(folder),
                           sys.executable, "-m", "wsss", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    return None if done.returncode == 97 or "unshare:" in done.stderr else done


def test_a_full_disk_is_an_error_line_with_its_own_status(folder_dataset, tmp_path):
    pred, disk = tmp_path / "pred", tmp_path / "disk"
    copy_masks_as_predictions(folder_dataset, pred)
    scores = disk / "scores.json"
    done = _on_a_full_disk(disk, ["evaluate", "--pred", str(pred), "--dataset", str(folder_dataset), "--json", str(scores)])
    if done is None:
        pytest.skip("no user and mount namespaces here to make a small file system (the in-process test covers it)")
    assert done.returncode == DISK_FULL, done.stderr
    assert "Traceback" not in done.stderr
    assert f"error: the disk is full (No space left on device writing {scores}): nothing finished is lost" \
        in done.stderr, done.stderr
    assert "mIoU" in done.stdout  # the scores were computed and printed; only the file could not be written


def test_a_full_disk_in_process_names_the_file(folder_dataset, classifier, tmp_path, monkeypatch, capsys):
    """Labels on a full disk: PNG writes fail as write(2) does there (OSError ENOSPC, no file
    name); the error names the file being written, and nothing half-written is left."""
    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    out = tmp_path / "labels"
    code = main(["pseudo-label", "--checkpoint", str(classifier), "--dataset", str(folder_dataset), "--out", str(out),
                 *NO_SALIENCY])
    assert code == DISK_FULL
    error = capsys.readouterr().err
    # the first file an image writes is its doubt map, then its label (a label always has its doubt)
    assert re.search(rf"error: the disk is full \(No space left on device writing {re.escape(str(out))}/doubt/img\d\.png\)",
                     error), error
    assert not [p for p in out.rglob("*") if p.suffix == ".png"]  # nothing half-written left


# item 11: settings refused before anything runs

@pytest.mark.parametrize("scales", ["nan", "1e6", "inf", "0", "1,-0.5"])
def test_bad_scales_are_refused_while_parsing(scales, classifier, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--checkpoint", str(classifier), "--images", str(tmp_path), "--out", str(tmp_path / "o"),
              "--scales", scales])
    assert stop.value.code == 2
    assert f"argument --scales: {scales!r}: expected comma-separated numbers with 0 < scale <= 4" \
        in capsys.readouterr().err


def test_infinite_and_nan_settings_are_refused_at_load(tmp_path, capsys):
    for override, key in (("train.classifier.lr=.inf", "train.classifier.lr"), ("refine.label.alpha=.nan",
                          "refine.label.alpha"), ("cam.scales=[1.0, 1.0e6]", "cam.scales")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_config(None, [override])
    run = tmp_path / "run"
    assert main(["train", "classifier", "--set", f"run_dir={run}", "--set", "train.classifier.lr=.inf"]) == 2
    assert "train.classifier.lr = inf: Input should be a finite number" in capsys.readouterr().err
    assert not run.exists()  # refused before anything was made
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)  # the shipped configs still load


def test_a_start_block_beyond_the_model_is_refused_before_the_folder_is_claimed(folder_dataset, classifier, tmp_path,
                                                                                capsys):
    labels = tmp_path / "labels"
    args = ["pseudo-label", "--checkpoint", str(classifier), "--dataset", str(folder_dataset), "--out", str(labels),
            *NO_SALIENCY]
    assert main([*args, "--set", "cam.start_block=99"]) == 2
    error = capsys.readouterr().err
    assert "cam.start_block=99: the model (model.depth) has 2 blocks; expected 0..1, or null" in error
    assert not (labels / SOURCE).exists()  # not claimed: the corrected run below is accepted
    assert main([*args, "--set", "cam.start_block=1"]) == 0
    assert (labels / "img0.png").is_file()
    # pseudo-label with settings of another depth than the classifier's: refused before the claim too
    other = tmp_path / "other_labels"
    demo = ["--config", str(ROOT / "configs" / "demo.yaml"), "--set", "cam.start_block=3"]  # demo.yaml: model.depth 4
    assert main([*args[:-len(NO_SALIENCY) - 2], "--out", str(other), *demo, *NO_SALIENCY]) == 2
    assert f"cam.start_block=3: the classifier {classifier} has 2 blocks; expected 0..1" in capsys.readouterr().err
    assert not (other / SOURCE).exists()
    # the classifier's own depth, when the settings given say another
    maps = tmp_path / "maps"
    args = ["cam", "--checkpoint", str(classifier), "--dataset", str(folder_dataset), "--out", str(maps),
            "--config", str(ROOT / "configs" / "demo.yaml"), "--no-overlays"]
    assert main([*args, "--set", "cam.start_block=3"]) == 2  # demo.yaml: model.depth 4
    assert f"cam.start_block=3: the classifier {classifier} has 2 blocks; expected 0..1, or null" in capsys.readouterr().err
    assert not maps.exists()
    assert main([*args, "--set", "cam.start_block=1"]) == 0


# item 12: messages

def test_text_files_that_are_not_utf8_are_named(folder_dataset, capsys):
    classes = folder_dataset / "classes.txt"
    classes.write_bytes("disk\nsquare\nbär\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=re.escape(f"{classes}: not UTF-8 text: byte 0xe4 at offset 13; expected the "
                                                     "class list")):
        FolderDataset(folder_dataset)
    assert main(["data", "check", str(folder_dataset), "--quiet"]) == 2
    assert f"{classes}: not UTF-8 text" in capsys.readouterr().err
    classes.write_text("disk\nsquare\nbar\n")
    tags = folder_dataset / "tags.csv"
    tags.write_bytes(tags.read_text().encode("utf-16"))  # what some spreadsheets save as "Unicode text"
    with pytest.raises(DatasetError, match=re.escape(f"{tags}: not UTF-8 text: byte 0xff at offset 0 (it looks like "
                                                     "UTF-16); expected the tags file")):
        FolderDataset(folder_dataset)
    tags.write_text(tags.read_bytes().decode("utf-16"))
    split = folder_dataset / "splits" / "train.txt"
    split.write_bytes(b"img0\nimg\xff1\n")
    with pytest.raises(DatasetError, match=re.escape(f"{split}: not UTF-8 text: byte 0xff at offset 8; expected the "
                                                     "split file")):
        FolderDataset(folder_dataset, split="train")


def test_a_byte_order_mark_is_dropped(folder_dataset, capsys):
    for name in ("classes.txt", "tags.csv", "splits/train.txt"):
        path = folder_dataset / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as Notepad saves "UTF-8 with BOM"
    dataset = FolderDataset(folder_dataset, split="train")
    assert dataset.classes == CLASSES and dataset.ids == ["img0", "img1", "img2", "img3"]
    assert dataset.tag_names("img0") == ["disk"]
    assert main(["data", "check", str(folder_dataset), "--quiet"]) == 0


def test_a_file_that_is_no_checkpoint_gets_our_own_message(tmp_path, capsys):
    json_file, noise = tmp_path / "weights.json", tmp_path / "weights.pt"
    json_file.write_text(json.dumps({"model": {"w": [1.0, 2.0]}}))
    noise.write_bytes(random.Random(0).randbytes(4096))
    for path, what in ((json_file, r"not a PyTorch checkpoint \(it looks like JSON; "),
                       (noise, r"not a PyTorch checkpoint(, or a damaged one)? \(")):
        assert main(["weights", "inspect", str(path)]) == 2
        error = capsys.readouterr().err
        assert re.search(rf"error: model.pretrained: cannot read {re.escape(str(path))} as a torch checkpoint: {what}",
                         error), error
        assert "weights_only" not in error and "likely succeed" not in error
        with pytest.raises(ValueError, match=f"{re.escape(str(path))}: cannot read as a plain-data checkpoint: {what}") \
                as refused:
            load_checkpoint(path)
        assert "weights_only" not in str(refused.value)


def test_a_checkpoint_holding_code_is_refused_without_the_advice_to_load_it(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "config": ModelConfig()}, path)  # an object, not plain data
    assert main(["weights", "inspect", str(path)]) == 2
    error = capsys.readouterr().err
    assert "it holds wsss.config.ModelConfig, which is not plain data" in error and "refused" in error
    assert "weights_only" not in error and "likely succeed" not in error
