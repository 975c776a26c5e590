"""RUN/config.yaml: the settings a run was made with, written when a run or a training command
starts; a command given ``--checkpoint RUN/...`` and no ``--config`` reads them back."""

from __future__ import annotations

import os

from wsss.config import Config, config_to_yaml
from wsss.files import write_text
from wsss.layout import RunLayout

__all__ = ["record_settings"]


def record_settings(config: Config) -> None:
    """Write ``config`` to RUN/config.yaml (under torchrun: by rank 0 only)."""
    if int(os.environ.get("RANK", "0")) == 0:
        write_text(RunLayout(config.run_dir).config, config_to_yaml(config))
