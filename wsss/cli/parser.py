"""The ``wsss`` argument parser: one group of subcommands per module of this package."""

from __future__ import annotations

import argparse

from wsss.cli import data_commands, flow_commands, init_command, label_commands, score_commands, train_commands

GROUPS = (init_command, data_commands, train_commands, label_commands, score_commands, flow_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsss", description="Weakly supervised segmentation from image tags.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(commands)
    return parser
