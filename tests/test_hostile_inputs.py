"""Inputs that used to end a whole run or silently change a label, made on disk by the test:
tiny images, a decompression bomb, an RGB mask, an unreadable mask, an EXIF-rotated photo, an
empty output file. Each fails only its own image (with the reason in the manifest) or is
handled as documented; every other image is labelled."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.data import FolderDataset
from wsss.data.folder import write_folder_dataset_index
from wsss.data.images import ImageNotes, ImageReadError, read_rgb
from wsss.data.label_png import read_label_png, write_label_png
from wsss.eval.check import check_dataset
from wsss.eval.evaluate import evaluate_label_dir
from wsss.eval.trivial_baseline import trivial_baseline_label
from wsss.data.synth import SYNTH_CLASSES as CLASSES  # the tiny classifier's classes
from tests.conftest import draw_sample
from tests.runs import classifier_of
from tests.test_classifier import tiny_config


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """A folder data set (the demo's classes, 3 of them used): 3 good 40×48 images, an 8×8 and a 4×4 image, a
    'decompression bomb' (over a lowered PIL limit), an image whose mask is RGB, one whose
    mask is not a PNG, and a photo with EXIF orientation 6 (its mask as a viewer shows it)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # > 2× this (40,000 px) raises
    rng = np.random.default_rng(0)
    root = tmp_path / "hostile"
    (root / "images").mkdir(parents=True)
    tags = {}

    def add(name, image, mask, labels, **save):
        Image.fromarray(image).save(root / "images" / name, **save)
        if mask is not None:
            write_label_png(root / "masks" / f"{name.rsplit('.', 1)[0]}.png", mask)
        tags[name] = [CLASSES[label - 1] for label in labels]

    for i in range(3):
        add(f"good{i}.png", *draw_sample(rng, (40, 48), [1 + i]), [1 + i])
    add("tiny8.png", *draw_sample(rng, (8, 8), [1]), [1])
    add("tiny4.png", *draw_sample(rng, (4, 4), [2]), [2])
    add("bomb.png", *draw_sample(rng, (210, 210), [3]), [3])
    image, mask = draw_sample(rng, (40, 48), [2])
    add("rgbmask.png", image, None, [2])
    Image.fromarray(np.stack([mask * 40] * 3, axis=2)).save(root / "masks" / "rgbmask.png")
    add("badmask.png", *draw_sample(rng, (40, 48), [1]), [1])
    (root / "masks" / "badmask.png").write_bytes(b"not a png")
    # a phone photo: stored 48 wide × 40 high, EXIF orientation 6 (shown rotated 90° clockwise)
    shown, shown_mask = draw_sample(rng, (48, 40), [3])
    stored = np.ascontiguousarray(np.rot90(shown, k=1))  # rotating it clockwise gives `shown`
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "images" / "phone.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
    write_label_png(root / "masks" / "phone.png", shown_mask)
    tags["phone.jpg"] = [CLASSES[2]]
    write_folder_dataset_index(root, CLASSES, tags)
    return root, shown


def test_exif_orientation_is_applied_and_noted(hostile):
    root, shown = hostile
    notes = ImageNotes()
    image = read_rgb(root / "images" / "phone.jpg", notes)
    assert image.shape == shown.shape  # 48 high × 40 wide, as a viewer shows it
    stored = np.rot90(shown, k=1)
    error = np.abs(image.astype(int) - shown.astype(int)).mean()
    turned_wrong = np.abs(image.astype(int) - np.rot90(stored, k=1).astype(int)).mean()  # 180° from shown
    assert error < 6 and error < turned_wrong / 3  # JPEG noise only
    assert notes.conversions == ["EXIF orientation 6 applied (rotated/flipped as shown)"]
    sample = FolderDataset(root).load("phone")  # its mask (drawn on the shown image) fits
    assert sample.mask.shape == image.shape[:2]


def test_decompression_bomb_is_a_read_error_naming_the_file(hostile):
    root, _ = hostile
    with pytest.raises(ImageReadError, match=r"bomb.png: refused, too many pixels"):
        read_rgb(root / "images" / "bomb.png")


def test_tiny_images_have_a_trivial_baseline():
    for side in (1, 2, 3, 4, 8):
        image = np.zeros((side, side, 3), np.uint8)
        image[side // 2, side // 2] = 255
        label = trivial_baseline_label(image, np.array([0.0, 1.0]))
        assert label.shape == (side, side) and set(np.unique(label)) <= {0, 2}


def test_data_check_lists_the_bad_files_and_goes_on(hostile):
    root, _ = hostile
    report = check_dataset(FolderDataset(root))
    text = "\n".join(str(problem) for problem in report.problems)
    assert "bomb.png" in text and "too many pixels" in text
    assert "rgbmask.png" in text and "badmask.png" in text
    assert "phone" in text and "EXIF orientation 6 applied" in text  # a warning: the photo was rotated


def test_pseudo_label_fails_only_the_bad_images_and_reads_no_mask(hostile, tmp_path):
    root, _ = hostile
    checkpoint = classifier_of(tiny_config(tmp_path, "train.classifier.epochs=1"), progress=False)
    out = tmp_path / "labels"
    code = main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(root), "--out", str(out),
                 "--set", "refine.label.opening=3", "--set", "refine.saliency.source=tokencut"])
    assert code == 1  # one image failed
    entries = {json.loads(line)["id"]: json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert entries["bomb"]["status"] == "failed" and "too many pixels" in entries["bomb"]["reason"]
    dataset = FolderDataset(root)
    for image_id in dataset.ids:
        if image_id == "bomb":
            assert not (out / "bomb.png").exists()
            continue
        assert entries[image_id]["status"] == "ok", entries[image_id]
        label = read_label_png(out / f"{image_id}.png")
        assert label.shape == dataset.load(image_id, masks=False).image.shape[:2]
    # scoring reads the masks: the unreadable ones are left out with their reason
    scores = evaluate_label_dir(out, dataset, progress=False)
    assert set(scores.missing) == {"bomb", "rgbmask", "badmask"}
    assert "no prediction" in scores.missing["bomb"] and "badmask.png" in scores.missing["badmask"]
    # an empty label file (left by something else) is redone, not counted as finished
    (out / "good0.png").write_bytes(b"")
    assert main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(root), "--out", str(out),
                 "--set", "refine.label.opening=3", "--set", "refine.saliency.source=tokencut"]) == 1
    assert read_label_png(out / "good0.png").shape == (40, 48)


