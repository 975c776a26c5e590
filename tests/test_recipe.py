"""``wsss init``: settings derived from a data set (folder, VOC, COCO) and a model (the demo's
scratch ViT, timm models with random-weight files in real layouts), written as a YAML that loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.test_coco import standard_set
from tests.test_weight_layouts import released, write_hub_cache
from wsss.cli import main
from wsss.config import load_config
from wsss.data.folder import write_folder_dataset_index
from wsss.steps.recipe import DEMO_CONFIG


def init(capsys, *args) -> tuple[int, str, str]:
    code = main(["init", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def photo_folder(root, sizes, splits: bool = False):
    """A plain folder of random images of the given (H, W) sizes, two classes, tags only."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    tags = {}
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(root / "images" / f"p{i}.jpg")
        tags[f"p{i}.jpg"] = ["cat"] if i % 2 else ["cat", "dog"]
    ids = [f"p{i}" for i in range(len(sizes))]
    write_folder_dataset_index(root, ["cat", "dog"], tags, {"train": ids[2:], "val": ids[:2]} if splits else None)
    return root


def test_on_the_demo_data_init_gives_the_demo_settings(tmp_path, capsys):
    """The rules reproduce the demo's measured settings on the demo's own data: the effective
    configuration differs from configs/demo.yaml only in the data section, the run folder and
    the demo's report notes."""
    from wsss.data.synth import generate_synth_dataset

    demo = load_config(DEMO_CONFIG)
    data = generate_synth_dataset(tmp_path / "demo", demo.data.synth)
    code, out, _ = init(capsys, data, "--out", tmp_path / "demo.yaml")
    assert code == 0
    written = load_config(tmp_path / "demo.yaml")
    for key in ("model", "cam", "refine", "predict"):
        assert getattr(written, key) == getattr(demo, key), key
    assert written.train.classifier == demo.train.classifier
    assert written.train.segmenter.model_copy(update={"crop_size": None}) == demo.train.segmenter
    assert written.train.segmenter.crop_size == demo.model.img_size
    assert (written.data.format, written.data.root, written.data.train_split, written.data.val_split) == (
        "folder", data.resolve(), "train", "val")
    # every derived value is printed with its reason, and marked in the YAML
    text = (tmp_path / "demo.yaml").read_text()
    for key in ("cam.scales", "refine.label.opening", "predict.scales", "train.segmenter.scale_range",
                "train.classifier.epochs", "train.segmenter.steps", "model.img_size"):
        assert f"  {key} = " in out
    assert text.count("# derived:") >= 15
    assert "1105 (split train)" in text and "longer side median 128 px" in text


def test_photos_of_mixed_sizes_without_splits(tmp_path, capsys):
    """Non-square photos of several sizes and no splits/: the splits are written (15 % held out,
    said so), the size rules follow the median longer side, the lengths the image count."""
    sizes = [(375, 500), (500, 375), (333, 500), (480, 640)] * 10
    root = photo_folder(tmp_path / "photos", sizes)
    code, out, _ = init(capsys, root, "--out", tmp_path / "photos.yaml")
    assert code == 0
    assert (root / "splits" / "val.txt").read_text().split() and "6 ids" in out and "15% held out" in out
    train = (root / "splits" / "train.txt").read_text().split()
    val = (root / "splits" / "val.txt").read_text().split()
    assert len(train) == 34 and len(val) == 6 and not set(train) & set(val)
    config = load_config(tmp_path / "photos.yaml")
    assert config.data.train_split == "train" and config.data.val_split == "val"
    assert config.model.img_size == 256  # the median longer side (500) is above the scratch ViT's 256
    assert config.cam.scales == [1.0] and config.predict.scales == [1.0]  # 500 px already spans 62 tokens of 8
    assert config.train.segmenter.scale_range == [0.67, 1.33]
    assert config.train.classifier.epochs == 100  # 4,140 steps over 34 images: capped at 100 epochs
    assert config.train.segmenter.steps == 300  # 5 passes over 34 images: the floor of 300
    assert "distinct sizes, 0% square" in out
    # an existing file is not replaced without --force
    with pytest.raises(SystemExit):
        main(["init"])
    code, _, err = init(capsys, root, "--out", tmp_path / "photos.yaml")
    assert code == 2 and "exists" in err and "--force" in err


