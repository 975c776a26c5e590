"""The classifier's learning rate per optimiser step, and when its training ends.

Warm-up (linear) over the first ``warmup_epochs``, then the rate holds at ``lr`` until the decay
starts, then a cosine takes it to 0 at the end of the last epoch. Without ``decay_epochs`` the
cosine starts right after warm-up; with it, it takes the last ``decay_epochs`` epochs only.

With a plateau stop (``plateau_epochs``), the decay also starts early: when the validation mAP has
not risen by at least ``plateau_delta`` above its best for ``plateau_epochs`` epochs, the next
``decay_epochs`` epochs decay the rate and training ends after them (never after ``epochs``).
A slow start that still gains ``plateau_delta`` every few epochs is not a plateau, and neither is
a flat stretch before the best mAP reaches ``plateau_min_map`` (a slow learner's pause, not its end).

The schedule is ``torch.optim.lr_scheduler.LambdaLR``'s multiplier. Its ``state()`` (the best mAP
so far and the plateau, if one was found) goes into last.pt and ``load_state`` restores it, so a
resumed run keeps a decay that began; the settings come from the resumed run's config.
"""

from __future__ import annotations

import math


class ClassifierSchedule:
    """lr multiplier of step ``s`` (``schedule(s)``) and the epoch training ends after (``end_epoch``).

    steps_per_epoch ≥ 1; epochs: at most this many; warmup_epochs, decay_epochs: as above
    (decay_epochs None: a cosine over every epoch after warm-up; needed with plateau_epochs).
    """

    def __init__(self, steps_per_epoch: int, epochs: int, warmup_epochs: int, decay_epochs: int | None = None,
                 plateau_epochs: int | None = None, plateau_delta: float = 0.0, plateau_min_map: float = 0.0) -> None:
        if plateau_epochs is not None and decay_epochs is None:
            raise ValueError("plateau_epochs needs decay_epochs: the epochs of decay that follow the plateau")
        self.steps_per_epoch, self.epochs, self.warmup_epochs = steps_per_epoch, epochs, warmup_epochs
        self.decay_epochs, self.plateau_epochs, self.plateau_delta = decay_epochs, plateau_epochs, plateau_delta
        self.plateau_min_map = plateau_min_map
        self.best, self.best_epoch = -math.inf, 0
        self._plateau(None)

    def _plateau(self, epoch: int | None) -> None:
        """Where the decay starts and training ends, with a plateau found after ``epoch`` (or none)."""
        self.plateau_epoch = epoch  # the epoch after which a plateau started the decay
        if epoch is None:
            self.end_epoch = self.epochs
            self.decay_start_epoch = (self.warmup_epochs if self.decay_epochs is None
                                      else max(self.warmup_epochs, self.epochs - self.decay_epochs))
        else:
            self.decay_start_epoch, self.end_epoch = epoch, min(self.epochs, epoch + self.decay_epochs)

    def state(self) -> dict:
        """What a resumed run needs (plain numbers, for last.pt)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "plateau_epoch": self.plateau_epoch}

    def load_state(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self._plateau(state["plateau_epoch"])

    def __call__(self, step: int) -> float:
        warmup = self.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        decay_start, end = self.decay_start_epoch * self.steps_per_epoch, self.end_epoch * self.steps_per_epoch
        if step < decay_start:
            return 1.0
        progress = (step - decay_start) / max(1, end - decay_start)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def after_epoch(self, epoch: int, val_map: float) -> str | None:
        """Record epoch ``epoch``'s (1-based) validation mAP; returns a line to print when a
        plateau has just started the decay, else None."""
        if val_map > self.best + self.plateau_delta:  # slow gains add up: each is measured from this best
            self.best, self.best_epoch = val_map, epoch
        if (self.plateau_epochs is None or self.plateau_epoch is not None or epoch < self.warmup_epochs
                or epoch >= self.decay_start_epoch or epoch - self.best_epoch < self.plateau_epochs
                or self.best < self.plateau_min_map):
            return None
        self._plateau(epoch)
        return (f"val mAP plateau: {self.plateau_epochs} epochs without a gain of {self.plateau_delta:g} over "
                f"epoch {self.best_epoch}'s {self.best:.3f}; the learning rate decays over epochs "
                f"{epoch + 1}-{self.end_epoch} and training ends there (train.classifier.plateau_epochs; "
                f"at most {self.epochs} epochs)")
