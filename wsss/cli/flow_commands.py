"""``wsss demo``, ``wsss flow run``, ``wsss flow serve``: the Prefect flows from the shell. The
command line sits above the flows: it imports them, they never import it."""

from __future__ import annotations

import os
from pathlib import Path

from wsss.cli.arguments import add_config_args, command_config
from wsss.config import load_config
from wsss.layout import RunLayout
from wsss.steps.recipe import DEMO_CONFIG



def cmd_demo(args) -> int:
    """The main job on the built-in demo data: generate and check the data, then the
    ``pipeline`` flow (on a temporary local Prefect server unless PREFECT_API_URL is set).
    Everything, the data included, lives in ``--out``."""
    from flows.prefect_server import ensure_api_server, offline_defaults
    from wsss.data import open_dataset
    from wsss.eval.check import check_dataset

    offline_defaults()  # before Prefect is imported: state in ./.state/prefect, telemetry off
    run = RunLayout(args.out)
    overrides = [f"run_dir={run.root}", f"data.root={run.data}", *args.overrides]
    if args.config is None and not DEMO_CONFIG.is_file():
        raise ValueError(f"the demo's settings {DEMO_CONFIG} are not beside this wsss installation (it was not "
                         "installed from a checkout); pass them with --config configs/demo.yaml")
    config = load_config(args.config or DEMO_CONFIG, overrides)
    for split in (config.data.train_split, config.data.val_split):
        report = check_dataset(open_dataset(config.data, split))
        print(f"\n== demo data set {config.data.root}, split {split} ==")
        print(report.summary())
        if not report.ok():
            for item in report.problems:
                print(item)
            return 1
    ensure_api_server(log=Path(os.environ["PREFECT_HOME"]) / "temporary-server.log")
    from flows import load_flow

    summary = load_flow("pipeline")(config)
    print(f"\nreport: {summary['report_html']} (machine-readable: {summary['report_json']}); "
          f"segmenter mIoU {summary['segmenter_mIoU']:.1f} %, pseudo-labels mIoU {summary['pseudo_labels_mIoU']:.1f} % "
          f"(training split), {summary['seconds']:.0f} s")
    return 0


def _flow_params(pairs: list[str]) -> dict:
    """['name=value', ...] → {name: value parsed as YAML}."""
    import yaml

    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE, e.g. out_dir=runs/labels")
        params[name] = yaml.safe_load(value) if value else None
    return params


def cmd_flow_run(args) -> int:
    """Run one flow once with the config (``--config/--set``) and any other parameters, checked
    against the flow's signature before a server is started."""
    from flows import flow_parameters
    from flows.prefect_server import ensure_api_server, offline_defaults

    offline_defaults()
    params = {"config": command_config(args), **_flow_params(args.param)}
    signature = flow_parameters(args.flow)
    unknown = sorted(set(params) - set(signature))
    missing = [name for name, required in signature.items() if required and name not in params]
    if unknown or missing:
        names = ", ".join(name for name in signature if name != "config")
        problem = f"unknown parameter(s) {', '.join(unknown)}" if unknown else f"missing --param {missing[0]}=..."
        raise ValueError(f"flow {args.flow}: {problem}; its parameters besides config: {names}")
    ensure_api_server(log=Path(os.environ["PREFECT_HOME"]) / "temporary-server.log")  # before Prefect's import
    from flows import load_flow

    print(load_flow(args.flow)(**params))
    return 0


def cmd_flow_serve(args) -> int:
    """Serve label-inbox on ``flow.inbox``'s schedule (on PREFECT_API_URL's server, or with
    ``--start-server`` a local one on 127.0.0.1 that stops with it)."""
    from flows.prefect_server import offline_defaults

    offline_defaults()
    config = command_config(args)
    from flows.label_inbox import serve_inbox

    if not args.start_server:
        serve_inbox(config)
        return 0
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.prefect_server import LocalServer

    home = Path(os.environ["PREFECT_HOME"])
    with LocalServer(port=args.port, log=home / "server.log") as server:
        print(f"Prefect server at {server.ui_url} (UI), log {home / 'server.log'}; serving label-inbox, "
              "Ctrl-C stops both")
        os.environ["PREFECT_API_URL"] = server.api_url  # for the flow runs the runner starts
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            serve_inbox(config)
    return 0


def add_commands(commands) -> None:
    from flows import FLOWS  # the registry only (no Prefect import)

    demo = commands.add_parser("demo", help="run the main job end to end on the built-in demo data")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    add_config_args(demo)
    demo.set_defaults(func=cmd_demo)

    flow = commands.add_parser("flow", help="Prefect flows: run one once, or serve the inbox on its schedule")
    flow_commands = flow.add_subparsers(dest="flow_command", required=True)
    run = flow_commands.add_parser("run", help="run one flow once (Prefect's temporary server unless "
                                               "PREFECT_API_URL is set)")
    run.add_argument("flow", choices=sorted(FLOWS))
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="another flow parameter besides config (e.g. out_dir=..., checkpoint=...; YAML values)")
    add_config_args(run)
    run.set_defaults(func=cmd_flow_run)
    serve = flow_commands.add_parser("serve", help="serve label-inbox on flow.inbox's schedule until interrupted")
    serve.add_argument("--start-server", action="store_true", help="start a local Prefect server (127.0.0.1) first")
    serve.add_argument("--port", type=int, default=4200, help="port of the local server (default 4200)")
    add_config_args(serve)
    serve.set_defaults(func=cmd_flow_serve)
