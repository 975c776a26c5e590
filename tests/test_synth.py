"""The synthetic demo data set: determinism, exact masks, tags, clutter, and that it is hard."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from wsss.config import SynthConfig
from wsss.data.folder import FolderDataset
from wsss.data.label_png import read_label_png
from wsss.data.synth import SYNTH_CLASSES, SynthKnobs, generate_synth_dataset, render_synth_image
from wsss.eval.confusion import ConfusionMatrix
from wsss.eval.trivial_baseline import (
    background_distance,
    trivial_baseline_label,
)

NUM_IMAGES = 150


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return generate_synth_dataset(tmp_path_factory.mktemp("synth") / "set", SynthConfig(num_images=NUM_IMAGES),
                                  progress=False)


@pytest.fixture(scope="module")
def dataset(synth_root):
    return FolderDataset(synth_root)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_other_seeds_differ(tmp_path):
    first = _files(generate_synth_dataset(tmp_path / "a", SynthConfig(num_images=12, seed=3), progress=False))
    second = _files(generate_synth_dataset(tmp_path / "b", SynthConfig(num_images=12, seed=3), progress=False))
    other = _files(generate_synth_dataset(tmp_path / "c", SynthConfig(num_images=12, seed=4), progress=False))
    assert first == second
    assert len(first) == 12 * 2 + 5  # images, masks, classes.txt, tags.csv, 2 splits, synth.json
    images = [name for name in first if name.startswith("images/")]
    assert all(first[name] != other[name] for name in images)


def test_existing_set_is_reused_and_a_foreign_folder_refused(tmp_path):
    small, other = SynthConfig(num_images=10, image_size=48), SynthConfig(num_images=11, image_size=48)
    root = generate_synth_dataset(tmp_path / "set", small, progress=False)
    stamp = (root / "tags.csv").stat().st_mtime_ns
    assert generate_synth_dataset(root, small, progress=False) == root
    assert (root / "tags.csv").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="choose another data.root or delete the folder"):
        generate_synth_dataset(root, other, progress=False)
    generate_synth_dataset(root, other, progress=False, overwrite=True)
    assert len(FolderDataset(root)) == 11


def test_folder_dataset_reads_it_back_with_splits(synth_root, dataset):
    assert dataset.classes == SYNTH_CLASSES
    assert len(dataset) == NUM_IMAGES
    train, val = FolderDataset(synth_root, "train"), FolderDataset(synth_root, "val")
    assert len(val) == round(0.2 * NUM_IMAGES)
    assert set(train.ids).isdisjoint(val.ids)
    assert sorted(train.ids + val.ids) == sorted(dataset.ids)
    sample = dataset[0]
    assert sample.id == "synth_00000"
    assert sample.image.shape == (128, 128, 3) and sample.image.dtype == np.uint8
    assert sample.tags.shape == (len(SYNTH_CLASSES),)


def test_masks_match_images_and_tags(dataset):
    class_counts = np.zeros(len(SYNTH_CLASSES) + 1, dtype=np.int64)
    multi_class = 0
    for sample in dataset:
        assert sample.mask.shape == sample.image.shape[:2]
        labels = np.unique(sample.mask)
        assert labels.max() <= len(SYNTH_CLASSES)
        assert 0 in labels
        present = labels[labels > 0]
        assert 1 <= len(present) <= 3
        # tags.csv names exactly the classes visible in the mask
        np.testing.assert_array_equal(np.flatnonzero(sample.tags) + 1, present)
        class_counts[present] += 1
        multi_class += len(present) >= 2
        # every object is big enough to see: at least 20 pixels per visible class
        assert np.bincount(sample.mask.ravel())[present].min() >= 20
    assert (class_counts[1:] >= 0.08 * len(dataset)).all(), class_counts
    assert 0.3 <= multi_class / len(dataset) <= 0.7


def test_masks_are_palette_pngs_of_class_indices(synth_root):
    mask = read_label_png(synth_root / "masks" / "synth_00000.png")
    assert mask.dtype == np.uint8 and mask.shape == (128, 128)


def test_objects_differ_in_texture_from_their_surroundings(dataset):
    # Inside every object the two texture tones alternate: its pixels spread widely in colour.
    spreads = []
    for sample in list(dataset)[:40]:
        for label in np.unique(sample.mask)[1:]:
            inside = cv2.erode((sample.mask == label).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if inside.sum() >= 30:
                spreads.append(np.ptp(sample.image[inside].astype(np.float32) @ [0.299, 0.587, 0.114]))
    assert np.median(spreads) > 60


def _fine_background_structure(image: np.ndarray, mask: np.ndarray) -> int:
    """Background pixels ≥ 3 px from any object that differ by > 40 from their 7×7 median:
    thin lines, arcs and small shapes. Smooth gradients, blobs and noise never reach it."""
    fine = np.abs(image.astype(np.int16) - cv2.medianBlur(image, 7).astype(np.int16)).max(axis=2)
    far = cv2.erode((mask == 0).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    return int(((fine > 40) & far).sum())


def test_fine_structure_check_is_blind_to_smooth_backgrounds():
    y, x = np.mgrid[0:128, 0:128]
    smooth = np.stack([x * 2, y * 2, (x + y)], axis=2).clip(0, 255).astype(np.uint8)
    noise = np.random.default_rng(0).normal(0, 6, smooth.shape)
    smooth = (smooth + noise).clip(0, 255).astype(np.uint8)
    assert _fine_background_structure(smooth, np.zeros((128, 128), np.uint8)) == 0


def test_backgrounds_are_cluttered_with_distractors(dataset):
    samples = list(dataset)
    with_distractors = [_fine_background_structure(s.image, s.mask) >= 20 for s in samples]
    assert np.mean(with_distractors) > 0.8
    # and the background is far from uniform: many background pixels differ from the border colour
    far_from_border = [np.mean(background_distance(s.image)[s.mask == 0] > 40) for s in samples]
    assert np.mean(far_from_border) > 0.3


def test_trivial_baseline_label_rule():
    image = np.zeros((20, 20, 3), np.uint8)
    image[5:10, 5:10] = 200
    tags = np.array([0, 1, 1, 0], np.float32)
    label = trivial_baseline_label(image, tags, threshold=50)
    expected = np.zeros((20, 20), np.uint8)
    expected[5:10, 5:10] = 2  # the lowest-index tag (index 1) + 1
    np.testing.assert_array_equal(label, expected)
    assert not trivial_baseline_label(image, np.zeros(4)).any()


def test_trivial_baseline_is_far_below_a_real_method(dataset):
    confusion = ConfusionMatrix(len(SYNTH_CLASSES) + 1)
    for sample in dataset:
        confusion.update(trivial_baseline_label(sample.image, sample.tags), sample.mask)
    assert confusion.num_classes == len(SYNTH_CLASSES) + 1
    assert 0.1 < confusion.miou < 0.4
    assert np.nanmax(confusion.iou[1:]) < 0.5


def _hue_histogram(image: np.ndarray) -> np.ndarray:
    """36-bin hue histogram weighted by saturation, normalised: colour and nothing else."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hist = np.bincount(hsv[..., 0].ravel().astype(int) * 36 // 180, weights=hsv[..., 1].ravel() / 255.0, minlength=36)
    return hist / hist.sum()