def test_small_images_get_enlarged_maps_and_predictions(tmp_path, capsys):
    """64-px images with the demo's 8-px stride: maps at 2.5× (20 tokens), predictions at 3× and
    4× (24 and 32 tokens), opening 5, crops the model's 64 px."""
    root = photo_folder(tmp_path / "small", [(64, 64)] * 12, splits=True)
    assert init(capsys, root, "--out", tmp_path / "small.yaml")[0] == 0
    config = load_config(tmp_path / "small.yaml")
    assert config.model.img_size == 64 and config.cam.scales == [2.5] and config.predict.scales == [3.0, 4.0]
    assert config.train.segmenter.scale_range == [2.0, 4.0] and config.train.segmenter.crop_size == 64


def test_timm_model_at_its_weights_own_input_size(tmp_path, capsys):
    """--model with a weights file written at 384 px (a 24×24 grid of 16-px patches): the model's
    input size is the weights' 384, its architecture timm's, GETAM over the second half, the
    opening 10 (the paper's for 16-px patches), the fine-tuning length."""
    state = released(dict(name="vit_tiny_patch16_384"))
    torch.save({"model": state}, tmp_path / "tiny384.pth")
    root = photo_folder(tmp_path / "photos", [(375, 500)] * 20, splits=True)
    code, out, _ = init(capsys, root, "--model", "vit_tiny_patch16_224", "--weights", tmp_path / "tiny384.pth",
                        "--out", tmp_path / "timm.yaml")
    assert code == 0
    config = load_config(tmp_path / "timm.yaml")
    assert config.model.name == "vit_tiny_patch16_224" and config.model.img_size == 384
    assert (config.model.patch_size, config.model.depth, config.model.conv_stem) == (None, None, None)
    assert str(config.model.pretrained) == str(tmp_path / "tiny384.pth")
    assert config.cam.start_block is None and config.refine.label.opening == 10
    assert config.train.classifier.lr == 1e-4 and "24×24 position grid" in out
    # the model the file names without --model: refused with what to give
    code, _, err = init(capsys, root, "--weights", tmp_path / "tiny384.pth", "--out", tmp_path / "x.yaml")
    assert code == 2 and "give --model NAME" in err
    # weights that do not fit the named model: refused, naming the keys
    code, _, err = init(capsys, root, "--model", "vit_small_patch16_224", "--weights", tmp_path / "tiny384.pth",
                        "--out", tmp_path / "y.yaml")
    assert code == 2 and "does not fit vit_small_patch16_224" in err and "shape mismatches" in err
    assert not (tmp_path / "y.yaml").exists()


def test_hf_hub_weights_name_the_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    write_hub_cache(tmp_path / "hf", "timm/vit_tiny_patch16_224.augreg_in21k", released(dict(name="vit_tiny_patch16_224")))
    root = photo_folder(tmp_path / "photos", [(240, 320)] * 20, splits=True)
    code, out, _ = init(capsys, root, "--weights", "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k",
                        "--out", tmp_path / "hub.yaml")
    assert code == 0
    config = load_config(tmp_path / "hub.yaml")
    assert config.model.name == "vit_tiny_patch16_224" and config.model.img_size == 224
    assert str(config.model.pretrained) == "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k"
    assert config.cam.scales == [1.0] and config.predict.scales == [1.25, 1.5]  # 320 px: 20 tokens of 16 at 1.0


def test_voc_and_coco_layouts(tmp_path, capsys, voc_dataset):
    code, out, _ = init(capsys, voc_dataset, "--out", tmp_path / "voc.yaml")
    assert code == 0
    config = load_config(tmp_path / "voc.yaml")
    assert (config.data.format, config.data.train_split, config.data.val_split) == ("voc", "train", "val")
    assert "classes (20)" in out and "masks: validation split" in out
    images, annotations = standard_set(tmp_path / "coco")
    code, out, _ = init(capsys, images, "--annotations", annotations, "--val-annotations", annotations,
                        "--out", tmp_path / "coco.yaml")
    assert code == 0
    written = yaml.safe_load((tmp_path / "coco.yaml").read_text())
    config = load_config(tmp_path / "coco.yaml")
    assert config.data.format == "coco" and config.data.coco_annotations == annotations.resolve()
    assert config.data.val_split == annotations.stem and written["data"]["coco_val_root"] == str(images.resolve())
