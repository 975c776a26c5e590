"""Size-aware batching (``wsss.data.batching``): on a mix of sizes in any order, batches are
full, each holds one size (or, for the pseudo-labels, one model input size), and every label
equals the one of the image labelled alone."""

import numpy as np
from PIL import Image

from wsss.data import FolderDataset
from wsss.data.batching import same_size_batches, size_grouped
from wsss.data.folder import write_folder_dataset_index
from wsss.data.label_png import read_label_png
from wsss.data.synth import SYNTH_CLASSES as CLASSES
from tests.conftest import draw_sample

SIZES = [(40, 48), (48, 40), (40, 48), (32, 56), (48, 40), (40, 48), (32, 56), (40, 48), (48, 40), (40, 48)]
# sizes near 40×48: at the tiny model's stride 8 each is seen as 40×48, as 224×150 and 224×152 are at 16
NEAR = [(41, 47), (39, 50), (42, 46), (41, 47), (38, 51)]


def mixed_sizes(root, broken=True, near=False):
    """A folder data set whose images interleave three sizes (and, with ``near``, five more
    images of sizes near 40×48); one EXIF-rotated photo stored 48×40 but shown 40 wide × 48
    high; and (when ``broken``) a file that is not an image."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    tags = {}
    for i, size in enumerate(SIZES + (NEAR if near else [])):
        image, _ = draw_sample(rng, size, [1 + i % 3])
        Image.fromarray(image).save(root / "images" / f"im{i:02d}.png")
        tags[f"im{i:02d}.png"] = [CLASSES[i % 3]]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 48 wide × 40 high, shown rotated: 40 wide × 48 high, i.e. H×W = 48×40
    image, _ = draw_sample(rng, (40, 48), [2])
    Image.fromarray(image).save(root / "images" / "phone.jpg", exif=exif.tobytes(), quality=100)
    tags["phone.jpg"] = [CLASSES[1]]
    if broken:
        (root / "images" / "broken.png").write_bytes(b"not an image")
        tags["broken.png"] = [CLASSES[0]]
    write_folder_dataset_index(root, CLASSES, tags)
    return FolderDataset(root)


def test_batches_are_full_and_of_one_size_whatever_the_order(tmp_path):
    dataset = mixed_sizes(tmp_path / "mixed")
    ids = [dataset.ids[k] for k in np.random.default_rng(1).permutation(len(dataset.ids))]  # sizes interleaved
    failures = []
    batches = list(same_size_batches(dataset, ids, 3, lambda i, reason: failures.append(i)))
    assert failures == ["broken"]
    sizes = {}
    for batch in batches:
        assert len({s.image.shape[:2] for s in batch}) == 1
        sizes.setdefault(batch[0].image.shape[:2], []).append(len(batch))
    # per size: full batches, then one partial at most (the EXIF photo counts as 48 high × 40 wide)
    expected = {(40, 48): 5, (48, 40): 4, (32, 56): 2}
    assert {size: sum(lengths) for size, lengths in sizes.items()} == expected
    for size, lengths in sizes.items():
        assert all(n == 3 for n in lengths[:-1]) and len(lengths) == -(-expected[size] // 3)
    # id order is kept within a size, and sizes come in the order of their first image
    order = size_grouped(dataset, ids)
    assert sorted(order) == sorted(ids)
    for size in expected:
        members = [i for i in order if i != "broken" and dataset.load(i, masks=False).image.shape[:2] == size]
        assert members == [i for i in ids if i in members]
    assert len(batches) == 2 + 2 + 1  # cutting at every change of size instead gave about one image a batch


def test_labels_in_full_batches_equal_the_labels_of_images_alone(tmp_path):
    from tests.runs import classifier_of
    from tests.test_classifier import tiny_config
    from wsss.cli import main

    dataset = mixed_sizes(tmp_path / "mixed", broken=False, near=True)
    checkpoint = classifier_of(tiny_config(tmp_path, "train.classifier.epochs=1"), progress=False)
    outs = {}
    for batch in (1, 4):
        outs[batch] = tmp_path / f"labels_b{batch}"
        assert main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(dataset.root), "--out",
                     str(outs[batch]), "--set", f"cam.batch_size={batch}", "--set", "refine.saliency.source=none",
                     "--set", "refine.crf.workers=1"]) == 0
    for image_id in dataset.ids:
        alone, batched = (read_label_png(outs[b] / f"{image_id}.png") for b in (1, 4))
        assert alone.shape == dataset.load(image_id, masks=False).image.shape[:2]  # each at its own size
        assert np.array_equal(alone, batched), image_id


def test_pseudo_label_batches_share_a_model_input_size(tmp_path):
    """Grouped by the model's input size, the 16 images of 7 sizes make 5 batches where one exact
    size a batch made 8; every batch is one input size at stride 8."""
    from wsss.models.vit_geometry import model_input_size

    dataset = mixed_sizes(tmp_path / "mixed", broken=False, near=True)
    exact = list(same_size_batches(dataset, dataset.ids, 4, lambda i, reason: None))
    keyed = list(same_size_batches(dataset, dataset.ids, 4, lambda i, reason: None,
                                   size_key=lambda size: model_input_size(size, 8)))
    assert sum(map(len, keyed)) == sum(map(len, exact)) == 16
    assert len({s.image.shape[:2] for batch in keyed for s in batch}) == 7
    assert all(len({model_input_size(s.image.shape[:2], 8) for s in batch}) == 1 for batch in keyed)
    assert [len(batch) for batch in keyed] == [4, 4, 2, 4, 2]  # 40×48 (10 images), 48×40 (4), 32×56 (2)
    assert len(exact) == 8