@pytest.mark.parametrize("colour_cue", [True, False])
def test_colour_alone_solves_the_demo_but_not_the_colour_free_variant(colour_cue):
    """A logistic regression on hue histograms (one per class) reads the demo's classes off
    their colours; with ``colour_cue=False`` it stays at chance (the classes' prevalence)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    features, present = [], []
    for index in range(400):
        image, mask = render_synth_image(np.random.default_rng([0, index]), 64, colour_cue=colour_cue)
        features.append(_hue_histogram(image))
        present.append([(mask == label).any() for label in range(1, len(SYNTH_CLASSES) + 1)])
    X, Y = np.array(features), np.array(present, dtype=int)
    n = 320
    aps = [average_precision_score(Y[n:, c], LogisticRegression(max_iter=2000, C=10).fit(X[:n], Y[:n, c])
                                   .predict_proba(X[n:])[:, 1]) for c in range(Y.shape[1])]
    chance = Y[n:].mean()
    if colour_cue:
        assert np.mean(aps) > chance + 0.35, (np.mean(aps), chance)  # measured: 0.77 against 0.29
    else:
        assert np.mean(aps) < chance + 0.08, (np.mean(aps), chance)  # measured: 0.27 against 0.25


def test_colour_free_variant_is_its_own_data_set(tmp_path):
    """data.synth.colour_cue=false writes another data set (same classes and layout), and a
    folder holding one variant is not taken for the other."""
    colour_free = SynthConfig(num_images=10, image_size=48, colour_cue=False)
    plain = generate_synth_dataset(tmp_path / "a", SynthConfig(num_images=10, image_size=48), progress=False)
    free = generate_synth_dataset(tmp_path / "b", colour_free, progress=False)
    assert FolderDataset(free).classes == FolderDataset(plain).classes == SYNTH_CLASSES
    assert (plain / "images" / "synth_00000.jpg").read_bytes() != (free / "images" / "synth_00000.jpg").read_bytes()
    assert json.loads((free / "synth.json").read_text())["colour_cue"] is False
    assert "colour_cue" not in json.loads((plain / "synth.json").read_text())  # older demo folders still match
    with pytest.raises(ValueError, match="choose another data.root or delete the folder"):
        generate_synth_dataset(tmp_path / "a", colour_free, progress=False)


def test_object_size_and_clutter_knobs():
    """data.synth.object_size and .distractors change the scenes; their defaults draw exactly the
    demo's images (the same random numbers)."""
    from wsss.config import load_config
    from wsss.data.synth import DISTRACTORS, SIZE_RANGE

    def foreground(**knobs) -> float:
        return float(np.mean([(render_synth_image(np.random.default_rng([0, i]), 64, **knobs)[1] > 0).mean()
                              for i in range(30)]))

    default = render_synth_image(np.random.default_rng([0, 3]), 64)
    same = render_synth_image(np.random.default_rng([0, 3]), 64, object_size=SIZE_RANGE, distractors=DISTRACTORS)
    assert all(np.array_equal(a, b) for a, b in zip(default, same))
    assert foreground(object_size=(0.1, 0.2)) < 0.5 * foreground()
    plain = render_synth_image(np.random.default_rng([0, 3]), 64, distractors=(0, 0))[0]
    assert not np.array_equal(plain, default[0])
    with pytest.raises(ValueError, match="object_size must be"):
        load_config(None, ["data.synth.object_size=[0.5, 0.2]"])
    with pytest.raises(ValueError, match="distractors must be"):
        load_config(None, ["data.synth.distractors=[4, 2]"])


