"""The ``wsss`` command line. Each subcommand is a thin layer over the package's functions.

    wsss data synth  [--out DIR] [--config F] [--set K=V ...]   write the demo data set
    wsss data check  DATASET [--split S] [--strict]             read everything, report, exit 1 on errors
    wsss config show [--config F] [--set K=V ...]               print the effective config as YAML
    wsss train classifier [--config F] [--set K=V ...] [--restart]  train the ViT from tags
    wsss demo        [--out DIR]                                the main job on the demo data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wsss.config import ConfigError, config_to_yaml, load_config
from wsss.data import DatasetError, detect_format, open_dataset
from wsss.data.folder import FolderDataset
from wsss.data.voc import VocDataset
from wsss.models.classifier import PretrainedWeightsError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config file (default: built-in defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting, e.g. --set refine.pamr.iterations=5 (repeatable)",
    )


def _config(args):
    return load_config(args.config, args.overrides)


def cmd_config_show(args) -> int:
    print(config_to_yaml(_config(args)), end="")
    return 0


def cmd_data_synth(args) -> int:
    from wsss.data.synth import generate_synth_dataset

    config = _config(args)
    out = args.out or config.data.root
    s = config.data.synth
    root = generate_synth_dataset(
        out, num_images=s.num_images, image_size=s.image_size, val_fraction=s.val_fraction, seed=s.seed
    )
    print(f"wrote {s.num_images} images ({s.image_size}×{s.image_size}, seed {s.seed}) to {root}")
    return 0


def cmd_data_check(args) -> int:
    from wsss.data.check import check_dataset

    fmt = args.format if args.format != "auto" else detect_format(args.dataset)
    if fmt == "voc":
        dataset = VocDataset(args.dataset, split=args.split)
    else:
        dataset = FolderDataset(args.dataset, split=args.split)
    report = check_dataset(dataset, progress=not args.quiet)
    for item in report.problems:
        print(item)
    if report.problems:
        print()
    print(f"data set: {args.dataset} ({fmt}{', split ' + args.split if args.split else ''})")
    print(report.summary())
    ok = report.ok(strict=args.strict)
    print("\nOK" if ok else f"\nFAILED: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return 0 if ok else 1


def cmd_train_classifier(args) -> int:
    from wsss.train.classifier import train_classifier

    path = train_classifier(_config(args), restart=args.restart)
    print(f"classifier written to {path}")
    return 0


def cmd_demo(args) -> int:
    """The main job on the built-in demo data: generate, check."""
    from wsss.data.check import check_dataset

    overrides = [f"run_dir={args.out}", f"data.root={args.out / 'data'}", *args.overrides]
    config = load_config(args.config, overrides)
    for split in (config.data.train_split, config.data.val_split):
        dataset = open_dataset(config.data, split)
        report = check_dataset(dataset)
        print(f"\n== demo data set {config.data.root}, split {split} ==")
        print(report.summary())
        if not report.ok():
            for item in report.problems:
                print(item)
            return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsss", description="Weakly supervised segmentation from image tags.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="data sets: generate the demo set, check a data set")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    synth = data_commands.add_parser("synth", help="write the built-in demo data set (plain folder format)")
    synth.add_argument("--out", type=Path, default=None, help="output folder (default: data.root of the config)")
    _add_config_args(synth)
    synth.set_defaults(func=cmd_data_synth)
    check = data_commands.add_parser("check", help="read every image, tag and mask; report problems and a summary")
    check.add_argument("dataset", type=Path, help="a VOC2012 folder or a plain folder data set")
    check.add_argument("--format", choices=["auto", "voc", "folder"], default="auto")
    check.add_argument("--split", default=None, help="only this split (default: every image)")
    check.add_argument("--strict", action="store_true", help="warnings count as errors")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=cmd_data_check)

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the effective configuration as YAML")
    _add_config_args(show)
    show.set_defaults(func=cmd_config_show)

    train = commands.add_parser("train", help="train the tag classifier or a segmenter")
    train_commands = train.add_subparsers(dest="train_command", required=True)
    classifier = train_commands.add_parser("classifier", help="train the ViT classifier from image tags")
    _add_config_args(classifier)
    classifier.add_argument("--restart", action="store_true", help="ignore RUN/classifier/last.pt and start over")
    classifier.set_defaults(func=cmd_train_classifier)

    demo = commands.add_parser("demo", help="run the main job end to end on the built-in demo data")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    _add_config_args(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DatasetError, PretrainedWeightsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
