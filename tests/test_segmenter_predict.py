"""Segmenter inference: multi-scale + flip averaging, any image size, palette PNGs, CRF, the
CLI, and the validation score (equal to scoring the written PNGs)."""

import json
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.cli import main
from wsss.data import open_dataset
from wsss.eval.evaluate import evaluate_label_dir
from wsss.models.segmentation_model import create_segmenter
from wsss.data.base import DatasetError
from wsss.data.image_folder import ImageFolder
from wsss.eval.segmenter_scores import evaluate_segmenter
from wsss.models.checkpoint import load_segmenter
from wsss.predict import Predictor
from wsss.writers.prediction_pngs import predict_dataset, write_foreground_maps
from tests.test_segmenter import segmenter_config

torch.set_num_threads(1)


@pytest.fixture
def segmenter(tmp_path):
    config = segmenter_config(tmp_path)
    torch.manual_seed(0)
    return create_segmenter(config.model, "dpt", config.train.segmenter.dpt, num_classes=6).eval()


def random_image(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_any_size_and_probabilities(segmenter):
    rng = np.random.default_rng(0)
    images = [random_image(rng, 37, 53), random_image(rng, 37, 53)]
    probs = Predictor(segmenter, scales=(0.75, 1.0, 1.5), flip=True)(images)
    assert probs.shape == (2, 7, 37, 53)
    assert torch.allclose(probs.sum(1), torch.ones(2, 37, 53), atol=1e-5) and probs.min() >= 0
    with pytest.raises(ValueError, match="one size"):
        Predictor(segmenter)([images[0], random_image(rng, 40, 40)])
    with pytest.raises(ValueError, match="positive factors"):
        Predictor(segmenter, scales=(1.0, 0.0))


def test_scale_and_flip_averaging_equal_the_separate_runs(segmenter):
    rng = np.random.default_rng(1)
    image = random_image(rng, 45, 61)
    both = Predictor(segmenter, scales=(0.5, 1.0), flip=False)([image])
    half = Predictor(segmenter, scales=(0.5,), flip=False)([image])
    full = Predictor(segmenter, scales=(1.0,), flip=False)([image])
    assert torch.allclose(both, (half + full) / 2, atol=1e-6)
    flipped = Predictor(segmenter, scales=(1.0,), flip=True)([image])
    mirror = Predictor(segmenter, scales=(1.0,), flip=False)([np.ascontiguousarray(image[:, ::-1])])
    assert torch.allclose(flipped, (full + mirror.flip(-1)) / 2, atol=1e-6)
    segmenter.train()
    Predictor(segmenter)([image])
    assert segmenter.training  # the model's mode is restored


def test_predict_folder_writes_palette_pngs_and_records_failures(segmenter, tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, (h, w) in {"a": (40, 56), "b": (40, 56), "c": (33, 47)}.items():
        Image.fromarray(random_image(rng, h, w)).save(folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image file")
    out = tmp_path / "out"
    images = ImageFolder(folder, [f"c{i}" for i in range(6)])
    counts = predict_dataset(Predictor(segmenter, flip=False), images, out, batch_size=4, progress=False)
    assert counts == {"ok": 3, "skipped": 0, "failed": 1}
    assert predict_dataset(Predictor(segmenter, flip=False), images, out, progress=False)["skipped"] == 3
    for name, size in {"a": (56, 40), "b": (56, 40), "c": (47, 33)}.items():
        with Image.open(out / f"{name}.png") as png:
            assert png.mode == "P" and png.size == size
            assert np.array(png).max() <= 6
    failed = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()
              if json.loads(line)["status"] == "failed"]
    assert failed[0]["id"] == "broken" and "cannot decode" in failed[0]["reason"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        ImageFolder(tmp_path / "empty", ["c"])
    Image.fromarray(random_image(rng, 8, 8)).save(folder / "a.jpg")  # a.png and a.jpg: one output a.png
    with pytest.raises(DatasetError, match="a.jpg and a.png share the id 'a'"):
        ImageFolder(folder, ["c"])


def test_evaluate_segmenter_equals_scoring_its_pngs(segmenter, tmp_path):
    config = segmenter_config(tmp_path)
    dataset = open_dataset(config.data, "val")
    out = tmp_path / "pred"
    scores = evaluate_segmenter(Predictor(segmenter, scales=(1.0, 1.25)), dataset, out_dir=out, progress=False)
    again = evaluate_label_dir(out, dataset, progress=False)
    assert np.array_equal(scores.final().confusion.matrix, scores.argmax().confusion.matrix)  # no CRF: one score
    assert np.array_equal(scores.final().confusion.matrix, again.confusion.matrix) and not again.missing
    assert scores.final().confusion.matrix.sum() == sum(dataset[i].mask.size for i in range(len(dataset)))
    some = dataset.ids[:2]  # any subset from the same pass equals scoring those PNGs alone
    subset = evaluate_label_dir(out, dataset, progress=False, ids=some)
    assert np.array_equal(scores.final(some).confusion.matrix, subset.confusion.matrix)
    with_crf = evaluate_segmenter(Predictor(segmenter, scales=(1.0, 1.25)), dataset, crf=config.refine.crf,
                                  out_dir=tmp_path / "crf", progress=False)
    assert np.array_equal(with_crf.argmax().confusion.matrix, scores.final().confusion.matrix)  # the argmax is kept
    again = evaluate_label_dir(tmp_path / "crf", dataset, progress=False)
    assert np.array_equal(with_crf.final().confusion.matrix, again.confusion.matrix)  # the PNGs are the CRF's


def test_cli_train_then_predict_with_crf(tmp_path, capsys):
    sets = [f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}", "data.synth.num_images=24",
            "data.synth.image_size=48", "model.img_size=48", "model.patch_size=8", "model.embed_dim=32",
            "model.depth=2", "model.num_heads=2", "train.device=cpu", "train.segmenter.steps=2",
            "train.segmenter.batch_size=2", "train.segmenter.dpt.features=16", "train.segmenter.threads=1",
            "refine.saliency.source=none", "refine.crf.workers=1"]
    args = [a for s in sets for a in ("--set", s)]
    assert main(["train", "segmenter", *args]) == 0
    out = capsys.readouterr().out
    assert "val mIoU: segmenter" in out and "its in-loop pseudo-labels" in out
    checkpoint = tmp_path / "run" / "segmenter" / "segmenter.pt"
    model, classes, saved = load_segmenter(checkpoint)
    assert len(classes) == 6 and saved.depth == 2 and model.decoder.head[0].out_channels == 16 and not model.training

    images = tmp_path / "data" / "images"
    code = main(["predict", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(tmp_path / "p"),
                 "--scales", "0.75,1", "--no-flip", "--guided-radius", "1", "--crf", *args])
    assert code == 0
    printed = capsys.readouterr().out
    assert "scales [0.75, 1.0], flip False, guided filter radius 1.0 tokens, CRF True" in printed
    # no --config: the settings `wsss train segmenter` stored with the run
    assert f"settings: {tmp_path / 'run' / 'config.yaml'}, the run that made {checkpoint}" in printed
    written = sorted(p.stem for p in (tmp_path / "p").glob("*.png"))
    assert written == sorted(p.stem for p in images.iterdir())
    source = json.loads((tmp_path / "p" / "source.json").read_text())
    assert source["scales"] == [0.75, 1.0] and source["flip"] is False and source["crf"] is not None
    assert source["guided_filter"] == {"radius": 1.0, "eps": 1e-4}
    # other settings into the same folder would mix two kinds of predictions: refused
    assert main(["predict", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(tmp_path / "p"),
                 "--scales", "1", "--no-flip", "--guided-radius", "1", "--crf", *args]) == 2
    assert "other settings (scales: [0.75, 1.0] → [1.0]); finishing the folder would mix" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(tmp_path / "p"),
                 "--scales", "0.75,1", "--no-flip", "--guided-radius", "0", "--crf", *args]) == 2
    assert "other settings (guided_filter:" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main(["predict", "--checkpoint", str(checkpoint), "--images", str(images), "--out", str(tmp_path / "q"),
              "--scales", "1,-2"])
    classifier_like = tmp_path / "run" / "segmenter" / "last.pt"
    assert main(["predict", "--checkpoint", str(classifier_like), "--images", str(images),
                 "--out", str(tmp_path / "q")]) == 2
    assert "not a wsss segmenter checkpoint" in capsys.readouterr().err