def test_context_class_gets_one_surroundings_and_nothing_else_changes():
    """data.synth.context: the images holding that class get the fixed wave background (their
    masks unchanged), the others are byte-identical to the default drawing."""
    with_disk = 0
    for index in range(12):
        image, mask = render_synth_image(np.random.default_rng([0, index]), 64)
        context_image, context_mask = render_synth_image(np.random.default_rng([0, index]), 64, context="disk")
        assert np.array_equal(mask, context_mask)
        has_disk = SYNTH_CLASSES.index("disk") + 1 in mask
        with_disk += has_disk
        assert np.array_equal(image, context_image) != has_disk
        if has_disk:  # the background is the blue wave pattern: blue above red everywhere on it
            background = context_image[mask == 0].astype(int)
            assert (background[:, 2] > background[:, 0]).mean() > 0.95
    assert 0 < with_disk < 12


NEW_KNOBS_AT_DEFAULT = dict(classes=None, texture="class", objects=(1, 3), aspect=None, background="soft")


def test_new_knobs_at_their_defaults_draw_the_demo_byte_for_byte(tmp_path):
    """data.synth.classes/texture/objects/aspect/background at their defaults draw no random
    number of their own: the same images as before they existed, and a synth.json without them."""
    for index in range(6):
        default = render_synth_image(np.random.default_rng([0, index]), 64)
        explicit = render_synth_image(np.random.default_rng([0, index]), 64, True, (0.2, 0.6), (3, 8), None,
                                      knobs=SynthKnobs(**NEW_KNOBS_AT_DEFAULT))
        demo_six = render_synth_image(np.random.default_rng([0, index]), 64, knobs=SynthKnobs(classes=SYNTH_CLASSES))
        assert default[0].shape == (64, 64, 3)
        for other in (explicit, demo_six):
            assert np.array_equal(default[0], other[0]) and np.array_equal(default[1], other[1])
    knobs = SynthConfig(num_images=10, image_size=48, classes=list(SYNTH_CLASSES), texture="class", objects=[1, 3],
                        aspect=None, background="soft")
    plain = _files(generate_synth_dataset(tmp_path / "a", SynthConfig(num_images=10, image_size=48), progress=False))
    assert _files(generate_synth_dataset(tmp_path / "b", knobs, progress=False)) == plain
    assert not {"classes", "texture", "objects", "aspect", "background"} & json.loads(plain["synth.json"]).keys()


