"""Saliency sources: folder maps (resize, threshold, missing, corrupt), the normalized cut on
hand-made keys (blob, two objects, connectivity), TokenCut on a tiny ViT, `wsss saliency`."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from wsss.cli import main
from wsss.config import load_config
from wsss.data import DatasetError, FolderDataset
from wsss.data.base import Sample
from wsss.data.images import ImageReadError
from wsss.models.vit_geometry import model_inputs
from wsss.refine.saliency import FolderSaliency, NoSaliency, TokenCutSaliency, saliency_backbone, saliency_source
from wsss.refine.tokencut import KeyCapture, grid_to_image, last_block_keys, normalized_cut
from wsss.writers.saliency_pngs import write_saliency_maps
from tests.runs import classifier_of
from tests.test_classifier import tiny_config

torch.set_num_threads(2)


# --- folder source -------------------------------------------------------------------------

@pytest.fixture
def with_saliency(folder_dataset):
    """The conftest folder data set (6 images, 40×48) with saliency maps of another size."""
    (folder_dataset / "saliency").mkdir()
    for i in range(5):  # img5 has no map
        gray = np.zeros((20, 24), dtype=np.uint8)
        gray[:, :12] = 255      # left half salient
        gray[:, 12:] = 100      # right half below the default 0.5 threshold
        Image.fromarray(gray).save(folder_dataset / "saliency" / f"img{i}.png")
    return folder_dataset


def _config(*overrides):
    return load_config(None, list(overrides)).refine.saliency


def test_folder_resizes_and_thresholds(with_saliency):
    dataset = FolderDataset(with_saliency)
    source = saliency_source(_config("refine.saliency.source=folder"), dataset=dataset)
    assert isinstance(source, FolderSaliency)
    samples = [dataset.load("img0"), dataset.load("img1")]
    assert samples[0].saliency.shape == (20, 24)  # loaded by the data set at its own size
    masks = source(samples)
    for mask in masks:
        assert mask.shape == (40, 48) and mask.dtype == torch.bool
        assert mask[:, :23].all() and not mask[:, 25:].any()
    # ids alone: read from the folder; an explicit size and a lower threshold
    low = saliency_source(_config("refine.saliency.source=folder", "refine.saliency.threshold=0.3"),
                          dataset=dataset)
    (mask,) = low(["img2"], size=(10, 12))
    assert mask.shape == (10, 12) and mask.all()
    # images on a device → masks there too; the size defaults to the sample's image
    (mask,) = source([samples[0]], torch.zeros(1, 3, 16, 16))
    assert mask.shape == (40, 48)


def test_folder_missing_and_corrupt(with_saliency):
    dataset = FolderDataset(with_saliency)
    strict = saliency_source(_config("refine.saliency.source=folder"), dataset=dataset)
    with pytest.raises(DatasetError, match=r"saliency[/\\]img5\.png: saliency map missing"):
        strict([dataset.load("img5")])
    lenient = saliency_source(_config("refine.saliency.source=folder", "refine.saliency.missing=none"),
                              dataset=dataset)
    masks = lenient([dataset.load("img5"), dataset.load("img0")])
    assert masks[0] is None and masks[1].shape == (40, 48)

    (with_saliency / "saliency" / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageReadError, match=r"img1\.png: cannot decode saliency map"):
        strict(["img1"], size=(40, 48))
    with pytest.raises(ImageReadError, match=r"img1\.png"):
        dataset.load("img1")  # the data set itself reports it the same way

    no_folder = FolderDataset(with_saliency, saliency_dir=with_saliency / "nowhere")
    with pytest.raises(DatasetError, match="no saliency folder"):
        FolderSaliency(no_folder)(["img0"], size=(4, 4))


def test_none_and_factory_errors():
    assert NoSaliency()(["a", "b"], size=(4, 4)) == [None, None]
    assert saliency_source(_config("refine.saliency.source=none"))(["a"], size=(2, 2)) == [None]
    with pytest.raises(ValueError, match="needs the ViT model"):
        saliency_source(_config())
    with pytest.raises(ValueError, match="needs the data set"):
        saliency_source(_config("refine.saliency.source=folder"))
    with pytest.raises(ValueError, match="self-training step"):
        saliency_source(_config("refine.saliency.source=segmenter"))


def test_self_training_config_reads_the_runs_maps_as_a_folder(tmp_path):
    """``source: segmenter`` → the folder source on RUN/self_training/saliency; other sources
    are left as they are; require=True says what to run when the maps are not there yet."""
    from wsss.steps.self_training_saliency import describe_saliency, saliency_config

    config = load_config(None, [f"run_dir={tmp_path / 'run'}", "refine.saliency.source=segmenter",
                                "refine.saliency.threshold=0.8"])
    with pytest.raises(FileNotFoundError, match="wsss flow run self-training"):
        saliency_config(config, require=True)
    (tmp_path / "run" / "self_training" / "saliency").mkdir(parents=True)
    folder = saliency_config(config, require=True)
    assert folder.refine.saliency.source == "folder" and folder.refine.saliency.threshold == 0.5
    assert folder.data.saliency_dir == tmp_path / "run" / "self_training" / "saliency"
    assert config.refine.saliency.source == "segmenter"  # the original is not edited
    assert "first-round segmenter" in describe_saliency(config)
    other = load_config(None, ["refine.saliency.source=none"])
    assert saliency_config(other, require=True) is other and describe_saliency(other) == "none"


def test_cli_with_segmenter_saliency_and_no_maps_says_what_to_run(tmp_path, folder_dataset, capsys):
    checkpoint = classifier_of(tiny_config(tmp_path), progress=False)
    code = main(["pseudo-label", "--checkpoint", str(checkpoint), "--dataset", str(folder_dataset),
                 "--out", str(tmp_path / "labels"), "--set", f"run_dir={tmp_path / 'elsewhere'}",
                 "--set", "refine.saliency.source=segmenter"])
    assert code == 2
    assert "wsss flow run self-training" in capsys.readouterr().err
    assert not (tmp_path / "labels").exists()


# --- the normalized cut on hand-made keys --------------------------------------------------

H = W = 8
D = 16
E = torch.eye(D)


def _keys(labels: torch.Tensor, centres: torch.Tensor, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """h×w integer labels → 1×P×D keys: centre of the label plus small noise."""
    g = torch.Generator().manual_seed(seed)
    return (centres[labels.flatten()] + noise * torch.randn(labels.numel(), D, generator=g))[None]


def test_cut_returns_the_blob():
    labels = torch.zeros(H, W, dtype=torch.long)
    labels[2:5, 3:6] = 1
    keys = _keys(labels, E[[1, 0]])
    assert torch.equal(normalized_cut(keys, (H, W))[0], labels == 1)
    # the sign of the features does not matter; extra repeats find nothing more
    assert torch.equal(normalized_cut(-keys, (H, W))[0], labels == 1)
    assert torch.equal(normalized_cut(keys, (H, W), objects=3)[0], labels == 1)
    # batched: several images at once, each its own blob
    other = torch.zeros(H, W, dtype=torch.long)
    other[5:8, 0:4] = 1
    both = torch.cat([keys, _keys(other, E[[1, 0]], seed=1)])
    assert torch.equal(normalized_cut(both, (H, W)), torch.stack([labels == 1, other == 1]))


def test_two_objects_need_two_cuts():
    labels = torch.zeros(H, W, dtype=torch.long)
    labels[1:4, 1:4] = 1
    labels[5:8, 4:8] = 2
    keys = _keys(labels, E[[1, 0, 2]])
    one = normalized_cut(keys, (H, W), objects=1)[0]
    assert torch.equal(one, labels == 1) or torch.equal(one, labels == 2)
    assert torch.equal(normalized_cut(keys, (H, W), objects=2)[0], labels > 0)


def test_disconnected_fragment_is_dropped():
    labels = torch.zeros(H, W, dtype=torch.long)
    labels[1:5, 1:5] = 1                  # the blob
    labels[6:8, 6:8] = 2                  # a fragment of the same cluster, not touching it
    labels[0, 7] = 3                      # one background patch the fragment is also similar to
    centres = torch.stack([E[1], E[0], torch.nn.functional.normalize(E[0] + 0.5 * E[2], dim=0),
                           torch.nn.functional.normalize(E[1] + 0.9 * E[2], dim=0)])
    keys = _keys(labels, centres, noise=0.0)
    # the fragment sits on the blob's side of the cut, but the cut keeps the seed's component
    assert torch.equal(normalized_cut(keys, (H, W), objects=1)[0], labels == 1)
    assert torch.equal(normalized_cut(keys, (H, W), objects=2)[0], (labels == 1) | (labels == 2))


def test_grid_to_image():
    grid = torch.zeros(1, 4, 4, dtype=torch.bool)
    grid[0, 1, 2] = True
    up = grid_to_image(grid, (32, 32))
    assert up.shape == (1, 32, 32) and up.dtype == torch.bool
    block = grid[0].repeat_interleave(8, 0).repeat_interleave(8, 1)
    # an isolated patch comes back as a diamond inside its pixels: full middle row and column
    assert not (up[0] & ~block).any() and up[0, 8:16, 19:21].all() and up[0, 11:13, 16:24].all()
    assert up[0].sum() == 40
    grid[0, 1] = True  # a stripe of patches: straight edges come back exactly
    assert torch.equal(grid_to_image(grid, (32, 32))[0],
                       grid[0].repeat_interleave(8, 0).repeat_interleave(8, 1))
    with pytest.raises(ValueError, match="grid 3×3"):
        normalized_cut(torch.zeros(1, 16, 4), (3, 3))


# --- TokenCut on a tiny random ViT ---------------------------------------------------------

@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, patch_size=8, depth=2,
                             num_classes=3, dynamic_img_size=True)


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_tokencut_on_a_vit(vit):
    images = torch.randn(3, 3, 64, 48)
    vit.train()
    source = TokenCutSaliency(vit, objects=2)
    masks = torch.stack(source(["a", "b", "c"], images, size=(50, 40)))
    assert masks.shape == (3, 50, 40) and masks.dtype == torch.bool
    assert _hooks(vit) == 0 and vit.training and all(m.training for m in vit.modules())
    assert torch.equal(masks, torch.stack(source(["a", "b", "c"], images, size=(50, 40))))  # deterministic
    for mask in masks:
        assert mask.any()

    keys, layout = last_block_keys(vit, images)
    assert keys.shape == (3, 8 * 6, 192) and layout.grid == (8, 6) and _hooks(vit) == 0
    # the keys are the ones attention uses: q·kᵀ from the block's own weights
    with torch.no_grad(), KeyCapture(vit) as capture:
        vit.eval()
        tokens = vit.patch_embed(images)
        tokens = vit.norm_pre(vit._pos_embed(tokens))
        tokens = vit.blocks[0](tokens)
        block = vit.blocks[1]
        x = block.norm1(tokens)
        B, N, _ = x.shape
        expected = block.attn.qkv(x).reshape(B, N, 3, -1)[:, :, 1]
        block(tokens)
        assert torch.allclose(capture.keys, expected, atol=1e-6)
    assert _hooks(vit) == 0
    with pytest.raises(RuntimeError, match="no keys recorded"):
        capture.keys

    listed = source(["a", "b", "c"], images)
    assert [m.shape for m in listed] == [(64, 48)] * 3
    keys, layout = last_block_keys(vit, images)  # the cut of the keys, at the input's size
    cut = grid_to_image(normalized_cut(keys, layout.grid, tau=0.2, eps=1e-5, objects=2), images.shape[-2:])
    assert torch.equal(torch.stack(listed), cut)
    with pytest.raises(ValueError, match="needs the model input"):
        source(["a"], size=(8, 8))
    # keys recorded around a forward the caller runs anyway (e.g. GETAM's) give the same masks
    vit.eval()
    with torch.no_grad(), KeyCapture(vit) as capture:
        vit(images)
        reused = source.from_keys(capture.keys, layout, [(64, 48)] * 3)
    assert all(torch.equal(a, b) for a, b in zip(reused, listed))


# --- `wsss saliency` -----------------------------------------------------------------------

def test_cli_writes_pngs_skips_and_reports_failures(tmp_path, capsys):
    config = tiny_config(tmp_path, "train.classifier.epochs=1")
    checkpoint = classifier_of(config, progress=False)
    data, out = tmp_path / "data", tmp_path / "saliency"
    args = ["saliency", "--checkpoint", str(checkpoint), "--dataset", str(data), "--split", "val",
            "--out", str(out), "--objects", "2"]
    assert main(args) == 0
    ids = (data / "splits" / "val.txt").read_text().split()
    for image_id in ids:
        with Image.open(out / f"{image_id}.png") as png:
            assert png.mode == "L" and png.size == (48, 48)
            assert set(np.unique(np.asarray(png))) <= {0, 255}
    assert not list(out.glob(".*"))  # no temporary files left

    # the written maps are a valid folder source for the data set
    dataset = FolderDataset(data, split="val", saliency_dir=out)
    masks = saliency_source(_config("refine.saliency.source=folder"), dataset=dataset)([dataset.load(ids[0])])
    assert masks[0].shape == (48, 48)

    (out / f"{ids[0]}.png").unlink()
    (out / f"{ids[1]}.png").unlink()
    FolderDataset(data).image_path(ids[1]).write_bytes(b"\xff\xd8 broken")
    assert main(args) == 1
    assert f"1 written, {len(ids) - 2} already there, 1 failed" in capsys.readouterr().out
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()][len(ids):]
    assert {x["id"]: x["status"] for x in lines} == {ids[0]: "ok", ids[1]: "failed"}
    assert (out / f"{ids[0]}.png").is_file() and not (out / f"{ids[1]}.png").exists()

    assert main(args[:-1] + ["0"]) == 2
    capsys.readouterr()
    assert main(args[:-1] + ["3"]) == 2  # TokenCut with other settings into the same folder
    assert "other settings (tokencut.objects: 2 → 3); finishing the folder would mix" in capsys.readouterr().err


def test_failing_batch_is_retried_image_by_image(tmp_path, vit, monkeypatch):
    from wsss.config import SynthConfig
    from wsss.data.synth import generate_synth_dataset

    data = generate_synth_dataset(tmp_path / "data", SynthConfig(num_images=12, image_size=64), progress=False)
    dataset = FolderDataset(data, split="val")
    source = TokenCutSaliency(vit)
    bad = dataset.ids[1]
    compute = source.compute

    def flaky(samples, images, sizes):
        if any(s.id == bad for s in samples):
            raise RuntimeError("linalg.eigh: failed to converge")
        return compute(samples, images, sizes)

    monkeypatch.setattr(source, "compute", flaky)
    counts = write_saliency_maps(source, dataset, tmp_path / "out", batch_size=8, progress=False)
    assert counts == {"ok": len(dataset) - 1, "skipped": 0, "failed": 1}
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [x["reason"] for x in lines if x["status"] == "failed"] == ["RuntimeError: linalg.eigh: failed to converge"]


# --- TokenCut on a backbone of its own (refine.saliency.backbone) ---------------------------

TINY_VIT = dict(name="vit_tiny_patch16_224", img_size=48, embed_dim=32, depth=2, num_heads=2)


def _samples(n=3, size=(72, 80)):
    """n random images of one size: 72×80 is a multiple of 8 but not of 16 (→ 64×80 at stride 16)."""
    rng = np.random.default_rng(0)
    return [Sample(f"s{i}", rng.integers(0, 256, (*size, 3), dtype=np.uint8), np.array([1, 0, 0], np.float32))
            for i in range(n)]


@pytest.fixture(scope="module")
def tiny_classifier():
    from wsss.config import ModelConfig
    from wsss.models.classifier import create_classifier

    torch.manual_seed(0)
    return create_classifier(ModelConfig(**TINY_VIT, patch_size=8), 3).eval()


def _dino_file(path, seed=1, head=False, **arch):
    """A tiny timm ViT (patch 16 unless ``arch`` says otherwise) saved as DINO's backbones are:
    a flat state dict in timm's keys without head.* (``head``: with its 5-class head, timm's
    layout). Returns the model."""
    shape = {key: value for key, value in {**TINY_VIT, "patch_size": 16, **arch}.items() if key != "name"}
    torch.manual_seed(seed)
    model = timm.create_model(TINY_VIT["name"], pretrained=False, num_classes=5, dynamic_img_size=True, **shape)
    torch.save({k: v for k, v in model.state_dict().items() if head or not k.startswith("head.")}, path)
    return model.eval()


def _backbone_settings(pretrained, **arch) -> list[str]:
    """--set overrides of a refine.saliency.backbone section: the tiny ViT at patch 16."""
    section = {**TINY_VIT, "patch_size": 16, **arch, "pretrained": pretrained}
    return [f"refine.saliency.backbone.{key}={'null' if value is None else value}" for key, value in section.items()]


def test_without_a_backbone_tokencut_cuts_the_classifiers_keys(tiny_classifier):
    """backbone unset (the default): the source is TokenCut on the classifier, masks as before."""
    samples = _samples()
    inputs = model_inputs(samples, 8)
    assert inputs.shape == (3, 3, 72, 80)
    assert _config().backbone is None
    source = saliency_source(_config(), model=tiny_classifier)
    assert source.model is tiny_classifier and source.name == "tokencut" and source.stride == 8
    masks = source(samples, inputs, size=(36, 40))
    expected = TokenCutSaliency(tiny_classifier)(samples, inputs, size=(36, 40))
    keys, layout = last_block_keys(tiny_classifier, inputs)
    cut = grid_to_image(normalized_cut(keys, layout.grid), (36, 40))
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(masks, expected, cut))


def test_backbone_of_another_stride_with_dino_weights(tmp_path, tiny_classifier):
    """Classifier patch 8, backbone patch 16: the classifier's 72×80 input is not for the
    backbone, which cuts the samples' images at 64×80 with the weights of the file."""
    from wsss.refine.chain import offline_labeler

    donor = _dino_file(tmp_path / "dino.pth")
    config = load_config(None, _backbone_settings(tmp_path / "dino.pth"))
    source = saliency_source(config.refine.saliency, model=tiny_classifier)
    assert source.name == "tokencut (dino backbone vit_tiny_patch16_224)" and source.stride == 16
    backbone = source.model
    assert backbone is not tiny_classifier and not backbone.training and backbone.num_classes == 0
    written = torch.load(tmp_path / "dino.pth")
    assert set(backbone.state_dict()) == set(written)
    assert all(torch.equal(value, written[key]) for key, value in backbone.state_dict().items())

    samples = _samples()
    masks = source(samples, model_inputs(samples, 8), size=(72, 80))  # the classifier's input, as the chain passes
    own = model_inputs(samples, 16)
    assert own.shape[-2:] == (64, 80)
    expected = TokenCutSaliency(donor)(samples, own, size=(72, 80))
    assert all(torch.equal(a, b) for a, b in zip(masks, expected))
    with pytest.raises(ValueError, match="72×80 are not multiples of the model's stride 16; pass the Sample"):
        source(["s0"], model_inputs(samples[:1], 8))  # ids: no images to resize
    # the offline chain (GETAM on the classifier) uses the backbone's masks
    labeler = offline_labeler(tiny_classifier, config.cam, config.refine)
    assert labeler.saliency.name == source.name
    assert all(torch.equal(a, b) for a, b in zip(labeler(samples).saliency, expected))

    # a timm file with a head of its own: the head is dropped (the backbone has none)
    _dino_file(tmp_path / "timm.pth", head=True)
    _, weights = saliency_backbone(config.refine.saliency.backbone.model_copy(
        update={"pretrained": tmp_path / "timm.pth"}))
    assert weights.layout == "timm" and any("dropped the file's head" in note for note in weights.notes)
    # no weights: random, and said so
    random = saliency_source(load_config(None, _backbone_settings(None)).refine.saliency)
    assert random.name == "tokencut (random backbone vit_tiny_patch16_224)"


