import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.config import load_config
from wsss.data import DatasetError, FolderDataset, VocDataset, detect_format, open_dataset
from wsss.eval.check import check_dataset
from wsss.data.folder import read_tags_csv
from wsss.data.images import ImageNotes, ImageReadError, read_rgb
from wsss.data.label_png import colorize, read_label_png, voc_palette, write_label_png


def test_palette_matches_voc_colours():
    palette = voc_palette()
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]  # aeroplane
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[255].tolist() == [224, 224, 192]  # ignore


def test_label_png_round_trip(tmp_path):
    label = np.random.default_rng(0).integers(0, 21, size=(17, 23)).astype(np.uint8)
    label[0] = 255
    path = tmp_path / "a" / "x.png"
    write_label_png(path, label)
    assert np.array_equal(read_label_png(path), label)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image.convert("RGB")), colorize(label))
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.png"]  # no temporary left over
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png.*mode 'RGB'"):
        read_label_png(tmp_path / "rgb.png")


def test_folder_dataset_reads_samples(folder_dataset):
    dataset = FolderDataset(folder_dataset)
    assert dataset.classes == ["disk", "square", "bar"] and len(dataset) == 6
    sample = dataset[4]
    assert sample.id == "img4"
    assert sample.image.shape == (40, 48, 3) and sample.image.dtype == np.uint8
    assert sample.tags.tolist() == [0.0, 1.0, 1.0]
    assert set(np.unique(sample.mask)) == {0, 2, 3}
    assert FolderDataset(folder_dataset, split="val").ids == ["img4", "img5"]
    with pytest.raises(DatasetError, match="split 'test' not found; available: \\['train', 'val'\\]"):
        FolderDataset(folder_dataset, split="test")


def test_voc_dataset_tags_from_xml_and_masks(voc_dataset):
    dataset = VocDataset(voc_dataset, split="train")
    assert len(dataset) == 14 and len(dataset.classes) == 20
    with_xml, without_xml = dataset.load("2007_000000"), dataset.load("2007_000001")
    assert np.flatnonzero(with_xml.tags).tolist() == [0, 5]  # aeroplane + bus from XML
    assert np.flatnonzero(without_xml.tags).tolist() == [1]  # bicycle from the mask
    assert with_xml.mask[0].tolist() == [255] * 64
    assert len(VocDataset(voc_dataset, split=None)) == 20
    assert detect_format(voc_dataset) == "voc"


def test_open_dataset_generates_the_demo_set(tmp_path):
    config = load_config(None, [f"data.root={tmp_path / 'demo'}", "data.synth.num_images=20", "data.synth.image_size=64"])
    train = open_dataset(config.data, "train")
    val = open_dataset(config.data, "val")
    assert len(train) + len(val) == 20 and not set(train.ids) & set(val.ids)
    assert train[0].mask is not None and train[0].image.shape == (64, 64, 3)


