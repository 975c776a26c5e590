"""Training the tag classifier: multi-label soft-margin loss on image-level tags.

Each epoch trains on ``data.train_split`` with augmentation, then reports mAP and per-class
F1 on ``data.val_split``; the learning rate follows ``wsss.train.classifier_schedule`` (with
``plateau_epochs``, a validation plateau starts the decay and ends training early). After each
epoch ``RUN/classifier/last.pt`` is written atomically; a new run with the same config resumes
from it. At the end ``RUN/classifier/classifier.pt``
holds the final weights, the config and the class names (the file ``wsss cam`` loads).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from wsss.config import ClassifierTrainConfig, DataConfig, ModelConfig
from wsss.data import Dataset, open_dataset
from wsss.data.tensors import image_to_tensor, resize_image
from wsss.eval.classification import multilabel_metrics
from wsss.files import write_json
from wsss.layout import ClassifierFiles
from wsss.models.checkpoint import classifier_checkpoint, load_checkpoint, resolve_device, save_checkpoint
from wsss.models.classifier import create_classifier
from wsss.precision import autocast_dtype, describe_precision, explicit_attention_for_training, mixed_precision
from wsss.progress import RateMeter, format_rate, progress_line
from wsss.train.classifier_schedule import ClassifierSchedule
from wsss.train.run_control import RunControl
from wsss.train.augment import augment


class TaggedImages(torch.utils.data.Dataset):
    """A wsss Dataset as (3×S×S normalised float tensor, C float multi-hot) pairs.

    train=True applies ``augment`` with a generator seeded by (seed, epoch, index), so an
    epoch's augmentation is the same after a resume. Decoded images are kept in memory.
    """

    def __init__(self, dataset: Dataset, size: int, train: bool, seed: int = 0):
        self.dataset, self.size, self.train, self.seed = dataset, size, train, seed
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index not in self._cache:
            sample = self.dataset.load(self.dataset.ids[index], masks=False)
            self._cache[index] = (sample.image, sample.tags)
        image, tags = self._cache[index]
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image = augment(image, self.size, rng)
        else:
            image = resize_image(image, self.size)
        return image_to_tensor(image), torch.from_numpy(tags)


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader: DataLoader, device: torch.device, autocast=nullcontext) -> dict:
    """mAP / per-class F1 of ``model`` on ``loader`` (see wsss.eval.classification); autocast:
    a context factory (``wsss.precision.mixed_precision``'s, or none)."""
    model.eval()
    scores, targets = [], []
    for images, tags in loader:
        with autocast():
            logits = model(images.to(device))
        scores.append(torch.sigmoid(logits.float()).cpu())
        targets.append(tags)
    return multilabel_metrics(torch.cat(scores).numpy(), torch.cat(targets).numpy())


def train_classifier(data: DataConfig, model_config: ModelConfig, settings: ClassifierTrainConfig, device: str,
                     files: ClassifierFiles, control: RunControl = RunControl()) -> Path:
    """Train (or resume) the classifier of the ``model`` section on ``data``'s splits with the
    ``train.classifier`` settings on ``device`` (``train.device``); writes ``files``
    (``RunLayout.classifier``) and returns classifier.pt. An epoch trains on full batches
    (the last, incomplete one is dropped); a training split smaller than
    ``train.classifier.batch_size`` is trained as one batch of all its images a step (a line
    says so), never as no batch at all.

    control: restart (ignore last.pt), progress (tqdm's bar per epoch), on_progress(done, total,
    stats): called after each epoch (done and total in epochs; stats: ``line``, the epoch's loss,
    val_mAP, mean_F1, images_per_s, and seconds_left, elapsed_s), once more when a plateau ends
    training early (``line`` and ``plateau``; total becomes the new last epoch) and once at the
    start of a resumed run (None: the line is printed). ``stop_after`` is refused: the classifier
    stops only at its end or on its plateau (``train.classifier.plateau_epochs``).
    """
    if control.stop_after is not None:
        raise ValueError("stop_after: the classifier trains whole epochs to the end; it has no early stop")
    report = control.on_progress or (lambda done, total, stats: print(stats["line"]))
    restart, progress = control.restart, control.progress
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(device)
    run = files
    train_set = open_dataset(data, data.train_split)
    if not len(train_set):
        raise ValueError(f"{data.root}: no images in the training split {data.train_split!r}: nothing to train on")
    batch_size = min(settings.batch_size, len(train_set))  # full batches only (drop_last): at least one
    val_set = open_dataset(data, data.val_split)
    classes = train_set.classes
    torch.manual_seed(settings.seed)
    model = create_classifier(model_config, len(classes)).to(device)

    train_data = TaggedImages(train_set, model_config.img_size, train=True, seed=settings.seed)
    val_loader = DataLoader(
        TaggedImages(val_set, model_config.img_size, train=False),
        batch_size=settings.batch_size, num_workers=settings.num_workers,
    )
    steps_per_epoch = len(train_data) // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = ClassifierSchedule(steps_per_epoch, settings.epochs, settings.warmup_epochs, settings.decay_epochs,
                                  settings.plateau_epochs, settings.plateau_delta, settings.plateau_min_map)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step))  # its state: last.pt's 'schedule'
    autocast, scaler = mixed_precision(device, settings.amp)
    print(f"classifier training: {describe_precision(device, settings.amp)}")
    if explicit_attention_for_training(model, device, autocast_dtype(device, settings.amp)):
        print("classifier training: explicit attention (faster than the fused kernel's bfloat16 backward on a CPU)")
    if batch_size < settings.batch_size:
        print(f"classifier training: {len(train_set)} training images, fewer than train.classifier.batch_size="
              f"{settings.batch_size}: each step trains on all {batch_size} of them")
    identity = {"model": model_config.model_dump(mode="json"), "classes": classes}
    start_epoch, history = 0, []
    if run.last.is_file() and not restart:
        state = load_checkpoint(run.last)
        if state["identity"] != identity:
            raise ValueError(
                f"{run.last} was written for another model or class list; "
                "use --restart to start over (the old checkpoint is replaced)"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "schedule" in state:  # last.pt written before the plateau stop has none: no plateau yet
            schedule.load_state(state["schedule"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        report(start_epoch, schedule.end_epoch, {"line": f"resuming from {run.last} after epoch {start_epoch}",
                                                 "resumed": True})

    meter = RateMeter(schedule.end_epoch, start_epoch)

    epoch = start_epoch
    while epoch < schedule.end_epoch:  # end_epoch moves earlier when a plateau starts the decay
        train_data.epoch = epoch
        loader = DataLoader(
            train_data, batch_size=batch_size, shuffle=True, drop_last=True,
            num_workers=settings.num_workers, generator=torch.Generator().manual_seed(settings.seed * 1000 + epoch),
        )
        model.train()
        started, seen, total_loss = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{schedule.end_epoch}", unit="batch", disable=not progress, leave=False)
        for images, tags in bar:
            images, tags = images.to(device), tags.to(device)
            with autocast():
                logits = model(images)
            loss = F.multilabel_soft_margin_loss(logits.float(), tags)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seen += images.shape[0]
            total_loss += loss.item() * images.shape[0]
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - started):.1f}")
        metrics = evaluate_classifier(model, val_loader, device, autocast)
        entry = {
            "epoch": epoch + 1, "loss": total_loss / max(seen, 1), "val_mAP": metrics["mAP"],
            "val_F1": metrics["F1"], "val_AP": metrics["AP"], "val_prevalence": metrics["prevalence"],
            "images_per_s": seen / (time.perf_counter() - started),
        }
        history.append(entry)
        plateau = schedule.after_epoch(epoch + 1, metrics["mAP"])
        if plateau is not None:
            entry["plateau"] = plateau
            meter.total = schedule.end_epoch
        save_checkpoint(run.last, {
            "identity": identity, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "schedule": schedule.state(), "scaler": scaler.state_dict(),
            "epoch": epoch, "history": history,
        })
        write_json(run.history, history)
        _, left = meter.read(epoch + 1)  # whole epochs, validation and checkpoint included
        line = progress_line("epoch", epoch + 1, schedule.end_epoch,
                             [f"loss {entry['loss']:.4f}", f"val mAP {metrics['mAP']:.3f}",
                              f"mean F1 {metrics['mean_F1']:.3f}"], [format_rate(entry["images_per_s"], "img")], left)
        report(epoch + 1, schedule.end_epoch, {"line": line, "loss": entry["loss"], "val_mAP": metrics["mAP"],
                                               "mean_F1": metrics["mean_F1"], "images_per_s": entry["images_per_s"],
                                               "seconds_left": left, "elapsed_s": meter.elapsed()})
        if plateau is not None:
            report(epoch + 1, schedule.end_epoch, {"line": plateau, "plateau": True})
        epoch += 1

    if history:
        last = history[-1]
        per_class = "  ".join(f"{name} {f1:.2f}" for name, f1 in zip(classes, last["val_F1"]))
        print(f"final val mAP {last['val_mAP']:.3f}; per-class F1: {per_class}")
    if start_epoch < schedule.end_epoch or not run.final.is_file():  # a finished run keeps its file (and digest)
        save_checkpoint(run.final, classifier_checkpoint(model, model_config, classes, history))
    return run.final
