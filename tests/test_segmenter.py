"""Segmenter training: in-loop labels = the offline flow's, the double backward, losses,
optimizer, exact resume, two-stage training, torchrun with 2 CPU processes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wsss.config import load_config
from wsss.data import open_dataset
from wsss.data.base import Sample
from wsss.models.segmentation_model import create_segmenter
from wsss.models.checkpoint import load_checkpoint
from wsss.refine.chain import offline_labeler
from wsss.refine.inloop import InLoopLabeler
from wsss.train.segmenter_training import build_optimizer, poly_schedule, saliency_loss, saliency_masks, segmentation_loss
from wsss.train.segmenter_data import SegmenterCrops, StepBatches
from tests.runs import classifier_of, segmenter_of

torch.set_num_threads(1)


def segmenter_config(tmp_path, *extra):
    """A tiny run: 24 synthetic 48×48 images, a 2-block ViT, a 16-channel DPT head."""
    return load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}", "data.synth.num_images=24",
        "data.synth.image_size=48", "model.img_size=48", "model.patch_size=8", "model.embed_dim=32",
        "model.depth=2", "model.num_heads=2", "train.device=cpu", "train.segmenter.steps=4",
        "train.segmenter.batch_size=2", "train.segmenter.dpt.features=16", "train.segmenter.checkpoint_every=2",
        "train.segmenter.threads=1", "refine.label.opening=3", "predict.batch_size=4", *extra,
    ])


def write_saliency_from_masks(root: Path) -> None:
    """DATASET/saliency/<id>.png: the mask's foreground, at half size (maps may have any size)."""
    (root / "saliency").mkdir(exist_ok=True)
    for path in sorted((root / "masks").glob("*.png")):
        mask = np.array(Image.open(path)) > 0
        Image.fromarray(mask.astype(np.uint8) * 255).resize((mask.shape[1] // 2, mask.shape[0] // 2)).save(
            root / "saliency" / path.name)


def crop_batch(config, dataset, count=6, crop=32):
    crops = SegmenterCrops(dataset, crop, (0.7, 1.3), seed=0)
    items = [crops[(q, q % len(dataset))] for q in range(count)]
    return {k: torch.stack([torch.as_tensor(item[k]) for item in items]) for k in items[0]}


@pytest.mark.parametrize("saliency", ["none", "tokencut", "folder"])
def test_in_loop_labels_equal_the_offline_flow(tmp_path, saliency):
    """For fixed weights, the labels made inside a training step equal the labels of the offline
    chain (PseudoLabeler: GETAM → PAMR → saliency + label rule) for the same crops."""
    config = segmenter_config(tmp_path, f"refine.saliency.source={saliency}")
    dataset = open_dataset(config.data, "train")
    if saliency == "folder":
        write_saliency_from_masks(config.data.root)
        dataset = open_dataset(config.data, "train")
    torch.manual_seed(0)
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, dataset.num_classes).eval()
    batch = crop_batch(config, dataset)

    labeler = InLoopLabeler(segmenter.backbone, config.cam.start_block, config.refine)
    with labeler.capture():
        out = segmenter(batch["image"])
        labels, masks = labeler(out.logits, batch["tags"], batch["image"], batch["rgb"],
                                saliency_masks(batch, config.refine.saliency.threshold, torch.device("cpu")))

    samples = [Sample(id=str(i), image=batch["rgb"][i].permute(1, 2, 0).numpy(), tags=batch["tags"][i].numpy(),
                      saliency=batch["saliency"][i].numpy() if batch["has_saliency"][i] else None)
               for i in range(len(batch["image"]))]
    offline = offline_labeler(segmenter.backbone, config.cam, config.refine, dataset, crf=False)(samples)
    assert torch.equal(labels, offline.rule) and torch.equal(offline.rule, offline.labels)
    values = set(np.unique(offline.rule.numpy()).tolist())
    assert values - {0, 255}, "the labels hold no class: the comparison would be vacuous"
    assert (masks[0] is None) == (saliency == "none")


