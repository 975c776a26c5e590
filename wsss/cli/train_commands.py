"""``wsss train classifier`` and ``wsss train segmenter``: the two trainings, each resuming its
run's last.pt."""

from __future__ import annotations

import os

from wsss.cli.arguments import add_config_args, command_config
from wsss.layout import RunLayout


def cmd_train_classifier(args) -> int:
    from wsss.steps.classifier_step import train_classifier
    from wsss.train.run_control import RunControl

    path = train_classifier(command_config(args), RunControl(restart=args.restart))
    print(f"classifier written to {path}")
    return 0


def cmd_train_segmenter(args) -> int:
    from wsss.steps.segmenter_step import score_segmenter, train_segmenter
    from wsss.train.run_control import RunControl

    config = command_config(args)
    path = train_segmenter(config, RunControl(restart=args.restart, stop_after=args.stop_after))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"segmenter written to {path}")
    if path == RunLayout(config.run_dir).segmenter(config.train.segmenter.mode).final:  # finished, not stopped early
        score_segmenter(config, path)
    return 0


def add_commands(commands) -> None:
    train = commands.add_parser("train", help="train the tag classifier or a segmenter")
    train_commands = train.add_subparsers(dest="train_command", required=True)
    classifier = train_commands.add_parser("classifier", help="train the ViT classifier from image tags")
    add_config_args(classifier)
    classifier.add_argument("--restart", action="store_true", help="ignore RUN/classifier/last.pt and start over")
    classifier.set_defaults(func=cmd_train_classifier)
    segmenter = train_commands.add_parser(
        "segmenter", help="train the segmenter (head: train.segmenter.head): single stage (double backward) or on "
                          "pseudo-labels (two stage)")
    add_config_args(segmenter)
    segmenter.add_argument("--restart", action="store_true",
                           help="ignore RUN/segmenter/last.pt (two stage: RUN/segmenter_two_stage) and start over")
    segmenter.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                           help="stop (with a checkpoint) once this many steps are done; run again to resume")
    segmenter.set_defaults(func=cmd_train_segmenter)