@pytest.fixture
def with_big_photo(tmp_path):
    """Two folder data sets of the same images: in "big" one image is 120×200 (over a
    data.max_side of 64), in "small" that image is stored already shrunk to 38×64 (the working
    size) as a lossless PNG."""
    from wsss.data.size_limit import working_size
    from wsss.data.tensors import resize_image

    rng = np.random.default_rng(3)
    big_image, big_mask = draw_sample(rng, (120, 200), [1, 2])
    roots = {}
    for kind in ("big", "small"):
        root = tmp_path / kind
        (root / "images").mkdir(parents=True)
        tags = {}
        for i in range(2):
            image, mask = draw_sample(np.random.default_rng(10 + i), (40, 48), [1 + i])
            Image.fromarray(image).save(root / "images" / f"good{i}.png")
            write_label_png(root / "masks" / f"good{i}.png", mask)
            tags[f"good{i}.png"] = [CLASSES[i]]
        image = big_image if kind == "big" else resize_image(big_image, working_size(120, 200, 64))
        Image.fromarray(image).save(root / "images" / "photo.png")
        write_label_png(root / "masks" / "photo.png", big_mask if kind == "big" else
                        cv2.resize(big_mask, (64, 38), interpolation=cv2.INTER_NEAREST))
        tags["photo.png"] = [CLASSES[0], CLASSES[1]]
        write_folder_dataset_index(root, CLASSES, tags)
        roots[kind] = root
    return roots