def test_first_backward_leaves_parameters_alone_and_keeps_the_graph(tmp_path):
    config = segmenter_config(tmp_path, "refine.saliency.source=none")
    dataset = open_dataset(config.data, "train")
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, dataset.num_classes).train()
    batch = crop_batch(config, dataset, count=3)
    labeler = InLoopLabeler(segmenter.backbone, config.cam.start_block, config.refine)
    with labeler.capture():
        out = segmenter(batch["image"])
        labels, _ = labeler(out.logits, batch["tags"], batch["image"], batch["rgb"])
    assert all(p.grad is None for p in segmenter.parameters())  # the first backward touched no parameter
    assert not labels.requires_grad and labels.shape == (3, 32, 32)
    loss = segmentation_loss(out.seg, labels) + F.multilabel_soft_margin_loss(out.logits, batch["tags"])
    loss.backward()  # the second backward through the retained graph
    assert segmenter.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert segmenter.decoder.head[-1].weight.grad.abs().sum() > 0


def test_segmentation_loss_averages_background_and_foreground_separately():
    torch.manual_seed(0)
    seg = torch.randn(1, 3, 1, 5)
    labels = torch.tensor([[[0, 0, 0, 2, 255]]])
    ce = F.cross_entropy(seg, labels.clamp(max=2), reduction="none")[0, 0]
    expected = ce[:3].mean() + ce[3]
    assert torch.allclose(segmentation_loss(seg, labels), expected)
    only_background = torch.tensor([[[0, 0, 255, 255, 255]]])
    assert torch.allclose(segmentation_loss(seg, only_background), ce[:2].mean())  # empty term: 0, not NaN
    assert segmentation_loss(seg, torch.full_like(labels, 255)) == 0


def test_saliency_loss_is_bce_of_the_background_probability():
    torch.manual_seed(0)
    seg = torch.randn(2, 4, 3, 3)
    salient = torch.rand(3, 3) > 0.5
    p0 = torch.softmax(seg, dim=1)[1, 0]
    expected = F.binary_cross_entropy(p0, (~salient).float())
    assert torch.allclose(saliency_loss(seg, [None, salient]), expected, atol=1e-6)
    assert saliency_loss(seg, [None, None]) == 0


def test_optimizer_groups_momentum_decay_and_poly_schedule(tmp_path):
    config = segmenter_config(tmp_path, "train.segmenter.lr=0.1", "train.segmenter.head_lr_scale=10",
                              "train.segmenter.weight_decay=0.001", "train.segmenter.momentum=0.9")
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, 6)
    optimizer = build_optimizer(segmenter, config.train.segmenter)
    assert isinstance(optimizer, torch.optim.SGD)
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    qkv, cls_token = segmenter.backbone.blocks[0].attn.qkv, segmenter.backbone.cls_token
    head = segmenter.decoder.head[-1]
    assert by_param[id(qkv.weight)]["lr"] == pytest.approx(0.1) and by_param[id(qkv.weight)]["weight_decay"] == 0.001
    assert by_param[id(qkv.bias)]["weight_decay"] == 0 and by_param[id(cls_token)]["weight_decay"] == 0
    assert by_param[id(head.weight)]["lr"] == pytest.approx(1.0)
    assert all(g["momentum"] == 0.9 for g in optimizer.param_groups)  # real momentum (the paper's: 5e-4)
    scheduler = poly_schedule(optimizer, steps=10, power=0.9)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert by_param[id(qkv.weight)]["lr"] == pytest.approx(0.1 * 0.6 ** 0.9)
    adamw = build_optimizer(segmenter, config.train.segmenter.model_copy(update={"optimizer": "adamw"}))
    assert isinstance(adamw, torch.optim.AdamW)