def test_foreground_maps_are_the_thresholded_non_background_probability(segmenter, tmp_path):
    """write_foreground_maps: 255 where 1 − P(background) > threshold, at each image's size;
    a second call skips what is written."""
    from tests.test_segmenter import segmenter_config

    config = segmenter_config(tmp_path)
    dataset = open_dataset(config.data, config.data.val_split)
    predictor = Predictor(segmenter, scales=(1.0, 1.5), flip=True)
    counts = write_foreground_maps(predictor, dataset, tmp_path / "fg", threshold=0.6, progress=False)
    assert counts == {"ok": len(dataset.ids), "skipped": 0, "failed": 0}
    for image_id in dataset.ids:
        sample = dataset.load(image_id)
        expected = (1.0 - predictor([sample.image])[0, 0]).numpy() > 0.6
        written = np.asarray(Image.open(tmp_path / "fg" / f"{image_id}.png"))
        assert written.shape == sample.image.shape[:2] and set(np.unique(written)) <= {0, 255}
        assert np.array_equal(written == 255, expected)
    again = write_foreground_maps(predictor, dataset, tmp_path / "fg", progress=False)
    assert again["skipped"] == len(dataset.ids) and again["ok"] == 0


def test_predictions_and_foreground_maps_of_an_image_over_max_side_come_back_at_its_size(segmenter, tmp_path):
    """data.max_side: the segmenter sees the shrunk image (INTER_AREA); the PNG is its
    prediction brought back to the file's size by nearest neighbour."""
    import cv2

    from wsss.data.tensors import resize_image

    rng = np.random.default_rng(4)
    folder = tmp_path / "photos"
    folder.mkdir()
    image = random_image(rng, 90, 150)
    Image.fromarray(image).save(folder / "photo.png")
    Image.fromarray(random_image(rng, 30, 40)).save(folder / "small.png")
    images = ImageFolder(folder, [f"c{i}" for i in range(6)]).limit_size(60)
    predictor = Predictor(segmenter, flip=False)
    assert predict_dataset(predictor, images, tmp_path / "pred", progress=False)["ok"] == 2
    shrunk = resize_image(image, (36, 60))
    expected = cv2.resize(predictor([shrunk])[0].argmax(0).numpy().astype(np.uint8), (150, 90),
                          interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pred" / "photo.png")), expected)
    assert np.asarray(Image.open(tmp_path / "pred" / "small.png")).shape == (30, 40)
    write_foreground_maps(predictor, images, tmp_path / "fg", progress=False)
    foreground = ((1.0 - predictor([shrunk])[0, 0]) > 0.5).numpy().astype(np.uint8) * 255
    assert np.array_equal(np.asarray(Image.open(tmp_path / "fg" / "photo.png")),
                          cv2.resize(foreground, (150, 90), interpolation=cv2.INTER_NEAREST))


def test_foreground_masks_with_the_crf_snap_a_coarse_foreground_to_the_object_edges():
    """start_foreground_masks with a CRF: a blurred, shifted foreground probability around a square of
    its own colour comes back closer to the square than the thresholded probability; the
    threshold moves the CRF's decision point (a higher one keeps less foreground); without the
    CRF it is the plain threshold."""
    import cv2

    from wsss.config import CrfConfig
    from wsss.predict import start_foreground_masks

    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(90, 12, (64, 64, 3)), 0, 255).astype(np.uint8)
    truth = np.zeros((64, 64), bool)
    truth[16:44, 20:48] = True
    image[truth] = (200, 60, 40)
    coarse = np.zeros((64, 64), np.float32)
    coarse[12:40, 24:54] = 1.0  # the object seen at a coarse stride: shifted, too large
    foreground = cv2.GaussianBlur(coarse, (0, 0), 4) * 0.9 + 0.05
    probs = torch.from_numpy(np.stack([1 - foreground, foreground * 0.5, foreground * 0.5]))[None]

    def iou(mask):
        return (mask & truth).sum() / (mask | truth).sum()

    plain, = start_foreground_masks([image], probs, threshold=0.5)()
    assert np.array_equal(plain, foreground > 0.5)
    snapped, = start_foreground_masks([image], probs, threshold=0.5, crf=CrfConfig(workers=1))()
    assert iou(snapped) > iou(plain) + 0.1, (iou(snapped), iou(plain))
    strict, = start_foreground_masks([image], probs, threshold=0.95, crf=CrfConfig(workers=1))()
    assert strict.sum() < snapped.sum()


