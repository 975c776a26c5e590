"""`wsss cam` on a tiny trained classifier: writes maps and overlays, resumes, records failures."""

import json

import numpy as np

from wsss.cli import main
from wsss.data import FolderDataset
from tests.runs import classifier_of
from tests.test_classifier import tiny_config


def test_cam_writes_maps_overlays_and_resumes(tmp_path, capsys):
    config = tiny_config(tmp_path, "train.classifier.epochs=1")
    checkpoint = classifier_of(config, progress=False)
    data, out = tmp_path / "data", tmp_path / "cams"
    args = ["cam", "--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "val", "--out", str(out)]
    args += ["--method", "rollout"]
    assert main(args) == 0
    val_ids = (data / "splits" / "val.txt").read_text().split()
    tags = {line.split(",")[0].split(".")[0]: line.split(",")[1].split(";")
            for line in (data / "tags.csv").read_text().splitlines()[1:]}
    for image_id in val_ids:
        saved = np.load(out / "maps" / f"{image_id}.npz")
        assert sorted(saved["class_names"].tolist()) == sorted(tags[image_id])
        assert saved["maps"].shape == (len(tags[image_id]), 48, 48) and saved["maps"].dtype == np.float16
        assert np.isfinite(saved["maps"]).all() and saved["maps"].max() <= 1.0
        for name in tags[image_id]:
            assert (out / "overlays" / f"{image_id}_{name}.png").is_file()
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == val_ids and {x["status"] for x in lines} == {"ok"}

    # a second run skips finished images; a corrupt new image fails alone
    (out / "maps" / f"{val_ids[0]}.npz").unlink()
    FolderDataset(data).image_path(val_ids[1]).write_bytes(b"\xff\xd8 broken")
    (out / "maps" / f"{val_ids[1]}.npz").unlink()
    assert main(args) == 1
    assert f"1 written, {len(val_ids) - 2} already there, 1 failed" in capsys.readouterr().out
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()][len(val_ids):]
    assert {x["id"]: x["status"] for x in lines} == {val_ids[0]: "ok", val_ids[1]: "failed"}
    assert "cannot decode image" in lines[[x["id"] for x in lines].index(val_ids[1])]["reason"]
    # maps of another method into the same folder: refused (source.json)
    assert json.loads((out / "source.json").read_text())["cam"]["method"] == "rollout"
    assert main([*args[:-1], "getam"]) == 2
    assert 'other settings (cam.method: "rollout" → "getam")' in capsys.readouterr().err