def test_step_batches_cover_processes_and_resume():
    full = list(StepBatches(n=5, batch_size=2, accum=2, world=2, rank=1, seed=0, start=0, steps=3))
    later = list(StepBatches(n=5, batch_size=2, accum=2, world=2, rank=1, seed=0, start=2, steps=3))
    assert len(full) == 6 and later == full[4:]
    other = list(StepBatches(n=5, batch_size=2, accum=2, world=2, rank=0, seed=0, start=0, steps=3))
    positions = sorted(q for batch in full + other for q, _ in batch)
    assert positions == list(range(24))  # every position once, across both ranks
    first_epoch = [i for batch in full + other for q, i in batch if q < 5]
    assert sorted(first_epoch) == list(range(5))  # an epoch shows every image once


def final_weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, capsys):
    extra = ["train.segmenter.grad_accum=2", "refine.saliency.source=tokencut"]
    straight = segmenter_config(tmp_path / "a", *extra)
    path = segmenter_of(straight, progress=False)
    metrics = json.loads((path.parent / "metrics.json").read_text())
    assert 0 <= metrics["segmenter"]["mIoU"] <= 1 and 0 <= metrics["pseudo_labels"]["mIoU"] <= 1
    history = json.loads((path.parent / "history.json").read_text())
    assert [h["phase"] for h in history] == [1, 2] and "seg" in history[1] and "seg" not in history[0]

    interrupted = segmenter_config(tmp_path / "b", *extra)
    last = segmenter_of(interrupted, progress=False, stop_after=3)  # phase 2 has begun
    assert last.name == "last.pt" and load_checkpoint(last)["step"] == 3
    resumed = segmenter_of(interrupted, progress=False)
    assert "resuming from" in capsys.readouterr().out
    a, b = final_weights(path), final_weights(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different
    assert not torch.equal(a["decoder.head.4.weight"],
                           create_segmenter(straight.model, "dpt", straight.train.segmenter.dpt, 6).state_dict()["decoder.head.4.weight"])

    changed = segmenter_config(tmp_path / "b", *extra, "train.segmenter.steps=6")
    with pytest.raises(ValueError, match=r"another run \(steps differ\); use --restart"):
        segmenter_of(changed, progress=False)


def test_two_stage_from_wsss_pseudo_label(tmp_path, capsys):
    """classifier → wsss pseudo-label → two-stage segmenter started from the classifier."""
    from wsss.cli import main

    config = segmenter_config(tmp_path, "train.classifier.epochs=1", "train.classifier.batch_size=8",
                              "train.classifier.warmup_epochs=0", "refine.saliency.source=none")
    classifier = classifier_of(config, progress=False)
    labels = tmp_path / "run" / "pseudo_labels"
    args = ["--set", f"run_dir={tmp_path / 'run'}", "--set", f"data.root={tmp_path / 'data'}"]
    assert main(["pseudo-label", "--checkpoint", str(classifier), "--dataset", str(tmp_path / "data"),
                 "--split", "train", "--out", str(labels), *args]) == 0
    missing = sorted(labels.glob("*.png"))[0]
    missing.unlink()  # one image without a pseudo-label: left out and recorded
    overrides = [f"{k}={v}" for k, v in (
        ("run_dir", tmp_path / "run"), ("data.root", tmp_path / "data"), ("data.synth.num_images", 24),
        ("data.synth.image_size", 48), ("model.img_size", 48), ("model.patch_size", 8), ("model.embed_dim", 32),
        ("model.depth", 2), ("model.num_heads", 2), ("train.device", "cpu"), ("train.segmenter.mode", "two_stage"),
        ("train.segmenter.init", classifier), ("train.segmenter.steps", 3), ("train.segmenter.batch_size", 2),
        ("train.segmenter.dpt.features", 16), ("train.segmenter.threads", 1), ("predict.flip", False))]
    capsys.readouterr()
    assert main(["train", "segmenter", *[a for o in overrides for a in ("--set", o)]]) == 0
    out = capsys.readouterr().out
    assert "1 of 19 images have no pseudo-label" in out and "val mIoU: segmenter" in out
    folder = tmp_path / "run" / "segmenter_two_stage"
    manifest = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert manifest == [{"id": missing.stem, "status": "failed", "reason": f"no pseudo-label {missing}"}]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["mode"] == "two_stage" and "pseudo_labels" not in metrics
    assert len(list((folder / "val_predictions").glob("*.png"))) == metrics["images"]
    start = load_checkpoint(classifier)["model"]["blocks.0.attn.qkv.weight"]
    trained = final_weights(folder / "segmenter.pt")["backbone.blocks.0.attn.qkv.weight"]
    assert not torch.equal(start, trained) and (start - trained).abs().max() < 0.5  # started from the classifier
    history = json.loads((folder / "history.json").read_text())
    assert all(h["phase"] == 2 and {"seg", "cls"} <= set(h) for h in history)


def test_two_stage_without_labels_and_bad_settings(tmp_path, capsys):
    from wsss.cli import main

    config = segmenter_config(tmp_path, "train.segmenter.mode=two_stage")
    with pytest.raises(ValueError, match="labels_dir=.*pseudo_labels: folder not found"):
        segmenter_of(config, progress=False)
    code = main(["train", "segmenter", "--set", f"run_dir={tmp_path / 'run'}", "--set", f"data.root={tmp_path / 'data'}",
                 "--set", "model.img_size=48", "--set", "train.segmenter.crop_size=44", "--set", "train.device=cpu",
                 "--set", "data.synth.num_images=24", "--set", "data.synth.image_size=48"])
    assert code == 2 and "crop_size=44 must be a multiple of the model's stride 8" in capsys.readouterr().err
    with pytest.raises(ValueError, match="scale_range"):
        segmenter_config(tmp_path, "train.segmenter.scale_range=[1.5, 0.5]")


def test_saliency_loss_in_training_with_folder_saliency(tmp_path):
    config = segmenter_config(tmp_path, "refine.saliency.source=folder", "train.segmenter.saliency_loss_weight=0.5",
                              "train.segmenter.steps=2", "train.segmenter.phase1_fraction=0")
    open_dataset(config.data, "train")
    write_saliency_from_masks(config.data.root)
    path = segmenter_of(config, progress=False)
    history = json.loads((path.parent / "history.json").read_text())
    assert history[-1]["saliency"] > 0 and np.isfinite(history[-1]["loss"])


def test_torchrun_two_cpu_processes(tmp_path):
    """DistributedDataParallel with gloo: 2 processes, gradient accumulation, both phases; the
    demo data set is generated by one of them."""
    overrides = [f"run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}", "data.synth.num_images=24",
                 "data.synth.image_size=48", "model.img_size=48", "model.patch_size=8", "model.embed_dim=32",
                 "model.depth=2", "model.num_heads=2", "train.device=cpu", "train.segmenter.steps=4",
                 "train.segmenter.batch_size=2", "train.segmenter.grad_accum=2", "train.segmenter.dpt.features=16",
                 "train.segmenter.threads=1", "refine.label.opening=3", "predict.flip=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "wsss", "train", "segmenter", *[a for o in overrides for a in ("--set", o)]]
    # own session: on a timeout the launcher and both workers are killed together
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun timed out:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "2 process(es) × batch 2 × 2 accumulation" in stdout
    assert stdout.count("segmenter written to") == 1  # rank 0 only
    assert "batched backward failed" not in stderr
    folder = tmp_path / "run" / "segmenter"
    state = load_checkpoint(folder / "last.pt")
    assert state["step"] == 4 and len(state["rng"]) == 2  # both processes' RNG streams
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"segmenter", "pseudo_labels"} <= set(metrics)


def test_the_single_stage_loop_refuses_a_saliency_backbone_it_would_not_use(tmp_path):
    import pytest

    config = segmenter_config(tmp_path, "refine.saliency.source=tokencut", "refine.saliency.backbone.name=vit_tiny_patch16_224")
    segmenter = create_segmenter(config.model, "dpt", config.train.segmenter.dpt, 6)
    with pytest.raises(ValueError, match="refine.saliency.backbone is not used by the single-stage loop"):
        InLoopLabeler(segmenter.backbone, config.cam.start_block, config.refine)
