"""Every segmentation head (train.segmenter.head): shapes, ignore handling, gradients, training in
both modes, checkpoints, and the predict path."""

import numpy as np
import pytest
import torch

from wsss.config import HEADS, ModelConfig, SegmenterTrainConfig, load_config
from wsss.data import open_dataset
from wsss.data.label_png import IGNORE_INDEX
from wsss.models.checkpoint import load_checkpoint, load_segmenter, save_checkpoint, segmenter_checkpoint
from wsss.models.heads.dpt import DPTHead
from wsss.models.heads.mask2former import Mask2FormerHead
from wsss.models.heads.segformer import SegformerHead
from wsss.models.heads.setr import SetrMlaHead, SetrPupHead
from wsss.models.segmentation_model import create_segmenter
from wsss.predict import Predictor
from wsss.train.segmenter_training import head_loss
from tests.runs import segmenter_of
from tests.test_dpt import family_config

torch.set_num_threads(1)

KINDS = {"dpt": DPTHead, "setr_pup": SetrPupHead, "setr_mla": SetrMlaHead, "segformer": SegformerHead,
         "mask2former": Mask2FormerHead}
SMALL = {"dpt": ["train.segmenter.dpt.features=16"], "setr_pup": ["train.segmenter.setr_pup.channels=16"],
         "setr_mla": ["train.segmenter.setr_mla.channels=16", "train.segmenter.setr_mla.stream_channels=8"],
         "segformer": ["train.segmenter.segformer.embed=16"],
         "mask2former": ["train.segmenter.mask2former.hidden=16", "train.segmenter.mask2former.queries=8",
                         "train.segmenter.mask2former.layers=2", "train.segmenter.mask2former.points=256"]}


def small_settings(head: str) -> SegmenterTrainConfig:
    return load_config(None, [f"train.segmenter.head={head}", *SMALL[head]]).train.segmenter


@pytest.mark.parametrize("family", ["vit", "deit_distilled"])  # 1 prefix token at stride 8; 2 at stride 16
@pytest.mark.parametrize("head", HEADS)
def test_every_head_predicts_c_plus_1_classes_at_input_size(head, family):
    """B×(C+1)×H×W logits on a non-square input; the loss reaches every head parameter."""
    model = family_config(family).model
    settings = small_settings(head)
    segmenter = create_segmenter(model, head, settings.head_config, num_classes=4).train()
    assert isinstance(segmenter.decoder, KINDS[head]) and segmenter.head_name == head
    images = torch.randn(2, 3, 64, 96)
    out = segmenter(images)
    assert out.seg.shape == (2, 5, 64, 96) and torch.isfinite(out.seg).all()
    assert (out.queries is not None) == (head == "mask2former")
    labels = torch.randint(0, 5, (2, 64, 96))
    labels[:, :8] = IGNORE_INDEX
    head_loss(out, labels, settings).backward()
    missing = [n for n, p in segmenter.decoder.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("head", [h for h in HEADS if h != "mask2former"])
def test_per_pixel_heads_learn_nothing_from_ignored_pixels(head):
    """The loss has no gradient at pixels labelled 255 (Mask2Former's point sampling has its
    own test in test_mask2former.py)."""
    model = ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    settings = small_settings(head)
    segmenter = create_segmenter(model, head, settings.head_config, num_classes=3).train()
    out = segmenter(torch.randn(2, 3, 32, 32))
    seg = out.seg.detach().requires_grad_(True)
    labels = torch.randint(0, 4, (2, 32, 32))
    labels[:, 10:20] = IGNORE_INDEX
    head_loss(out._replace(seg=seg), labels, settings).backward()
    assert seg.grad[:, :, 10:20].abs().max() == 0 and seg.grad[:, :, :10].abs().max() > 0


def _run_config(tmp_path, head, mode):
    return load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}", "data.synth.num_images=16",
        "data.synth.image_size=48", "model.img_size=48", "model.patch_size=8", "model.embed_dim=32",
        "model.depth=2", "model.num_heads=2", "train.device=cpu", "train.segmenter.steps=4",
        "train.segmenter.batch_size=2", "train.segmenter.checkpoint_every=4", "train.segmenter.threads=1",
        f"train.segmenter.mode={mode}", f"train.segmenter.head={head}", "refine.saliency.source=none",
        "refine.label.opening=3", f"train.segmenter.labels_dir={tmp_path / 'data' / 'masks'}", *SMALL[head]])


@pytest.mark.parametrize("mode", ["two_stage", "single_stage"])
@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_in_both_modes_and_predicts(tmp_path, head, mode):
    """A few steps of each mode (two stage on label PNGs; single stage with the double
    backward in phase 2), segmenter.pt names its head and loads, and wsss.predict's path
    (scales, flip) gives class probabilities at the image's size."""
    config = _run_config(tmp_path, head, mode)
    open_dataset(config.data, "train")  # generates the data set (and its masks, the two-stage labels)
    torch.manual_seed(0)
    start = create_segmenter(config.model, head, config.train.segmenter.head_config, 6).state_dict()
    path = segmenter_of(config, score=False, progress=False)
    state = load_checkpoint(path)
    assert state["head"] == head and state["head_config"] == config.train.segmenter.head_config.model_dump(mode="json")
    history = state["history"]
    assert history[-1]["phase"] == 2 and np.isfinite(history[-1]["seg"])
    moved = [k for k, v in state["model"].items() if k.startswith("decoder.") and v.is_floating_point()
             and not torch.equal(v, start[k])]
    assert moved, "no head weight changed"
    segmenter, classes, _ = load_segmenter(path)
    assert isinstance(segmenter.decoder, KINDS[head]) and len(classes) == 6
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    probs = Predictor(segmenter, scales=(0.75, 1.0), flip=True)([image])
    assert probs.shape == (1, 7, 40, 56)
    assert torch.allclose(probs.sum(1), torch.ones(1, 40, 56), atol=1e-4)


@pytest.mark.parametrize("head", HEADS)
def test_a_saved_head_gives_the_same_outputs(tmp_path, head):
    model = ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    settings = small_settings(head)
    segmenter = create_segmenter(model, head, settings.head_config, num_classes=3).eval()
    save_checkpoint(tmp_path / "s.pt", segmenter_checkpoint(segmenter, model, settings.head_config, ["a", "b", "c"], []))
    loaded, _, _ = load_segmenter(tmp_path / "s.pt")
    images = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        assert torch.equal(segmenter(images).seg, loaded(images).seg)
