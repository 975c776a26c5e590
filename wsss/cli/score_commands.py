"""``wsss evaluate``, ``wsss report``, ``wsss export``: scoring labels, the stage table and its
report, and labels out to annotation tools."""

from __future__ import annotations

from pathlib import Path

from wsss.cli.arguments import DATASET_HELP, add_config_args, add_dataset_args, classifier_command, command_config

ALL_METHODS = "getam,attention,rollout,relevance,gradcam"


def cmd_evaluate(args) -> int:
    from wsss.steps.evaluate_step import evaluate_folder

    evaluate_folder(command_config(args), args.pred, args.split, json_path=args.json, require_predictions=True)
    return 0


def cmd_report(args) -> int:
    from wsss.steps.report_step import report

    report(command_config(args), args.checkpoint, args.split, args.out, args.methods.split(","), labels=args.labels)
    return 0


def cmd_export(args) -> int:
    from wsss.steps.export_step import export_labels

    export_labels(command_config(args), args.labels, args.split, args.out, per=args.per, min_area=args.min_area,
                  boxes_only=args.boxes_only, review=args.review)
    return 0


def add_commands(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="score label PNGs (or raw maps) against a data set's masks")
    evaluate.add_argument("--pred", type=Path, required=True,
                          help="folder of <id>.png label maps, or a wsss cam output (maps/*.npz: threshold sweep)")
    add_dataset_args(evaluate)
    evaluate.add_argument("--json", type=Path, default=None, help="also write the scores as JSON")
    add_config_args(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    export = commands.add_parser("export", help="label PNGs → a COCO instances JSON (RLE masks) for annotation tools")
    export.add_argument("labels", type=Path, help="folder of <id>.png label maps (pseudo-labels, predictions)")
    add_dataset_args(export)
    export.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    export.add_argument("--per", choices=["region", "class"], default="region",
                        help="one annotation per 8-connected region of a class (default) or per class and image")
    export.add_argument("--min-area", type=int, default=0, metavar="PIXELS",
                        help="leave out segments of fewer pixels (default 0: none)")
    export.add_argument("--boxes-only", action="store_true",
                        help="no segmentation, boxes and areas only (for importers that read no RLE)")
    export.add_argument("--review", type=int, default=None, metavar="N",
                        help="only the N least confident labels (the review queue of the folder's manifest): the "
                             "images to correct, their pseudo-labels as pre-annotations; the corrected JSON goes back "
                             "in as train.segmenter.corrections")
    add_config_args(export)
    export.set_defaults(func=cmd_export)

    report = classifier_command(commands, "report", "stage table of GETAM and the baselines, and the HTML report",
                                "output folder (report.html, report.json)", cmd_report,
                                dataset_help="a data set with masks; " + DATASET_HELP)
    report.add_argument("--methods", default=ALL_METHODS,
                        help="comma-separated map methods (default: GETAM and all baselines)")
    report.add_argument("--labels", type=Path, default=None,
                        help="a wsss pseudo-label folder of this data set: also OUT/review.html, its least confident "
                             "labels first (report.review_images)")