def test_classes_picks_a_subset_with_the_new_shapes(tmp_path):
    """data.synth.classes: labels 1..C follow the list's order in masks, tags and classes.txt,
    and the three shapes beyond the demo's six are drawn."""
    from wsss.config import AVAILABLE_SHAPES
    from wsss.data.synth import CLASS_HUES, class_hues

    classes = ["hexagon", "crescent", "arrow", "star", "square"]
    assert list(AVAILABLE_SHAPES) == SYNTH_CLASSES + ["hexagon", "crescent", "arrow"]
    assert CLASS_HUES == tuple(i / 6 for i in range(6)) and class_hues(5) == (0.0, 0.2, 0.4, 0.6, 0.8)
    root = generate_synth_dataset(tmp_path / "set", SynthConfig(num_images=24, image_size=64, classes=classes),
                                  progress=False)
    assert (root / "classes.txt").read_text().split() == classes
    assert json.loads((root / "synth.json").read_text())["classes"] == classes
    dataset = FolderDataset(root)
    assert dataset.classes == classes and len(dataset) == 24
    seen = np.zeros(len(classes) + 1, dtype=np.int64)
    for sample in dataset:
        labels = np.unique(sample.mask)
        assert labels.max() <= len(classes)
        present = labels[labels > 0]
        np.testing.assert_array_equal(np.flatnonzero(sample.tags) + 1, present)
        seen[present] += 1
    assert (seen[1:4] > 0).all(), seen  # hexagon, crescent, arrow
    with pytest.raises(ValueError, match="choose another data.root"):  # another class list is another data set
        generate_synth_dataset(root, SynthConfig(num_images=24, image_size=64, classes=classes[::-1]), progress=False)


def test_new_shapes_have_their_own_outlines_and_textures():
    """hexagon, crescent and arrow differ from each other and from the demo's shapes in outline
    (same centre, extent, angle) and in texture (same pixels, same random numbers)."""
    from wsss.config import AVAILABLE_SHAPES
    from wsss.data.synth import _grid, _shape_mask, _texture

    centre, outlines, patterns = np.array([40.0, 40.0]), {}, {}
    x, y = (a.ravel() for a in _grid(80))
    for name in AVAILABLE_SHAPES:
        outlines[name] = _shape_mask(name, 80, centre, 50.0, 0.3)
        patterns[name] = _texture(name, np.random.default_rng(0), x, y, centre, 50.0)
        assert 0.2 < patterns[name].mean() < 0.9, name  # two tones, both visible
    disk = outlines["disk"].sum()
    assert 0.25 * disk < outlines["crescent"].sum() < 0.6 * disk  # the bite takes a good part of the disk
    assert not outlines["crescent"][40, 40] and outlines["hexagon"][40, 40] and outlines["arrow"][40, 40]
    for new in ("hexagon", "crescent", "arrow"):
        for other in AVAILABLE_SHAPES:
            if other != new:
                assert (outlines[new] != outlines[other]).mean() > 0.02, (new, other)
                assert (patterns[new] != patterns[other]).mean() > 0.15, (new, other)
    with pytest.raises(ValueError, match="unknown synthetic class"):
        _shape_mask("pentagon", 80, centre, 50.0, 0.3)