def test_predictions_and_foreground_maps_with_the_crf_overlapping_equal_those_made_one_batch_at_a_time(segmenter,
                                                                                                       tmp_path):
    """refine.crf.overlap: the pool refines a batch while the next one is predicted; the PNGs
    equal those of the pool waited for batch by batch and of the CRF in this process."""
    from wsss.config import CrfConfig

    config = segmenter_config(tmp_path)
    dataset = open_dataset(config.data, config.data.val_split)
    with torch.no_grad():  # sharper logits: the random head's near-uniform softmax gives one label everywhere
        segmenter.decoder.head[-1].weight.mul_(30.0)
    predictor = Predictor(segmenter, scales=(1.0,), flip=False)
    crfs = {"overlap": CrfConfig(enabled=True, workers=2, overlap=True),
            "waited": CrfConfig(enabled=True, workers=2, overlap=False),
            "in process": CrfConfig(enabled=True, workers=1), "no CRF": None}
    for name, crf in crfs.items():
        # (the random segmenter's foreground probability lies in 0.79..0.94: threshold inside it)
        for kind, walk in (("labels", predict_dataset), ("fg", partial(write_foreground_maps, threshold=0.85))):
            counts = walk(predictor, dataset, tmp_path / kind / name, crf=crf, batch_size=2, progress=False)
            assert counts == {"ok": len(dataset.ids), "skipped": 0, "failed": 0}
    for kind in ("labels", "fg"):
        moved = 0
        for image_id in dataset.ids:
            a, b, c, d = (np.asarray(Image.open(tmp_path / kind / name / f"{image_id}.png")) for name in crfs)
            assert np.array_equal(a, b) and np.array_equal(a, c), (kind, image_id)
            moved += int((a != d).sum())
        assert moved > 0, kind  # the CRF changed outputs, so the equality says something
