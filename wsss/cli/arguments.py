"""What every command shares: the settings (``--config``, ``--set``), the data set
(``--dataset``, ``--format``, ``--annotations``, ``--split``), and the line a folder-writing
command ends with."""

from __future__ import annotations

import argparse
from pathlib import Path

from wsss.config import MAX_SCALE, Config, check_scales, load_config
from wsss.data import FORMATS, dataset_section
from wsss.data.dataset_walk import MANIFEST
from wsss.layout import RunLayout

DATASET_HELP = ("a VOC2012 folder, a plain folder data set, or a COCO images folder (with --annotations); "
                "default: the data section of the config")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config file (default: built-in defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting, e.g. --set refine.pamr.iterations=5 (repeatable)",
    )


def add_format_args(parser: argparse.ArgumentParser) -> None:
    """--format and --annotations: how a command's DATASET or --dataset is opened (``dataset_config``)."""
    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="the data set's format (default auto: coco with --annotations, else voc or folder "
                             "as the folder's layout says)")
    parser.add_argument("--annotations", type=Path, default=None, metavar="FILE",
                        help="COCO: the instances JSON of the images in the data set folder (one split: "
                             "--split, if given, must be the JSON's stem)")


def add_dataset_args(parser: argparse.ArgumentParser, dataset_help: str = DATASET_HELP) -> None:
    """--dataset (with --format, --annotations) and --split."""
    parser.add_argument("--dataset", type=Path, default=None, help=dataset_help)
    add_format_args(parser)
    parser.add_argument("--split", default=None, help="only this split (default: every image)")


def classifier_command(commands, name: str, help: str, out_help: str, func,
                       dataset_help: str = DATASET_HELP) -> argparse.ArgumentParser:
    """A command that runs a trained classifier over a data set: --checkpoint, the data set,
    --out and the settings; the caller adds its own options to the parser returned."""
    parser = commands.add_parser(name, help=help)
    parser.add_argument("--checkpoint", type=Path, required=True, help="classifier.pt from wsss train classifier")
    add_dataset_args(parser, dataset_help)
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    add_config_args(parser)
    parser.set_defaults(func=func)
    return parser


def command_config(args: argparse.Namespace) -> Config:
    """The settings of a command: --config (or the built-in defaults) with --set; a data set given
    on the command line (--dataset, --format, --annotations) replaces the data section's
    (``wsss.data.dataset_section``: every other data setting still applies). A command given a
    --checkpoint and no --config uses the settings of the run that made the checkpoint
    (RUN/config.yaml) and says so."""
    config = _settings(args)
    path = getattr(args, "dataset", None)
    fmt, annotations = getattr(args, "format", "auto"), getattr(args, "annotations", None)
    if path is None and fmt == "auto" and annotations is None:
        return config
    return config.model_copy(update={"data": dataset_section(config.data, path, fmt, annotations)})


def _settings(args: argparse.Namespace) -> Config:
    path = args.config
    checkpoint = getattr(args, "checkpoint", None)
    if path is None and checkpoint is not None:
        stored = RunLayout(Path(checkpoint).resolve().parent.parent).config
        if stored.is_file():
            print(f"settings: {stored}, the run that made {checkpoint} (--config chooses others)")
            return _relocated(load_config(stored, args.overrides), stored.parent, args.overrides)
        print(f"settings: the built-in defaults (no --config, and no config.yaml in the run folder of "
              f"{checkpoint})")
    return load_config(path, args.overrides)


def _relocated(config: Config, run: Path, overrides: list[str] | None) -> Config:
    """A run's stored settings used from anywhere: its relative paths (run_dir, data.root,
    data.saliency_dir, data.coco_*) were relative to the folder it ran in, which is where ``run`` sits
    (``run`` ends with run_dir); they become absolute. Paths given with --set stay as given."""
    recorded = Path(config.run_dir)
    parts = recorded.parts
    run = run.resolve()
    if recorded.is_absolute() or not parts or tuple(run.parts[-len(parts):]) != parts:
        return config  # moved or renamed: the stored paths are the best there is
    base = Path(*run.parts[:-len(parts)])
    given = {override.split("=", 1)[0].strip() for override in overrides or []}

    def moved(key: str, value: Path | None) -> Path | None:
        return base / value if value is not None and not Path(value).is_absolute() and key not in given else value

    data = config.data.model_copy(update={key: moved(f"data.{key}", getattr(config.data, key)) for key in (
        "root", "saliency_dir", "coco_annotations", "coco_val_annotations", "coco_val_root")})
    return config.model_copy(update={"run_dir": moved("run_dir", config.run_dir), "data": data})


def report_counts(what: str, out: Path, counts: dict, details: str = "") -> int:
    """Print what a folder-writing command did ("written / already there / failed") and return
    its exit status: 0, or 1 when an image failed."""
    redone = f" ({counts['redone']} redone: their input changed)" if counts.get("redone") else ""
    print(f"{what} in {out}: {counts['ok']} written{redone}, {counts['skipped']} already there, {counts['failed']} "
          f"failed (see {out / MANIFEST}){details}")
    return 0 if counts["failed"] == 0 else 1


def scales_arg(text: str) -> list[float]:
    """'0.75,1,1.25' → [0.75, 1.0, 1.25]; argparse error for anything else (and for a scale
    outside 0 < s <= MAX_SCALE: nan, inf, 1e6, 0, negative)."""
    expected = f"comma-separated numbers with 0 < scale <= {MAX_SCALE:g}, e.g. 0.75,1,1.25"
    try:
        return check_scales([float(part) for part in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}") from None