def test_backbone_that_cannot_be_built_or_loaded_names_the_setting(tmp_path):
    from wsss.models.errors import PretrainedWeightsError

    _dino_file(tmp_path / "wide.pth", embed_dim=48)
    for pretrained, message in ((tmp_path / "wide.pth", r"refine\.saliency\.backbone\.pretrained: .*wide\.pth "
                                                        r"\(looks like: dino.*shape mismatches"),
                                (tmp_path / "absent.pth", r"refine\.saliency\.backbone\.pretrained: weights file "
                                                          r".*absent\.pth not found")):
        with pytest.raises(PretrainedWeightsError, match=message):
            saliency_source(load_config(None, _backbone_settings(pretrained)).refine.saliency)
    with pytest.raises(ValueError, match=r"refine\.saliency\.backbone\.name='vit_nope' is not a timm model"):
        saliency_source(load_config(None, _backbone_settings(None, name="vit_nope")).refine.saliency)
    with pytest.raises(ValueError, match=r"refine\.saliency\.backbone \(vit_tiny_patch16_224\): .*divisible"):
        saliency_source(load_config(None, _backbone_settings(None, embed_dim=30, num_heads=4)).refine.saliency)


def test_cli_cuts_the_backbones_keys_and_records_it(tmp_path, folder_dataset, capsys):
    """`wsss saliency` with a backbone in the YAML config: the classifier is not read (the
    checkpoint may not even exist), the backbone is recorded in OUT/source.json."""
    import yaml

    donor = _dino_file(tmp_path / "dino.pth")
    section = {**TINY_VIT, "patch_size": 16, "pretrained": str(tmp_path / "dino.pth")}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"refine": {"saliency": {"backbone": section}}}))
    out = tmp_path / "saliency"
    args = ["saliency", "--checkpoint", str(tmp_path / "unused" / "classifier.pt"), "--dataset", str(folder_dataset),
            "--split", "val", "--out", str(out), "--config", str(config)]
    assert main(args) == 0
    assert "tokencut (dino backbone vit_tiny_patch16_224) saliency in" in capsys.readouterr().out
    dataset = FolderDataset(folder_dataset, split="val")
    for image_id in dataset.ids:  # 40×48 images: cut at 32×48 (stride 16)
        sample = dataset.load(image_id)
        (expected,) = TokenCutSaliency(donor)([sample], model_inputs([sample], 16))
        with Image.open(out / f"{image_id}.png") as png:
            assert np.array_equal(np.asarray(png) > 0, expected.numpy())
    record = json.loads((out / "source.json").read_text())
    assert record["checkpoint_sha256"] is None
    assert record["backbone"] == load_config(config).refine.saliency.backbone.model_dump(mode="json")
    assert record["backbone"]["patch_size"] == 16 and record["backbone"]["pretrained"] == section["pretrained"]

    # another backbone into the same folder would mix two kinds of maps
    assert main(args + ["--set", "refine.saliency.backbone.pretrained=null"]) == 2  # random weights
    assert "(backbone.pretrained: " in capsys.readouterr().err
    # a backbone that does not load: named, and the folder is left as it was
    other = tmp_path / "other"
    absent = f"refine.saliency.backbone.pretrained={tmp_path / 'absent.pth'}"
    assert main([*args, "--out", str(other), "--set", absent]) == 2
    assert "error: refine.saliency.backbone.pretrained: weights file" in capsys.readouterr().err
    assert not (other / "source.json").exists()
