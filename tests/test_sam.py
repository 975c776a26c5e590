"""The SAM stage (``refine.sam``): prompts, the merge rule, an oracle, a random small SAM, loading."""

from __future__ import annotations

import time
from functools import partial

import cv2
import numpy as np
import pytest
import torch

from wsss.config import SamConfig
from wsss.eval.confusion import ConfusionMatrix
from wsss.refine.sam import (
    SamMaskPredictor,
    SamPrompt,
    SamRefiner,
    detect_sam_type,
    load_sam,
    merge_sam_masks,
    sam_prompts,
)


def _disk(shape, centre, radius, value=1.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(yy - centre[0], xx - centre[1])
    return np.where(d <= radius, value * (1 - 0.5 * d / radius), 0.0)


# --- prompts ---------------------------------------------------------------------------------


def _two_class_maps():
    """C=3 (class 0 untagged): class 1 two blobs (peaks at (20, 15) and (45, 60)) and a tiny
    one; class 2 one blob with its peak at (60, 20) (row, col)."""
    H, W = 72, 80
    maps = np.zeros((3, H, W), np.float32)
    maps[1] = np.maximum(_disk((H, W), (20, 15), 9), _disk((H, W), (45, 60), 12))
    maps[1] += _disk((H, W), (5, 75), 2)  # area ~ 5 px above threshold: dropped by min_area
    maps[2] = _disk((H, W), (60, 20), 8)
    maps[0] = 1.0  # untagged: never prompted, never a negative
    tags = np.array([0, 1, 1], np.float32)
    return maps, tags


def test_prompts_boxes_points_and_negatives():
    maps, tags = _two_class_maps()
    settings = SamConfig(region_threshold=0.6, min_area=20, max_regions=3, positive_points=3, negative_points=1)
    prompts = sam_prompts(maps, tags, settings)
    assert [p.cls for p in prompts] == [1, 1, 2]
    H, W = maps.shape[1:]
    big, small, other = prompts
    assert big.area > small.area  # largest first
    # the boxes hold their blob's thresholded region exactly (inclusive corners)
    for prompt, (cy, cx), cls in ((big, (45, 60), 1), (small, (20, 15), 1), (other, (60, 20), 2)):
        ys, xs = np.nonzero(maps[cls] >= 0.6)
        near = np.hypot(ys - cy, xs - cx) < 14
        assert prompt.box.tolist() == [xs[near].min(), ys[near].min(), xs[near].max(), ys[near].max()]
        positive = prompt.points[prompt.labels == 1]
        assert len(positive) == 3
        assert tuple(positive[0]) == (cx, cy)  # the highest peak first
        for x, y in positive:  # inside the region, spread apart
            assert maps[cls][int(y), int(x)] >= 0.6 and np.hypot(y - cy, x - cx) < 14
        spread = np.hypot(*(positive[:, None] - positive[None]).transpose(2, 0, 1))
        assert spread[np.triu_indices(3, 1)].min() >= 0.25 * np.sqrt(prompt.area) - 1e-9
    # negatives: the other tagged class's peak (class 0 is untagged: none from it)
    assert big.points[big.labels == 0].tolist() == [[20, 60]]
    assert small.points[small.labels == 0].tolist() == [[20, 60]]
    assert other.points[other.labels == 0].tolist() == [[60, 45]]
    for p in prompts:
        assert list(p.labels) == sorted(p.labels, reverse=True)  # positives first
        assert (p.points[:, 0] >= 0).all() and (p.points[:, 0] <= W - 1).all()
        assert (p.points[:, 1] >= 0).all() and (p.points[:, 1] <= H - 1).all()
        assert 0 <= p.box[0] <= p.box[2] <= W - 1 and 0 <= p.box[1] <= p.box[3] <= H - 1
    # min_area drops the blobs below it, max_regions keeps the largest, negatives may be 0
    assert [p.area for p in sam_prompts(maps, tags, SamConfig(region_threshold=0.6, min_area=1))][:3] == \
        sorted([p.area for p in sam_prompts(maps, tags, SamConfig(region_threshold=0.6, min_area=1))
                if p.cls == 1], reverse=True)
    assert len([p for p in sam_prompts(maps, tags, SamConfig(region_threshold=0.6, min_area=1)) if p.cls == 1]) == 3
    one = sam_prompts(maps, tags, SamConfig(region_threshold=0.6, min_area=20, max_regions=1, negative_points=0))
    assert [(p.cls, p.area) for p in one] == [(1, big.area), (2, other.area)]
    assert all((p.labels == 1).all() for p in one)
    assert sam_prompts(maps, tags, SamConfig(region_threshold=0.6, min_area=10_000)) == []


def test_prompts_at_the_image_border_stay_inside():
    maps = np.zeros((2, 30, 40), np.float32)
    maps[0, :12, :10] = 1.0  # a plateau in the corner: the deepest pixel wins the tie
    maps[1, 20:, 30:] = np.linspace(0.6, 1.0, 10)[None, :]
    prompts = sam_prompts(maps, np.ones(2), SamConfig(min_area=4, positive_points=4))
    assert [p.cls for p in prompts] == [0, 1]
    assert prompts[0].box.tolist() == [0, 0, 9, 11] and prompts[1].box.tolist() == [30, 20, 39, 29]
    first = prompts[0].points[0]
    assert 3 <= first[0] <= 6 and 4 <= first[1] <= 7  # interior of the plateau, not its corner
    assert prompts[1].points[0][0] == 39  # the map's maximum column
    for p in prompts:
        assert (p.points >= 0).all() and (p.points[:, 0] <= 39).all() and (p.points[:, 1] <= 29).all()


# --- merge -----------------------------------------------------------------------------------


def test_merge_rule_on_a_hand_made_case():
    # classes 0 and 1 (labels 1 and 2); 1×8 image
    rule = np.array([[1, 1, 1, 0, 0, 255, 2, 2]])
    maps = np.array([[[0.95, 0.5, 0.3, 0.5, 0.05, 0.5, 0.0, 0.0]],
                     [[0.00, 0.0, 0.0, 0.5, 0.50, 0.5, 0.8, 0.95]]], np.float32)
    masks = {0: np.array([[0, 0, 1, 1, 1, 1, 0, 0]], bool),  # M_0
             1: np.array([[0, 0, 0, 1, 1, 0, 1, 0]], bool)}  # M_1
    out = merge_sam_masks(rule, maps, masks, agree=0.1, keep=0.9)
    # px0: rule 1, outside M_0 but map 0.95 >= keep → kept; px1: outside M_0, map 0.5 < keep → 0;
    # px2: M_0 alone → 1; px3: both claim → 255; px4: M_0 holds it but map_0 0.05 < agree, M_1
    # claims → 2; px5: M_0 alone claims the rule's 255 → 1; px6: M_1 → 2; px7: rule 2 outside
    # M_1, map 0.95 ≥ keep → kept
    assert out.tolist() == [[1, 0, 1, 255, 2, 1, 2, 2]]
    assert out.dtype == np.int64
    # a class with an empty mask has no SAM evidence: the rule stays for it
    out = merge_sam_masks(rule, maps, {0: np.zeros((1, 8), bool), 1: masks[1]}, agree=0.1, keep=0.9)
    assert out.tolist() == [[1, 1, 1, 2, 2, 255, 2, 2]]
    assert merge_sam_masks(rule, maps, {}).tolist() == rule.tolist()


# --- oracle ----------------------------------------------------------------------------------


class OracleMaskPredictor:
    """Returns the true object of a prompt: the connected component of the ground-truth mask
    (same label value, 8-connectivity) holding its first positive point that falls on an object,
    else the one holding the box centre, else an empty mask. Images are told apart by their bytes."""

    def __init__(self, truths: dict[bytes, np.ndarray]):
        self.truths, self.gt, self.calls = truths, None, 0

    def set_image(self, rgb):
        self.gt = self.truths[rgb.tobytes()]

    def predict(self, points, point_labels, box):
        self.calls += 1
        x0, y0, x1, y1 = box
        candidates = [p for p, l in zip(points, point_labels) if l == 1] + [((x0 + x1) / 2, (y0 + y1) / 2)]
        for x, y in candidates:
            row, col = int(np.rint(y)), int(np.rint(x))
            value = self.gt[row, col]
            if value not in (0, 255):
                _, components = cv2.connectedComponents((self.gt == value).astype(np.uint8), connectivity=8)
                return components == components[row, col]
        return np.zeros(self.gt.shape, bool)


def degraded_maps(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """C×H×W maps made from a ground-truth mask: each present class's mask dilated by 4 px (9×9
    ellipse) and blurred (Gaussian σ = 5 px), normalised by its max: the label rule on them
    gives labels that spill over the objects' outlines (blurred, bloated boundaries)."""
    maps = np.zeros((num_classes, *mask.shape), np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    for c in range(num_classes):
        m = (mask == c + 1).astype(np.uint8)
        if m.any():
            blurred = cv2.GaussianBlur(cv2.dilate(m, kernel).astype(np.float32), (0, 0), 5.0)
            maps[c] = blurred / blurred.max()
    return maps


@pytest.fixture(scope="module")
def synth_val(tmp_path_factory):
    from wsss.data.folder import FolderDataset
    from wsss.config import SynthConfig
    from wsss.data.synth import generate_synth_dataset

    root = generate_synth_dataset(tmp_path_factory.mktemp("sam") / "data",
                                  SynthConfig(num_images=24, image_size=96, val_fraction=0.5, seed=0), progress=False)
    dataset = FolderDataset(root, split="val")
    return dataset, [dataset[i] for i in range(len(dataset))]


def _chain(sam):
    from wsss.config import LabelRuleConfig, PamrConfig
    from wsss.refine.chain import LabelChain

    return LabelChain(PamrConfig(enabled=False), LabelRuleConfig(), sam=sam)


def test_oracle_sam_raises_the_miou_of_degraded_labels(synth_val):
    dataset, samples = synth_val
    C = dataset.num_classes
    oracle = OracleMaskPredictor({s.image.tobytes(): s.mask for s in samples})
    chain = _chain(SamRefiner(oracle))
    maps = torch.from_numpy(np.stack([degraded_maps(s.mask, C) for s in samples]))
    tags = torch.from_numpy(np.stack([s.tags for s in samples]))
    rgb = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)
    result = chain(maps, tags, rgb, [None] * len(samples))
    before, after = ConfusionMatrix(C + 1), ConfusionMatrix(C + 1)
    for i, sample in enumerate(samples):
        before.update(result.rule[i].numpy(), sample.mask)
        after.update(result.sam[i].numpy(), sample.mask)
    assert torch.equal(result.labels, result.sam)  # no CRF: the labels are SAM's
    print(f"\noracle SAM on {len(samples)} images: mIoU {100 * before.miou:.1f} (label rule on degraded maps) "
          f"→ {100 * after.miou:.1f} (+SAM)")
    assert oracle.calls >= len(samples)
    assert 100 * after.miou >= 100 * before.miou + 5


# --- a random small SAM ----------------------------------------------------------------------


def tiny_sam(img_size: int = 128, dim: int = 32, width: int | None = None, depth: int = 2):
    """A randomly initialised SAM of the package's own modules, small enough for CPU tests: an
    image encoder of ``width`` (default ``dim``) and ``depth`` blocks (the last one global),
    prompts and masks of ``dim``."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(0)
    patch = 16
    encoder = ImageEncoderViT(img_size=img_size, patch_size=patch, embed_dim=width or dim, depth=depth, num_heads=2,
                              mlp_ratio=2, out_chans=dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                              use_rel_pos=True, window_size=4, global_attn_indexes=(depth - 1,))
    prompt = PromptEncoder(embed_dim=dim, image_embedding_size=(img_size // patch,) * 2,
                           input_image_size=(img_size, img_size), mask_in_chans=4)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64,
                                                                                  num_heads=2),
                          transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32)
    return Sam(encoder, prompt, decoder, pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375]).eval()


class _Recording(SamMaskPredictor):
    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.prompts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def predict(self, points, point_labels, box):
        self.prompts.append((np.array(points), np.array(point_labels), np.array(box)))
        return super().predict(points, point_labels, box)


@pytest.mark.parametrize("multimask", [False, True])
def test_random_small_sam_through_the_chain(synth_val, multimask):
    from wsss.config import CrfConfig, LabelRuleConfig, PamrConfig
    from wsss.refine.chain import LabelChain

    dataset, samples = synth_val
    C = dataset.num_classes
    batch = [s for s in samples if s.tags.sum() >= 2][:2] or samples[:2]
    predictor = _Recording(tiny_sam(), multimask=multimask)
    chain = LabelChain(PamrConfig(iterations=2), LabelRuleConfig(opening=3), crf=CrfConfig(iterations=2),
                       sam=SamRefiner(predictor, SamConfig(min_area=16)))
    maps = torch.from_numpy(np.stack([degraded_maps(s.mask, C) for s in batch]))
    tags = torch.from_numpy(np.stack([s.tags for s in batch]))
    rgb = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2)
    start = time.perf_counter()
    result = chain(maps, tags, rgb, [None] * len(batch))
    seconds = time.perf_counter() - start
    B, (H, W) = len(batch), batch[0].image.shape[:2]
    assert result.sam is not None and result.sam.shape == (B, H, W) and result.sam.dtype == torch.int64
    assert result.labels.shape == (B, H, W) and result.labels.dtype == torch.int64
    for labels in (result.sam, result.labels):
        assert set(torch.unique(labels).tolist()) <= set(range(C + 1)) | {255}
    for i, sample in enumerate(batch):  # only tagged classes (or background / ignore) appear
        allowed = {0, 255} | {int(c) + 1 for c in np.flatnonzero(sample.tags)}
        assert set(torch.unique(result.sam[i]).tolist()) <= allowed
    from wsss.refine.crf import start_crf_pseudo_labels

    crf_of_sam = start_crf_pseudo_labels([s.image for s in batch], list(result.sam.numpy().astype(np.uint8)),
                                         CrfConfig(iterations=2))()
    assert np.array_equal(np.stack(crf_of_sam), result.labels.numpy())  # the CRF ran on SAM's labels
    assert predictor.prompts, "no prompt reached SAM"
    for points, labels, box in predictor.prompts:
        assert points.shape == (len(labels), 2) and set(labels.tolist()) <= {0, 1} and (labels == 1).any()
        assert (points >= 0).all() and (points[:, 0] <= W - 1).all() and (points[:, 1] <= H - 1).all()
        assert 0 <= box[0] <= box[2] <= W - 1 and 0 <= box[1] <= box[3] <= H - 1
    assert seconds < 30


def test_chain_without_sam_is_unchanged(synth_val):
    dataset, samples = synth_val
    C = dataset.num_classes
    batch = samples[:2]
    maps = torch.from_numpy(np.stack([degraded_maps(s.mask, C) for s in batch]))
    tags = torch.from_numpy(np.stack([s.tags for s in batch]))
    rgb = torch.from_numpy(np.stack([s.image for s in batch])).permute(0, 3, 1, 2)
    result = _chain(None)(maps, tags, rgb, [None] * 2)
    assert result.sam is None and torch.equal(result.labels, result.rule)


def test_sam_stage_without_prompts_leaves_the_rule_and_skips_sam():
    class Never:
        def set_image(self, rgb):
            raise AssertionError("SAM ran without a prompt")

        def predict(self, points, point_labels, box):
            raise AssertionError("SAM ran without a prompt")

    rule = np.array([[0, 1], [255, 1]])
    out = SamRefiner(Never())(np.zeros((2, 2, 3), np.uint8), np.full((1, 2, 2), 0.9, np.float32), np.ones(1), rule)
    assert out.tolist() == rule.tolist() and out.dtype == np.int64


# --- load_sam --------------------------------------------------------------------------------


def test_load_sam_refuses_bad_files_naming_them(tmp_path):
    with pytest.raises(ValueError, match="missing.pth: SAM checkpoint not found"):
        load_sam(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pth: not a SAM checkpoint readable"):
        load_sam(junk)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match=r"list.pth: not a SAM state dict \(a list"):
        load_sam(listed)
    # a small state dict: the width is none of SAM's, so auto cannot tell the type
    state = tiny_sam().state_dict()
    small = tmp_path / "small.pth"
    torch.save(state, small)
    with pytest.raises(ValueError, match=r"small.pth: cannot tell the SAM model type: "
                                         r"image_encoder.patch_embed.proj.weight is of shape \(32, 3, 16, 16\)"):
        load_sam(small)
    del state["image_encoder.patch_embed.proj.weight"]
    torch.save(state, small)
    with pytest.raises(ValueError, match="small.pth: cannot tell .* is missing"):
        load_sam(small)


def test_detect_sam_type_from_the_encoder_width():
    for width, kind in ((768, "vit_b"), (1024, "vit_l"), (1280, "vit_h")):
        assert detect_sam_type({"image_encoder.patch_embed.proj.weight": torch.zeros(width, 3, 16, 16)}) == kind
    assert detect_sam_type({"image_encoder.patch_embed.proj.weight": torch.zeros(32, 3, 16, 16)}) is None
    assert detect_sam_type({}) is None


def small_vit_b(checkpoint=None):
    """A SAM of vit_b's image-encoder width (768: what auto-detection reads) but 3 blocks at
    128 pixels, built in well under a second (the real vit_b takes 10 to 20 s on a busy CPU)."""
    assert checkpoint is None
    return tiny_sam(width=768, depth=3)


def test_load_sam_vit_b_auto_and_what_does_not_fit(tmp_path, monkeypatch):
    from segment_anything import sam_model_registry

    monkeypatch.setitem(sam_model_registry, "vit_b", small_vit_b)  # what load_sam builds for vit_b
    state = small_vit_b().state_dict()
    path = tmp_path / "sam_vit_b.pth"
    torch.save(state, path)
    loaded = load_sam(path)  # auto → vit_b
    assert loaded.image_encoder.patch_embed.proj.weight.shape[0] == 768 and not loaded.training
    assert torch.equal(loaded.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])
    small = tmp_path / "small.pth"
    torch.save(tiny_sam().state_dict(), small)  # another architecture altogether (2 blocks of width 32)
    with pytest.raises(ValueError, match=r"small.pth: does not fit SAM vit_b \(the file looks like none of "
                                         r"vit_b/vit_l/vit_h .*\): \d+ missing key\(s\): .*mis-shaped key\(s\): "
                                         r"image_encoder.pos_embed \(1, 8, 8, 32\) \(expected \(1, 8, 8, 768\)\)"):
        load_sam(small, "vit_b")
    state["extra.weight"] = torch.zeros(2)
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"sam_vit_b.pth: does not fit SAM vit_b .*1 missing key\(s\): "
                                         r"mask_decoder.iou_token.weight; 1 unexpected key\(s\): extra.weight"):
        load_sam(path)


# --- config ----------------------------------------------------------------------------------


def test_config_enabled_without_checkpoint_is_a_clear_error(tmp_path):
    from wsss.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"refine.sam.*refine.sam.checkpoint is not set"):
        load_config(overrides=["refine.sam.enabled=true"])
    config = load_config(overrides=["refine.sam.enabled=true", f"refine.sam.checkpoint={tmp_path / 'sam.pth'}"])
    assert config.refine.sam.enabled and config.refine.sam.model_type == "auto"
    with pytest.raises(ConfigError, match="refine.sam.model_type"):
        load_config(overrides=["refine.sam.model_type=vit_x"])
    assert not load_config().refine.sam.enabled


def test_offline_labeler_loads_sam_and_reports_a_bad_checkpoint(tmp_path):
    from wsss.config import CamConfig, RefineConfig
    from wsss.refine.chain import offline_labeler

    from wsss.config import ModelConfig
    from wsss.models.classifier import create_classifier

    refine = RefineConfig.model_validate({"saliency": {"source": "none"},
                                          "sam": {"enabled": True, "checkpoint": str(tmp_path / "nope.pth")}})
    model = create_classifier(ModelConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2), 2)
    with pytest.raises(ValueError, match="nope.pth: SAM checkpoint not found"):
        offline_labeler(model, CamConfig(), refine)


def test_prompt_dataclass_is_plain_data():
    maps, tags = _two_class_maps()
    prompt = sam_prompts(maps, tags)[0]
    assert isinstance(prompt, SamPrompt) and prompt.box.shape == (4,) and prompt.points.dtype == np.float64


# --- the stage table -------------------------------------------------------------------------


def test_stage_table_scores_sam_between_the_rule_and_the_crf(synth_val, tmp_path, monkeypatch):
    import wsss.refine.sam as sam_module
    from wsss.config import CamConfig, ModelConfig, RefineConfig
    from wsss.eval.stages import STAGES, MethodStages, StageResults, run_stages
    from wsss.models.classifier import create_classifier
    from wsss.report.build import build_report

    dataset, _ = synth_val
    checkpoint = tmp_path / "sam_vit_b.pth"
    checkpoint.write_bytes(b"stand-in: cached_sam is replaced by a random small SAM")
    loaded = []

    def fake_cached_sam(path, model_type="auto", device="cpu"):
        loaded.append((str(path), model_type, str(device)))
        return tiny_sam()

    monkeypatch.setattr(sam_module, "cached_sam", fake_cached_sam)
    torch.manual_seed(0)
    model = create_classifier(ModelConfig(img_size=48, embed_dim=32, depth=2, num_heads=2, patch_size=8),
                              dataset.num_classes).eval()
    refine = RefineConfig.model_validate({
        "saliency": {"source": "none"}, "label": {"opening": 3}, "crf": {"iterations": 2, "workers": 1},
        "sam": {"enabled": True, "checkpoint": str(checkpoint), "min_area": 16, "region_threshold": 0.3}})
    results = run_stages(model, CamConfig(batch_size=4), refine, dataset, ["getam", "rollout"], stage_images=3,
                         examples=1, progress=False)
    assert loaded == [(str(checkpoint), "auto", "cpu")] * 2  # one SAM stage per method's labeler
    assert results.columns == ("raw", "+PAMR", "+saliency, conflict", "+SAM", "+CRF")
    for row in results.rows()[:2]:
        assert list(row)[-3:] == ["+saliency, conflict", "+SAM", "+CRF"] and 0 <= row["+SAM"] <= 100
    assert all(s.sam is not None and s.sam.matrix.sum() > 0 for s in results.methods.values())
    header = results.text_table().splitlines()[1]
    assert header.index("+saliency, conflict") < header.index("+SAM") < header.index("+CRF")
    content, page = build_report("t", [], stages=results)
    assert content["stage_columns"] == list(results.columns)
    assert "+SAM" in content["stages"][0] and "+SAM" in page.examples[0].pictures

    # SAM off: the table and the report are as before (no +SAM anywhere)
    off = StageResults(classes=["a"])
    matrix = ConfusionMatrix(2).update(np.array([[0, 1]]), np.array([[0, 1]]))
    off.methods["getam"] = MethodStages({0.5: matrix}, {0.5: matrix}, matrix, matrix)
    assert off.columns == STAGES and "+SAM" not in off.rows()[0] and "+SAM" not in off.text_table()
    assert build_report("t", [], stages=off)[0]["stage_columns"] == list(STAGES)


def test_source_json_records_the_sam_settings_and_checkpoint_size(tmp_path):
    from wsss.config import CamConfig, DataConfig, RefineConfig
    from wsss.steps.provenance import label_source

    off = label_source(CamConfig(), RefineConfig(), DataConfig(), "d")
    assert off["refine"]["sam"]["enabled"] is False and "checkpoint_bytes" not in off["refine"]["sam"]
    checkpoint = tmp_path / "sam.pth"
    checkpoint.write_bytes(b"x" * 1234)
    on = label_source(CamConfig(), RefineConfig.model_validate({"sam": {"enabled": True, "checkpoint": str(checkpoint)}}),
                      DataConfig(), "d")
    assert on["refine"]["sam"]["enabled"] and on["refine"]["sam"]["checkpoint"] == str(checkpoint)
    assert on["refine"]["sam"]["checkpoint_bytes"] == 1234
    assert {k: v for k, v in on["refine"].items() if k != "sam"} == {k: v for k, v in off["refine"].items() if k != "sam"}
