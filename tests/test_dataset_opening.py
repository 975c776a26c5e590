"""One way to open a data set: a command given ``--dataset`` and the flows given the same folder as
``data.root`` see the same ids, tags, masks and images, for every format, with the ``data``
section's other settings applied to both (before, the command line ignored ``data.voc_masks``
and ``data.voc_tags``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.test_coco import standard_set
from wsss.cli.arguments import command_config
from wsss.cli.parser import build_parser
from wsss.config import load_config
from wsss.data import dataset_section, open_dataset
from wsss.data.label_png import read_label_png, write_label_png


def _contents(dataset) -> dict:
    """What a step reads of a data set: per id the image file, the tags and the mask."""
    return {i: (str(dataset.image_path(i)), dataset.tag_names(i),
                None if dataset.mask_path(i) is None else dataset.read_mask(i).tobytes()) for i in dataset.ids}


def _seen(tmp_path: Path, data: dict, command: list[str], split: str | None, flow_split: str | None):
    """(what ``wsss <command> --config CFG`` opens, what a flow with ``data`` opens)."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"data": data}))
    args = build_parser().parse_args([*command, "--config", str(config_file), *(["--split", split] if split else [])])
    cli = open_dataset(command_config(args).data, args.split)
    flow = open_dataset(load_config(config_file).data, flow_split)  # as flows.* open config.data
    return cli, flow


def _commands(root: Path, out: Path, extra: list[str] = ()) -> list[list[str]]:
    dataset = ["--dataset", str(root), *extra]
    return [["pseudo-label", "--checkpoint", str(out / "c.pt"), "--out", str(out / "labels"), *dataset],
            ["evaluate", "--pred", str(out / "labels"), *dataset],
            ["report", "--checkpoint", str(out / "c.pt"), "--out", str(out / "report"), *dataset],
            ["export", str(out / "labels"), "--out", str(out / "coco.json"), *dataset]]


def test_folder_format(folder_dataset, tmp_path):
    data = {"format": "folder", "root": str(folder_dataset), "max_side": 32}  # a size limit both must apply
    for command in _commands(folder_dataset, tmp_path):
        cli, flow = _seen(tmp_path, data, command, "train", "train")
        assert cli.ids == flow.ids == ["img0", "img1", "img2", "img3"]
        assert _contents(cli) == _contents(flow)
        assert cli.max_side == flow.max_side == 32


def test_voc_masks_and_tags_settings_reach_the_command_line(voc_dataset, tmp_path):
    """SegmentationClassAug holds other masks than SegmentationClass: ``data.voc_masks`` chooses,
    for the command line as for the flows; ``data.voc_tags: mask`` takes tags from the masks."""
    aug = voc_dataset / "SegmentationClassAug"
    aug.mkdir()
    for path in sorted((voc_dataset / "SegmentationClass").glob("*.png")):
        write_label_png(aug / path.name, np.where(read_label_png(path) == 255, 255, 1).astype(np.uint8))
    for masks, tags in (("SegmentationClass", "mask"), ("auto", "auto"), ("SegmentationClassAug", "mask")):
        data = {"format": "voc", "root": str(voc_dataset), "voc_masks": masks, "voc_tags": tags}
        for command in _commands(voc_dataset, tmp_path, ["--format", "voc"]):
            cli, flow = _seen(tmp_path, data, command, "val", "val")
            assert cli.ids == flow.ids and len(cli.ids) == 6
            assert _contents(cli) == _contents(flow)
        first = cli.ids[0]
        chosen = "SegmentationClass" if masks == "SegmentationClass" else "SegmentationClassAug"
        assert np.array_equal(cli.read_mask(first), read_label_png(voc_dataset / chosen / f"{first}.png"))


def test_coco_format(tmp_path):
    images, annotations = standard_set(tmp_path / "coco")
    data = {"format": "coco", "root": str(images), "coco_annotations": str(annotations), "coco_min_area": 10}
    extra = ["--annotations", str(annotations)]
    for command in _commands(images, tmp_path, extra):
        for split in (None, annotations.stem):  # one split per JSON: none, or the JSON's own stem
            cli, flow = _seen(tmp_path, data, command, split, "train")
            assert cli.ids == flow.ids and len(cli.ids) >= 5
            assert _contents(cli) == _contents(flow)  # coco_min_area: the 4-pixel cat of b is no tag in either
        assert "cat" not in cli.tag_names("b")
    with pytest.raises(Exception, match="one split per annotations file"):
        _seen(tmp_path, data, _commands(images, tmp_path, extra)[0], "val", "train")


def test_dataset_section_errors(folder_dataset, tmp_path):
    data = load_config(None).data
    assert dataset_section(data, None) is data  # no --dataset: the config's own
    with pytest.raises(ValueError, match="--annotations .* is for --format coco, not --format voc"):
        dataset_section(data, folder_dataset, "voc", tmp_path / "x.json")
    with pytest.raises(ValueError, match="--format coco needs --annotations FILE"):
        dataset_section(data, folder_dataset, "coco")
    with pytest.raises(ValueError, match="give --dataset too"):
        dataset_section(data, None, "voc")
    assert dataset_section(data, folder_dataset).format == "folder"  # detected
