"""``python -m flows``: run a flow once, or serve the inbox flow on its schedule.

    python -m flows run pipeline [--config F] [--set K=V ...]
    python -m flows run pseudo-labels --param out_dir=runs/labels [--config F] [--set K=V ...]
    python -m flows serve [--config F] [--set K=V ...] [--start-server] [--port 4200]

Without PREFECT_API_URL a run uses Prefect's temporary local server. ``serve`` needs a real
server: the one at PREFECT_API_URL, or with ``--start-server`` a local one on 127.0.0.1 that
stops when serving stops (``make serve``). PREFECT_HOME defaults to ./.state/prefect and
telemetry is off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from wsss.orchestration.server import offline_defaults

FLOWS = {
    "pipeline": ("flows.pipeline", "pipeline"),
    "pseudo-labels": ("flows.pseudo_labels", "pseudo_labels"),
    "train-classifier": ("flows.training", "train_classifier"),
    "train-segmenter": ("flows.training", "train_segmenter"),
    "evaluate": ("flows.evaluate", "evaluate"),
    "label-inbox": ("flows.inbox", "label_inbox"),
}


def _params(pairs: list[str]) -> dict:
    """['name=value', ...] → {name: value parsed as YAML}."""
    import yaml

    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE, e.g. out_dir=runs/labels")
        params[name] = yaml.safe_load(value) if value else None
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows", description="wsss Prefect flows")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one flow once")
    run.add_argument("flow", choices=sorted(FLOWS))
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="another flow parameter besides config (e.g. out_dir=..., checkpoint=...)")
    serve = commands.add_parser("serve", help="serve label-inbox on flow.inbox's schedule until interrupted")
    serve.add_argument("--start-server", action="store_true", help="start a local Prefect server (127.0.0.1) first")
    serve.add_argument("--port", type=int, default=4200, help="port of the local server (default 4200)")
    for sub in (run, serve):
        sub.add_argument("--config", type=Path, default=None, help="YAML config file (default: built-in defaults)")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override one setting, e.g. --set flow.task_runner=dask (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    offline_defaults()
    import importlib

    from wsss.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
        if args.command == "run":
            module, name = FLOWS[args.flow]
            flow = getattr(importlib.import_module(module), name)
            result = flow(config=config, **_params(args.param))
            print(result)
            return 0
        from flows.inbox import serve_inbox

        if not args.start_server:
            serve_inbox(config)
            return 0
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from wsss.orchestration.server import LocalServer

        home = Path(os.environ["PREFECT_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        with LocalServer(port=args.port, log=home / "server.log") as server:
            print(f"Prefect server at {server.ui_url} (UI), log {home / 'server.log'}; serving label-inbox, "
                  "Ctrl-C stops both")
            os.environ["PREFECT_API_URL"] = server.api_url  # for the flow runs the runner starts
            with temporary_settings({PREFECT_API_URL: server.api_url}):
                serve_inbox(config)
        return 0
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
