"""``wsss data synth``, ``wsss data check``, ``wsss config show``, ``wsss weights inspect``:
data sets, settings and weights, before anything is trained."""

from __future__ import annotations

import argparse
from pathlib import Path

from wsss.cli.arguments import DATASET_HELP, add_config_args, add_format_args, command_config
from wsss.config import config_to_yaml, load_config


def cmd_config_show(args) -> int:
    print(config_to_yaml(command_config(args)), end="")
    return 0


def cmd_data_synth(args) -> int:
    from wsss.data.synth import generate_synth_dataset

    config = command_config(args)
    s = config.data.synth
    root = generate_synth_dataset(args.out or config.data.root, s)
    size = f"{s.image_size}×{s.image_size}" if s.aspect is None else \
        f"longer side {s.image_size}, width/height {s.aspect[0]:g}-{s.aspect[1]:g}"
    print(f"wrote {s.num_images} images ({size}, seed {s.seed}{'' if s.colour_cue else ', no colour cue'}) to {root}")
    return 0


def cmd_data_check(args) -> int:
    from wsss.data import open_dataset
    from wsss.eval.check import check_dataset, check_splits

    config = command_config(args)
    report = check_dataset(open_dataset(config.data, args.split), progress=not args.quiet)
    report.problems += [problem for problem in check_splits(config.data) if problem not in report.problems]
    for item in report.problems:
        print(item)
    if report.problems:
        print()
    print(f"data set: {args.dataset} ({config.data.format}{', split ' + args.split if args.split else ''})")
    print(report.summary())
    ok = report.ok(strict=args.strict)
    print("\nOK" if ok else f"\nFAILED: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return 0 if ok else 1


def _inspected_model(args):
    """The model section ``wsss weights inspect`` checks against: with --model, timm's own
    architecture of NAME (patch size, width, depth, heads; no conv stem); without, the model
    section of --config or the defaults (what training builds); --set on top either way."""
    architecture = []
    if args.model is not None:
        architecture = [f"model.name={args.model}", "model.conv_stem=null",
                        *(f"model.{key}=null" for key in ("patch_size", "embed_dim", "depth", "num_heads"))]
    return load_config(args.config, architecture + args.overrides).model


def cmd_weights_inspect(args) -> int:
    from wsss.models.classifier import create_classifier
    from wsss.models.weights import inspect_weights

    model_config = _inspected_model(args)
    # a one-class head: training replaces the head of another class count anyway
    model = create_classifier(model_config.model_copy(update={"pretrained": None}), num_classes=1)
    weights = inspect_weights(model, args.path, allow_download=model_config.allow_download)
    print(f"layout: {weights.describe()}")
    print(f"tensors: {weights.tensors}   parameters: {weights.parameters:,}")
    for note in weights.notes:
        print(f"note: {note}")
    grid = model.patch_embed.grid_size
    print(f"model: {model_config.name} (width {model.embed_dim}, depth {len(model.blocks)}, {model_config.img_size} px: "
          f"a {grid[0]}×{grid[1]} token grid)")
    if weights.problems:
        print("\nDOES NOT FIT:\n" + "\n".join(f"  {problem}" for problem in weights.problems))
        return 1
    print("\nOK: the weights fit the model")
    return 0


def add_commands(commands) -> None:
    data = commands.add_parser("data", help="data sets: generate the demo set, check a data set")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    synth = data_commands.add_parser("synth", help="write the built-in demo data set (plain folder format)")
    synth.add_argument("--out", type=Path, default=None, help="output folder (default: data.root of the config)")
    add_config_args(synth)
    synth.set_defaults(func=cmd_data_synth)
    check = data_commands.add_parser("check", help="read every image, tag and mask; report problems and a summary")
    check.add_argument("dataset", type=Path, help=DATASET_HELP.split("; default")[0])
    add_format_args(check)
    check.add_argument("--split", default=None, help="only this split (default: every image)")
    check.add_argument("--strict", action="store_true", help="warnings count as errors")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_args(check)
    check.set_defaults(func=cmd_data_check)

    weights = commands.add_parser("weights", help="pretrained weights for model.pretrained")
    weights_commands = weights.add_subparsers(dest="weights_command", required=True)
    inspect = weights_commands.add_parser(
        "inspect", help="the layout of a weights file, folder or hf-hub:ORG/NAME, and whether it fits the model "
                        "(exit 1 if not); trains nothing")
    inspect.add_argument("path", help="a weights file (.pth/.safetensors/.npz), a timm Hugging Face folder, or "
                                      "hf-hub:ORG/NAME (local Hugging Face cache)")
    inspect.add_argument("--model", default=None, metavar="NAME",
                         help="timm model name, with its own architecture (default: the model section of the config)")
    add_config_args(inspect)
    inspect.set_defaults(func=cmd_weights_inspect)

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the effective configuration as YAML")
    add_config_args(show)
    show.set_defaults(func=cmd_config_show)