def test_image_conversions_are_reported(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(np.full((5, 6), 128, np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.full((5, 6), 65535, np.uint16)).save(tmp_path / "deep.png")
    notes = ImageNotes()
    out = read_rgb(tmp_path / "alpha.png", notes)
    assert out[0, 0].tolist() == [0, 0, 0] and out[1, 1].tolist() == [200, 0, 0]
    assert notes.conversions == ["alpha channel composited on black"]
    assert read_rgb(tmp_path / "gray.png").tolist() == np.full((5, 6, 3), 128).tolist()
    notes = ImageNotes()
    assert read_rgb(tmp_path / "deep.png", notes).max() == 255 and "16-bit" in notes.conversions[0]


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[:600]


def test_corrupt_jpeg_raises_naming_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(_truncated_jpeg())
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_rgb(tmp_path / "bad.jpg")


@pytest.fixture
def bad_folder(folder_dataset: Path) -> Path:
    """The valid folder data set with each bad input of the issue planted in it."""
    images = folder_dataset / "images"
    (images / "img0.png").unlink()
    (images / "img0.jpg").write_bytes(_truncated_jpeg())  # corrupt JPEG
    rgba = np.dstack([np.asarray(Image.open(images / "img1.png")), np.full((40, 48), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(images / "img1.png")  # alpha channel
    Image.open(images / "img2.png").convert("L").save(images / "img2.png")  # grayscale
    Image.fromarray(np.full((40, 48), 30000, np.uint16)).save(images / "img3.png")  # 16-bit
    (folder_dataset / "masks" / "img5.png").unlink()  # missing mask
    write_label_png(folder_dataset / "masks" / "img4.png", np.zeros((10, 10), np.uint8))  # wrong size
    (folder_dataset / "tags.csv").write_text(
        "image,tags\n"
        "img0.jpg,disk\n"
        "img1.png,square\n"
        "img2.png,bar;unicorn\n"  # unknown tag
        "img3.png,\n"  # empty tags field
        "img4.png,disk;bar\n"
        "img5.png,square;disk\n"
    )
    return folder_dataset


def test_check_names_every_bad_input(bad_folder):
    report = check_dataset(FolderDataset(bad_folder), progress=False)
    errors = [str(p) for p in report.errors]
    warnings = [str(p) for p in report.warnings]

    def has(items, *parts):
        return any(all(part in item for part in parts) for item in items)

    assert has(errors, "img0.jpg", "unreadable or truncated")
    assert has(warnings, "img1.png", "alpha channel")
    assert has(warnings, "img2.png", "grayscale replicated")
    assert has(warnings, "img3.png", "16-bit")
    assert has(errors, "img2", "unknown class 'unicorn'")
    assert has(errors, "img3", "no tags")
    assert has(errors, "masks/img5.png", "mask file missing")
    assert has(errors, "masks/img4.png", "mask is 10×10 but the image is 48×40")
    assert not report.ok()


def test_check_cli_on_bad_folder_exits_nonzero(bad_folder, capsys):
    assert main(["data", "check", str(bad_folder), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "unknown class 'unicorn'" in out and "FAILED" in out and "tagged" in out


def test_check_cli_on_valid_folder_and_voc(folder_dataset, voc_dataset, capsys):
    assert main(["data", "check", str(folder_dataset), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "images: 6" in out and "trivial baseline" in out and out.rstrip().endswith("OK")
    assert main(["data", "check", str(voc_dataset), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "images: 20" in out and "aeroplane" in out and "tvmonitor" in out and out.rstrip().endswith("OK")


def test_check_reports_class_that_never_occurs(folder_dataset):
    (folder_dataset / "classes.txt").write_text("disk\nsquare\nbar\nhexagon\n")
    report = check_dataset(FolderDataset(folder_dataset), progress=False)
    assert [str(p) for p in report.errors] == ["ERROR   hexagon: class never occurs (no image is tagged with it)"]


def test_malformed_index_files(tmp_path):
    (tmp_path / "tags.csv").write_text("file,labels\na.png,x\n")
    with pytest.raises(DatasetError, match="header must have columns 'image' and 'tags'"):
        read_tags_csv(tmp_path / "tags.csv")
    with pytest.raises(DatasetError, match="classes file not found"):
        FolderDataset(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="unknown data set layout"):
        detect_format(tmp_path / "empty")


def test_tags_rows_with_commas_or_paths_outside_the_data_set_are_errors_naming_the_line(tmp_path):
    """``x.jpg,disk,triangle`` (tags split by ',' instead of ';') would keep only the first tag;
    ``../x.jpg`` or an absolute path would read a file outside images/: both are errors."""
    tags = tmp_path / "tags.csv"
    tags.write_text("image,tags\na.png,disk\nx.jpg,disk,triangle,star\n")
    with pytest.raises(DatasetError, match=r"tags.csv:3: 4 fields .*separate tags with ';' \(e.g. x.jpg,disk;triangle;star\)"):
        read_tags_csv(tags)
    tags.write_text('image,tags\n"x.jpg","disk;triangle"\n')
    assert read_tags_csv(tags) == {"x": ("x.jpg", ["disk", "triangle"])}
    for name in ("../../etc/passwd", "/etc/hostname", "sub/../../x.png"):
        tags.write_text(f"image,tags\na.png,disk\n{name},disk\n")
        with pytest.raises(DatasetError, match=r"tags.csv:3: image .* is outside the data set's images/ folder"):
            read_tags_csv(tags)
    tags.write_text("image,tags\nsub/a.png,disk\n")  # a sub-folder of images/ is fine
    assert read_tags_csv(tags) == {"a": ("sub/a.png", ["disk"])}


def test_voc_ids_that_name_paths_are_errors(voc_dataset):
    split = voc_dataset / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text(split.read_text() + "../../secret\n")
    with pytest.raises(DatasetError, match=r"image ids \['../../secret'\] .* are not plain file names"):
        VocDataset(voc_dataset, split="train")