def test_aspect_draws_images_of_several_sizes():
    """data.synth.aspect: each image its own width/height ratio; the longer side is image_size
    and the mask has the image's size."""
    shapes = set()
    for index in range(12):
        image, mask = render_synth_image(np.random.default_rng([0, index]), 64, knobs=SynthKnobs(aspect=(0.6, 1.6)))
        assert image.shape[:2] == mask.shape and image.shape[2] == 3
        assert max(mask.shape) == 64 and min(mask.shape) >= round(64 / 1.6)
        assert mask.max() <= len(SYNTH_CLASSES)
        shapes.add(mask.shape)
    non_square = [shape for shape in shapes if shape[0] != shape[1]]
    assert len(non_square) >= 4, shapes
    assert any(h > w for h, w in non_square) and any(h < w for h, w in non_square)  # tall and wide ones


def test_aspect_sets_are_written_and_read_back(tmp_path):
    root = generate_synth_dataset(tmp_path / "set", SynthConfig(num_images=10, image_size=48, aspect=[0.5, 2.0]),
                                  progress=False)
    assert json.loads((root / "synth.json").read_text())["aspect"] == [0.5, 2.0]
    sizes = set()
    for sample in FolderDataset(root):
        assert sample.mask.shape == sample.image.shape[:2] and max(sample.mask.shape) == 48
        assert min(sample.mask.shape) >= 32  # the shorter side is never below 32 pixels
        sizes.add(sample.mask.shape)
    assert len(sizes) >= 3


