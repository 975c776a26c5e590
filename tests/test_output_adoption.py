"""Files already in an output folder are never adopted as finished results unless the folder's
own record (source.json) says a wsss run of the same settings wrote them (issue 29, item 1)."""

from __future__ import annotations

import shutil

import pytest

from tests.runs import classifier_of
from tests.test_classifier import tiny_config
from wsss.cli import main
from wsss.steps.provenance import SOURCE, claim_output_dir


def test_a_folder_with_files_but_no_record_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "img0.png").write_bytes(b"not ours")
    with pytest.raises(ValueError, match=r"holds 1 file\(s\) or folder\(s\) \(img0.png\) but no source.json"):
        claim_output_dir(out, {"checkpoint_sha256": "abc"})
    assert not (out / SOURCE).exists()
    note = claim_output_dir(out, {"checkpoint_sha256": "abc"}, strict=False)  # the inbox: kept, with a note
    assert "but no source.json" in note and (out / SOURCE).is_file()
    assert claim_output_dir(tmp_path / "new", {"checkpoint_sha256": "abc"}) is None  # new: claimed


def test_commands_refuse_the_masks_or_images_folder_as_output(tmp_path, capsys):
    config = tiny_config(tmp_path, "train.classifier.epochs=1")
    checkpoint = classifier_of(config, progress=False)
    data = config.data.root
    masks = data / "masks"
    before = sorted(p.name for p in masks.iterdir())
    code = main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "val",
                 "--out", str(masks)])
    assert code == 2
    error = capsys.readouterr().err
    assert f"error: {masks} holds {len(before)} file(s)" in error and "would be taken for finished outputs" in error
    assert sorted(p.name for p in masks.iterdir()) == before  # nothing written, no source.json
    images = tmp_path / "photos"
    shutil.copytree(data / "images", images)
    code = main(["cam", "--checkpoint", str(checkpoint), "--dataset", str(data), "--out", str(images)])
    assert code == 2 and "but no source.json" in capsys.readouterr().err
    assert not (images / SOURCE).exists() and not (images / "maps").exists()