def test_an_image_over_max_side_is_labelled_small_and_written_at_its_size(with_big_photo, tmp_path, capsys):
    checkpoint = classifier_of(tiny_config(tmp_path, "train.classifier.epochs=1"), progress=False)
    common = ["--checkpoint", str(checkpoint), "--set", "data.max_side=64", "--set", "refine.saliency.source=tokencut"]
    out = {kind: tmp_path / f"labels_{kind}" for kind in with_big_photo}
    for kind, root in with_big_photo.items():
        assert main(["pseudo-label", "--dataset", str(root), "--out", str(out[kind]), *common]) == 0
    printed = capsys.readouterr().out
    assert "photo: 200×120 is over data.max_side=64: computed at 64×38, outputs written at 200×120" in printed
    entries = {json.loads(line)["id"]: json.loads(line) for line in (out["big"] / "manifest.jsonl").read_text().splitlines()}
    assert "max_side=64" in entries["photo"]["note"] and "note" not in entries["good0"]
    big, small = read_label_png(out["big"] / "photo.png"), read_label_png(out["small"] / "photo.png")
    assert big.shape == (120, 200) and small.shape == (38, 64)
    # the label of the big photo is the label of its working-size copy, brought back by nearest neighbour
    assert np.array_equal(big, cv2.resize(small, (200, 120), interpolation=cv2.INTER_NEAREST))
    assert (small > 0).any()
    for image_id in ("good0", "good1"):
        assert np.array_equal(read_label_png(out["big"] / f"{image_id}.png"),
                              read_label_png(out["small"] / f"{image_id}.png"))
    assert not evaluate_label_dir(out["big"], FolderDataset(with_big_photo["big"]), progress=False).missing
    # the same photo refused by data.oversize=refuse: its entry fails and says why, the others are labelled
    refused = tmp_path / "labels_refused"
    assert main(["pseudo-label", "--dataset", str(with_big_photo["big"]), "--out", str(refused), *common,
                 "--set", "data.oversize=refuse"]) == 1
    entries = {json.loads(line)["id"]: json.loads(line) for line in (refused / "manifest.jsonl").read_text().splitlines()}
    assert entries["photo"]["status"] == "failed"
    assert "photo.png: 200×120 is over data.max_side=64" in entries["photo"]["reason"]
    assert entries["good0"]["status"] == entries["good1"]["status"] == "ok"
    # data check counts the images over the limit
    report = check_dataset(FolderDataset(with_big_photo["big"]).limit_size(64), progress=False)
    assert report.over_max_side == 1 and "1 image(s) over data.max_side=64" in report.summary()


def test_an_output_whose_manifest_line_was_lost_is_recorded_on_the_next_run(tmp_path):
    """A SIGKILL between an output's atomic write and its manifest line: the next run skips
    the image (it is finished) and records it, so the manifest lists every finished image."""
    from wsss.data.dataset_walk import Walk, WalkFiles, run_dataset

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / "images" / f"im{i}.png")
    write_folder_dataset_index(root, CLASSES, {f"im{i}.png": [CLASSES[0]] for i in range(3)})
    dataset, out = FolderDataset(root), tmp_path / "out"
    out.mkdir()
    (out / "im0.png").write_bytes(b"done")  # written, then the process was killed before its manifest line
    counts = run_dataset(dataset, lambda batch: [None] * len(batch),
                         lambda sample, _: (out / f"{sample.id}.png").write_bytes(b"done") and None,
                         Walk(), WalkFiles(out))
    assert (counts["ok"], counts["skipped"]) == (2, 1)
    entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["id"] for e in entries if e["status"] == "ok") == ["im0", "im1", "im2"]
    assert "manifest line was lost" in next(e for e in entries if e["id"] == "im0")["note"]
    run_dataset(dataset, lambda batch: [None] * len(batch), lambda sample, _: None, Walk(), WalkFiles(out))
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3  # nothing recorded twice