def _interior_luma_spread(image: np.ndarray, mask: np.ndarray) -> list[float]:
    """Standard deviation of luma inside each class region of ``mask`` (eroded: no edges)."""
    spreads = []
    for label in np.unique(mask)[1:]:
        inside = cv2.erode((mask == label).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if inside.sum() >= 30:
            spreads.append(float(np.std(image[inside].astype(np.float32) @ [0.299, 0.587, 0.114])))
    return spreads


def test_texture_knob_keeps_the_scene_and_changes_the_fill():
    """texture 'none' fills objects with one tone, 'any' gives them other textures; both keep the
    default scene (the same masks)."""
    flat, textured = [], []
    changed = 0
    for index in range(20):
        image, mask = render_synth_image(np.random.default_rng([0, index]), 64)
        for texture in ("none", "any"):
            other, other_mask = render_synth_image(np.random.default_rng([0, index]), 64,
                                                  knobs=SynthKnobs(texture=texture))
            assert np.array_equal(mask, other_mask)
            assert not np.array_equal(image, other)
            changed += texture == "any" and not np.array_equal(image[mask > 0], other[mask > 0])
            if texture == "none":
                flat += _interior_luma_spread(other, mask)
        textured += _interior_luma_spread(image, mask)
    assert np.median(flat) < 8 < 20 < np.median(textured), (np.median(flat), np.median(textured))
    assert changed == 20


def test_background_knob_busy_and_plain():
    """background 'busy' adds textured classless patches, 'plain' is one flat colour; neither
    changes the objects (same masks, all labels valid)."""
    busy_structure, soft_structure, plain_spread = [], [], []
    for index in range(16):
        image, mask = render_synth_image(np.random.default_rng([0, index]), 64)
        busy, busy_mask = render_synth_image(np.random.default_rng([0, index]), 64,
                                             knobs=SynthKnobs(background="busy"))
        plain, plain_mask = render_synth_image(np.random.default_rng([0, index]), 64,
                                               knobs=SynthKnobs(background="plain"))
        assert np.array_equal(mask, busy_mask) and np.array_equal(mask, plain_mask)
        assert busy_mask.max() <= len(SYNTH_CLASSES)
        assert not np.array_equal(image, busy) and not np.array_equal(image, plain)
        busy_structure.append(_fine_background_structure(busy, mask))
        soft_structure.append(_fine_background_structure(image, mask))
        # without distractors the plain background is one colour under the mild noise
        bare, bare_mask = render_synth_image(np.random.default_rng([0, index]), 64, distractors=(0, 0),
                                             knobs=SynthKnobs(background="plain"))
        far = cv2.erode((bare_mask == 0).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        plain_spread.append(float(bare[far].astype(np.float32).std(axis=0).max()))
    assert np.mean(busy_structure) > 2 * np.mean(soft_structure), (np.mean(busy_structure), np.mean(soft_structure))
    assert max(plain_spread) < 8, plain_spread


def test_objects_knob_sets_how_many_objects():
    def classes_seen(knobs: SynthKnobs) -> list[int]:
        return [len(np.unique(render_synth_image(np.random.default_rng([0, i]), 64, knobs=knobs)[1])) - 1
                for i in range(20)]

    assert set(classes_seen(SynthKnobs(objects=(1, 1)))) == {1}
    many, default = classes_seen(SynthKnobs(objects=[5, 6])), classes_seen(SynthKnobs())
    assert np.mean(many) > np.mean(default) + 1, (np.mean(many), np.mean(default))


@pytest.mark.parametrize("knobs, message", [
    (dict(classes=["disk", "blob"]), "classes must be"),
    (dict(classes=["disk"]), "classes must be"),
    (dict(texture="stripes"), "texture must be"),
    (dict(background="noisy"), "background must be"),
    (dict(objects=(0, 2)), "objects must be"),
    (dict(aspect=(2.0, 1.0)), "aspect must be"),
])
def test_knobs_out_of_range_raise(knobs, message):
    with pytest.raises(ValueError, match=message):
        SynthKnobs(**knobs)


def test_context_must_be_one_of_the_classes():
    with pytest.raises(ValueError, match="context must be one of the classes"):
        render_synth_image(np.random.default_rng(0), 48, context="disk", knobs=SynthKnobs(classes=["star", "arrow"]))
    image, mask = render_synth_image(np.random.default_rng([0, 1]), 48, context="arrow",
                                     knobs=SynthKnobs(classes=["star", "arrow"], objects=(3, 3)))
    assert 2 in mask  # an arrow (label 2 of [star, arrow]) among the three objects
    background = image[mask == 0].astype(int)  # so the water pattern behind it: blue above red
    assert (background[:, 2] > background[:, 0]).mean() > 0.95


@pytest.mark.parametrize("override, key, message", [
    ("data.synth.classes=[disk, pentagon]", "data.synth.classes", "unknown shape"),
    ("data.synth.classes=[hexagon]", "data.synth.classes", "at least 2"),
    ("data.synth.classes=[disk, ring, disk]", "data.synth.classes", "must not repeat"),
    ("data.synth.objects=[0, 2]", "data.synth.objects", "objects must be"),
    ("data.synth.objects=[3, 1]", "data.synth.objects", "objects must be"),
    ("data.synth.aspect=[0, 2]", "data.synth.aspect", "aspect must be"),
    ("data.synth.aspect=[2, 1]", "data.synth.aspect", "aspect must be"),
    ("data.synth.texture=stripes", "data.synth.texture", "class"),
    ("data.synth.background=noisy", "data.synth.background", "busy"),
    ("data.synth.context=hexagon", "context", "classes"),  # hexagon is not one of the demo's six
])
def test_synth_knob_validation(override, key, message):
    from wsss.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message) as error:
        load_config(None, [override])
    assert key in str(error.value)


def test_valid_new_knobs_load():
    from wsss.config import load_config

    synth = load_config(None, ["data.synth.classes=[arrow, hexagon]", "data.synth.context=arrow",
                               "data.synth.aspect=[0.5, 1.5]", "data.synth.objects=[2, 5]",
                               "data.synth.texture=none", "data.synth.background=busy"]).data.synth
    assert synth.classes == ["arrow", "hexagon"] and synth.aspect == [0.5, 1.5] and synth.objects == [2, 5]
    assert (synth.texture, synth.background, synth.context) == ("none", "busy", "arrow")
