"""The ``wsss`` command line. Each subcommand is a thin layer over the package's functions.

    wsss data synth  [--out DIR] [--config F] [--set K=V ...]   write the demo data set
    wsss data check  DATASET [--split S] [--strict]             read everything, report, exit 1 on errors
                     [--format coco --annotations F]           (every --dataset takes these too)
    wsss config show [--config F] [--set K=V ...]               print the effective config as YAML
    wsss weights inspect PATH [--model NAME] [--set K=V ...]    layout of pretrained weights; exit 1 if they do not fit
    wsss train classifier [--config F] [--set K=V ...] [--restart]  train the ViT from tags
    wsss train segmenter  [--config F] [--set K=V ...] [--restart]  the segmenter (train.segmenter.head), single or two stage
    wsss predict --checkpoint F --images DIR --out DIR         segmenter → palette PNGs
    wsss cam --checkpoint F --dataset D --out DIR [--method M]  maps + overlays for every image
    wsss evaluate --pred DIR --dataset D [--split S] [--json F] score labels or raw maps
    wsss export LABELS --dataset D --out F.json [--per region|class]  label PNGs → COCO instances JSON
    wsss pseudo-label --checkpoint F --dataset D --out DIR     the whole chain → label PNGs
    wsss report --checkpoint F --dataset D --out DIR           stage table + report.html
    wsss saliency --checkpoint F --dataset D --out DIR         built-in TokenCut saliency maps
    wsss demo        [--out DIR]                                the pipeline flow on the demo data (configs/demo.yaml)
    wsss flow run NAME [--param K=V ...]                        run one Prefect flow once (pipeline, pseudo-labels, ...)
    wsss flow serve  [--start-server] [--port 4200]             serve label-inbox on its schedule

Every command that reads settings takes ``--config FILE`` and ``--set key.path=value``; a bad
setting, data set, checkpoint or input prints ``error: ...`` naming it and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import get_args

from wsss.config import CamConfig, Config, DataConfig, config_to_yaml, load_config
from wsss.data import DatasetError, detect_format, open_dataset
from wsss.data.folder import FolderDataset
from wsss.data.voc import VocDataset
from wsss.layout import RunLayout

MAP_METHOD_NAMES = get_args(CamConfig.model_fields["method"].annotation)  # getam and the baselines


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="YAML config file (default: built-in defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting, e.g. --set refine.pamr.iterations=5 (repeatable)",
    )


DATASET_HELP = "a VOC2012 folder, a plain folder data set, or a COCO images folder (with --annotations)"


def _add_format_args(parser: argparse.ArgumentParser) -> None:
    """--format and --annotations: how every command that reads a data set (DATASET or
    --dataset) opens it (``_dataset_of``)."""
    parser.add_argument("--format", choices=["auto", "voc", "folder", "coco"], default="auto",
                        help="the data set's format (default auto: coco with --annotations, else voc or folder "
                             "as the folder's layout says)")
    parser.add_argument("--annotations", type=Path, default=None, metavar="FILE",
                        help="COCO: the instances JSON of the images in the data set folder (one split: "
                             "--split, if given, must be the JSON's stem)")


def _add_classifier_run_args(parser: argparse.ArgumentParser, out_help: str,
                             dataset_help: str = DATASET_HELP) -> None:
    """--checkpoint, --dataset (with --format, --annotations), --split and --out: the arguments
    of every command that runs a trained classifier over a data set."""
    parser.add_argument("--checkpoint", type=Path, required=True, help="classifier.pt from wsss train classifier")
    parser.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    _add_format_args(parser)
    parser.add_argument("--split", default=None, help="only this split (default: every image)")
    parser.add_argument("--out", type=Path, required=True, help=out_help)


def _config(args):
    """The settings of a command: --config (or the built-in defaults) with --set. A command given
    a --checkpoint and no --config uses the settings of the run that made the checkpoint
    (RUN/config.yaml, written when a pipeline run or a `wsss train` command starts) and says so."""
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


def cmd_config_show(args) -> int:
    print(config_to_yaml(_config(args)), end="")
    return 0


def cmd_data_synth(args) -> int:
    from wsss.data.synth import generate_synth_dataset

    config = _config(args)
    out = args.out or config.data.root
    s = config.data.synth
    root = generate_synth_dataset(out, num_images=s.num_images, image_size=s.image_size, val_fraction=s.val_fraction,
                                  seed=s.seed, colour_cue=s.colour_cue, object_size=s.object_size,
                                  distractors=s.distractors)
    print(f"wrote {s.num_images} images ({s.image_size}×{s.image_size}, seed {s.seed}"
          f"{'' if s.colour_cue else ', no colour cue'}) to {root}")
    return 0


def cmd_data_check(args) -> int:
    from wsss.eval.check import check_dataset

    fmt = _dataset_format(args)
    dataset = _dataset_arg(args.dataset, args.split, fmt, data=_config(args).data, annotations=args.annotations)
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


def cmd_train_classifier(args) -> int:
    from wsss.train.classifier_training import train_classifier

    from wsss.files import write_text

    config = _config(args)
    run = RunLayout(config.run_dir)
    write_text(run.config, config_to_yaml(config))  # what `--checkpoint RUN/...` without --config uses
    path = train_classifier(config.data, config.model, config.train.classifier, config.train.device,
                            run.classifier, restart=args.restart)
    print(f"classifier written to {path}")
    return 0


def cmd_train_segmenter(args) -> int:
    from wsss.steps.segmenter_step import backbone_init, labels_dir, score_segmenter
    from wsss.steps.self_training_saliency import saliency_config
    from wsss.train.segmenter_training import train_segmenter

    config = _config(args)
    if config.train.segmenter.mode == "single_stage":  # the in-loop labels use the saliency
        config = saliency_config(config, require=True)
    run, settings = RunLayout(config.run_dir), config.train.segmenter
    files = run.segmenter(settings.mode)
    if int(os.environ.get("RANK", "0")) == 0:
        from wsss.files import write_text

        write_text(run.config, config_to_yaml(config))  # what `wsss predict --checkpoint RUN/...` without --config uses
    path = train_segmenter(config.data, config.model, settings, config.cam, config.refine, config.train.device, files,
                           init=backbone_init(settings.init, run), labels_dir=labels_dir(settings, run),
                           restart=args.restart, stop_after=args.stop_after)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"segmenter written to {path}")
    if path == files.final:
        score_segmenter(path, config.data, config.predict, config.cam, config.refine, settings.mode, config.train.device,
                        files)
    return 0


def cmd_predict(args) -> int:
    from wsss.data.image_folder import ImageFolder
    from wsss.models.checkpoint import load_segmenter, resolve_device
    from wsss.steps.provenance import claim_output_dir, prediction_source
    from wsss.steps.worker_cache import checkpoint_digest
    from wsss.predict import Predictor
    from wsss.writers.prediction_pngs import predict_dataset

    config = _config(args)
    settings = config.predict
    scales = settings.scales if args.scales is None else args.scales
    flip = settings.flip if args.flip is None else args.flip
    crf = config.refine.crf if (settings.crf if args.crf is None else args.crf) else None
    segmenter, classes, _ = load_segmenter(args.checkpoint, resolve_device(config.train.device))
    images = ImageFolder(args.images, classes).limit_size(config.data.max_side, config.data.oversize)
    claim_output_dir(args.out, prediction_source(checkpoint_digest(args.checkpoint), scales, flip, crf, config.data))
    counts = predict_dataset(Predictor(segmenter, scales, flip), images, args.out, crf=crf,
                             batch_size=settings.batch_size)
    print(f"predictions in {args.out}: {counts['ok']} written, {counts['skipped']} already there, {counts['failed']} "
          f"failed (see {args.out / 'manifest.jsonl'}); scales {scales}, flip {flip}, CRF {crf is not None}; "
          f"labels 0 background, {', '.join(f'{i + 1} {c}' for i, c in enumerate(classes))}")
    return 0 if counts["failed"] == 0 else 1


def _scales_arg(text: str) -> list[float]:
    """'0.75,1,1.25' → [0.75, 1.0, 1.25]; argparse error for anything else."""
    try:
        scales = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive numbers, e.g. 0.75,1,1.25")
    if any(s <= 0 for s in scales):
        raise argparse.ArgumentTypeError(f"{text!r}: scales must be positive")
    return scales


def cmd_cam(args) -> int:
    from wsss.attention import configured_map_method
    from wsss.writers.attention_maps import write_dataset_maps

    from wsss.steps.provenance import claim_output_dir, maps_source
    from wsss.steps.worker_cache import checkpoint_digest

    config, device, model, dataset = _classifier_and_dataset(args)
    method_name = args.method or config.cam.method
    method = configured_map_method(config.cam, method_name)
    claim_output_dir(args.out, maps_source(checkpoint_digest(args.checkpoint), config.cam, method_name, config.data))
    counts = write_dataset_maps(model, method, dataset, args.out, batch_size=config.cam.batch_size, device=device,
                                overlays=not args.no_overlays)
    print(f"{method_name} maps in {args.out}: {counts['ok']} written, {counts['skipped']} already there, "
          f"{counts['failed']} failed (see {args.out / 'manifest.jsonl'})")
    return 0 if counts["failed"] == 0 else 1


def _dataset_format(args) -> str:
    """The format of the data set of a command line: --format, or with auto coco when
    --annotations is given, else the folder's detected format. ValueError for --format coco
    without --annotations, or --annotations with another format."""
    fmt, annotations = getattr(args, "format", "auto"), getattr(args, "annotations", None)
    if annotations is not None:
        if fmt not in ("auto", "coco"):
            raise ValueError(f"--annotations {annotations} is for --format coco, not --format {fmt}")
        return "coco"
    if fmt == "coco":
        raise ValueError(f"--format coco needs --annotations FILE: the instances JSON of the images in {args.dataset}")
    return detect_format(args.dataset) if fmt == "auto" else fmt


def _dataset_of(args, data: DataConfig | None = None):
    """The data set of a command's DATASET/--dataset, --split, --format and --annotations."""
    return _dataset_arg(args.dataset, args.split, _dataset_format(args), data, getattr(args, "annotations", None))


def _dataset_arg(path: Path, split: str | None, fmt: str | None = None, data: DataConfig | None = None,
                 annotations: Path | None = None):
    """A data set given on the command line: ``fmt`` (voc, folder or coco), or its detected format;
    data: the ``data`` section whose saliency_dir (None: DATASET/saliency; COCO: none), size limit
    (max_side, oversize) and coco_min_area apply (None: the defaults). COCO: ``path`` is the images
    folder, ``annotations`` the JSON, one split named after its stem (``split`` None or that)."""
    data = data or DataConfig()
    fmt = fmt or detect_format(path)
    if fmt == "coco":
        from wsss.data.coco import CocoDataset

        if annotations is None:
            raise ValueError(f"{path}: a COCO data set needs its instances JSON (--annotations FILE)")
        dataset = CocoDataset(path, annotations, min_area=data.coco_min_area, saliency_dir=data.saliency_dir,
                              unannotated=data.coco_unannotated)
        if split is not None and split != dataset.split:
            raise DatasetError(f"--split {split}: a COCO set is one split per annotations file, here "
                               f"{dataset.split!r} ({annotations}); give that split's --annotations instead")
    elif fmt == "voc":
        dataset = VocDataset(path, split=split, saliency_dir=data.saliency_dir)
    else:
        dataset = FolderDataset(path, split=split, saliency_dir=data.saliency_dir)
    return dataset.limit_size(data.max_side, data.oversize)


def cmd_evaluate(args) -> int:
    import json

    from wsss.eval.evaluate import evaluate_label_dir, sweep_map_thresholds

    dataset = _dataset_of(args)
    if (args.pred / "maps").is_dir() and not any(args.pred.glob("*.png")):
        result, curve = sweep_map_thresholds(args.pred / "maps", dataset)
        print("background threshold sweep (raw maps): " +
              "  ".join(f"{t:.2f}:{100 * v:.1f}" for t, v in curve.items()))
    else:
        result = evaluate_label_dir(args.pred, dataset)
    print(result.summary(dataset.classes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_dict(dataset.classes), indent=1))
    return 0


def cmd_export(args) -> int:
    """Label PNGs → a COCO instances JSON (``wsss.data.coco_export``), written atomically; with
    --split, only that split's images are exported (labels of the data set's other images are
    skipped, a label of an image not in the data set is still an error)."""
    from wsss.data.coco_export import coco_summary, labels_to_coco, write_coco

    whole = _dataset_of(argparse.Namespace(**{**vars(args), "split": None}))
    ids = _dataset_of(args).ids if args.split is not None else None
    coco = labels_to_coco(args.labels, whole, per=args.per, min_area=args.min_area, ids=ids,
                          boxes_only=args.boxes_only)
    path = write_coco(args.out, coco)
    print(coco_summary(coco))
    print(f"\nwrote {path}; its file names are relative to data_path: {coco['info']['wsss']['images_root']}")
    return 0


def cmd_saliency(args) -> int:
    from wsss.models.checkpoint import load_classifier, resolve_device
    from wsss.steps.provenance import claim_output_dir, saliency_maps_source
    from wsss.steps.worker_cache import checkpoint_digest
    from wsss.refine.saliency import saliency_source
    from wsss.writers.saliency_pngs import write_saliency_maps

    config = _config(args)
    objects = args.objects if args.objects is not None else config.refine.saliency.tokencut_objects
    if objects < 1:
        print(f"error: --objects {objects}: expected at least 1", file=sys.stderr)
        return 2
    settings = config.refine.saliency.model_copy(update={"source": "tokencut", "tokencut_objects": objects})
    device = resolve_device(config.train.device)
    dataset = _dataset_of(args, data=config.data)
    # TokenCut on refine.saliency.backbone when set (the classifier is then not used), else on the classifier
    model = load_classifier(args.checkpoint, device)[0] if settings.backbone is None else None
    source = saliency_source(settings, model=model, device=device)
    digest = None if model is None else checkpoint_digest(args.checkpoint)
    claim_output_dir(args.out, saliency_maps_source(digest, settings, objects, config.data))
    counts = write_saliency_maps(source, dataset, args.out, batch_size=config.cam.batch_size, device=device)
    print(f"{source.name} saliency in {args.out}: {counts['ok']} written, {counts['skipped']} already there, "
          f"{counts['failed']} failed (see {args.out / 'manifest.jsonl'})")
    return 0 if counts["failed"] == 0 else 1


def _classifier_and_dataset(args):
    """(config, device, model, dataset) for commands that take --checkpoint and --dataset. With
    ``refine.saliency.source: segmenter`` the config reads the run's self-training maps as a
    saliency folder (``wsss.steps.self_training_saliency.saliency_config``)."""
    from wsss.models.checkpoint import load_classifier, resolve_device
    from wsss.steps.self_training_saliency import saliency_config

    config = saliency_config(_config(args), require=True)
    device = resolve_device(config.train.device)
    model, classes, _ = load_classifier(args.checkpoint, device)
    dataset = _dataset_of(args, data=config.data)
    if dataset.classes != classes:
        raise DatasetError(f"{args.dataset}: classes {dataset.classes} differ from the checkpoint's {classes}")
    return config, device, model, dataset


def cmd_pseudo_label(args) -> int:
    from wsss.eval.evaluate import evaluate_label_dir
    from wsss.files import write_json
    from wsss.refine.chain import offline_labeler
    from wsss.refine.crf import crf_executor
    from wsss.writers.label_pngs import write_pseudo_labels

    from wsss.steps.provenance import claim_output_dir, label_source
    from wsss.steps.worker_cache import checkpoint_digest

    config, _, model, dataset = _classifier_and_dataset(args)
    cam = config.cam.model_copy(update={"method": args.method}) if args.method else config.cam
    # the flows' rule: a folder keeps labels of one checkpoint and one set of settings (source.json)
    claim_output_dir(args.out, label_source(cam, config.refine, config.data, checkpoint_digest(args.checkpoint)))
    with crf_executor(config.refine.crf if config.refine.crf.enabled else None) as executor:  # one pool per run
        labeler = offline_labeler(model, cam, config.refine, dataset, executor=executor)
        counts = write_pseudo_labels(labeler, dataset, args.out, batch_size=cam.batch_size, save_maps=args.save_maps)
    print(f"pseudo-labels in {args.out}: {counts['ok']} written, {counts['skipped']} already there, "
          f"{counts['failed']} failed (see {args.out / 'manifest.jsonl'}); saliency: {labeler.saliency.name}")
    if any(dataset.mask_path(i) is not None for i in dataset.ids[:1]):
        result = evaluate_label_dir(args.out, dataset, progress=False)
        print(result.summary(dataset.classes))
        write_json(args.out / "evaluation.json", result.to_dict(dataset.classes))
    return 0 if counts["failed"] == 0 else 1


def cmd_report(args) -> int:
    from wsss.attention.views import describe_views
    from wsss.eval.review import review_queue
    from wsss.steps.report_step import stage_table_report
    from wsss.report.build import ReviewPage

    config, _, _, dataset = _classifier_and_dataset(args)
    refine = config.refine
    notes = [f"data set: {args.dataset}, split {args.split or 'all'}",
             f"checkpoint: {args.checkpoint}",
             describe_views(config.cam),
             f"saliency source: {refine.saliency.source}",
             f"label rule: alpha {refine.label.alpha}, tau {refine.label.tau}, "
             f"conflict {refine.label.conflict}, opening {refine.label.opening}; "
             f"PAMR {refine.pamr.iterations} iterations, dilations {refine.pamr.dilations}"]
    review = None
    if args.labels is not None:
        if not args.labels.is_dir():
            raise DatasetError(f"--labels {args.labels}: folder not found (a wsss pseudo-label output folder)")
        maps = args.labels / "maps"
        review = ReviewPage(review_queue(args.labels, dataset, count=config.report.review_images), dataset,
                            args.labels, maps if maps.is_dir() else None, args.out / "review.html")
    stage_table_report(args.checkpoint, dataset, config.cam, refine, args.methods.split(","), config.train.device,
                       args.out / "report.json", args.out / "report.html", "wsss: pseudo-label stages", notes,
                       stage_images=config.report.stage_images, config=config.model_dump(mode="json"), progress=True,
                       review=review)
    return 0


DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"  # beside the package


def cmd_demo(args) -> int:
    """The main job on the built-in demo data: generate and check the data, then the
    ``pipeline`` flow (on a temporary local Prefect server unless PREFECT_API_URL is set).
    Everything, the data included, lives in ``--out``."""
    from wsss.eval.check import check_dataset
    from flows.prefect_server import offline_defaults

    offline_defaults()  # before Prefect is imported: state in ./.state/prefect, telemetry off
    run = RunLayout(args.out)
    overrides = [f"run_dir={run.root}", f"data.root={run.data}", *args.overrides]
    if args.config is None and not DEMO_CONFIG.is_file():
        raise ValueError(f"the demo's settings {DEMO_CONFIG} are not beside this wsss installation (it was not "
                       "installed from a checkout); pass them with --config configs/demo.yaml")
    config_path = args.config or DEMO_CONFIG
    config = load_config(config_path, overrides)
    for split in (config.data.train_split, config.data.val_split):
        dataset = open_dataset(config.data, split)
        report = check_dataset(dataset)
        print(f"\n== demo data set {config.data.root}, split {split} ==")
        print(report.summary())
        if not report.ok():
            for item in report.problems:
                print(item)
            return 1
    from flows.prefect_server import ensure_api_server

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
    config = _config(args)
    params = {"config": config, **_flow_params(args.param)}
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
    config = _config(args)
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
    check.add_argument("dataset", type=Path, help=DATASET_HELP)
    _add_format_args(check)
    check.add_argument("--split", default=None, help="only this split (default: every image)")
    check.add_argument("--strict", action="store_true", help="warnings count as errors")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_args(check)
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
    _add_config_args(inspect)
    inspect.set_defaults(func=cmd_weights_inspect)

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
    segmenter = train_commands.add_parser(
        "segmenter", help="train the segmenter (head: train.segmenter.head): single stage (double backward) or on pseudo-labels (two stage)")
    _add_config_args(segmenter)
    segmenter.add_argument("--restart", action="store_true",
                           help="ignore RUN/segmenter/last.pt (two stage: RUN/segmenter_two_stage) and start over")
    segmenter.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                           help="stop (with a checkpoint) once this many steps are done; run again to resume")
    segmenter.set_defaults(func=cmd_train_segmenter)

    predict = commands.add_parser("predict", help="segment images with a trained segmenter → palette PNGs")
    predict.add_argument("--checkpoint", type=Path, required=True, help="segmenter.pt from wsss train segmenter")
    predict.add_argument("--images", type=Path, required=True, help="folder of images (any sizes)")
    predict.add_argument("--out", type=Path, required=True, help="output folder (<stem>.png, manifest.jsonl)")
    predict.add_argument("--scales", type=_scales_arg, default=None, help="comma-separated input scales, e.g. 0.75,1,1.25 "
                         "(default: predict.scales)")
    predict.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                         help="average the mirrored input too (default: predict.flip)")
    predict.add_argument("--crf", action=argparse.BooleanOptionalAction, default=None,
                         help="dense CRF on the averaged probabilities (default: predict.crf; kernels: refine.crf)")
    _add_config_args(predict)
    predict.set_defaults(func=cmd_predict)

    cam = commands.add_parser("cam", help="attention maps (GETAM or a baseline) for every image of a data set")
    _add_classifier_run_args(cam, "output folder (maps/, overlays/, manifest.jsonl)")
    cam.add_argument("--method", choices=MAP_METHOD_NAMES, default=None,
                     help="map method (default: cam.method of the config)")
    cam.add_argument("--no-overlays", action="store_true", help="write the .npz maps only")
    _add_config_args(cam)
    cam.set_defaults(func=cmd_cam)

    evaluate = commands.add_parser("evaluate", help="score label PNGs (or raw maps) against a data set's masks")
    evaluate.add_argument("--pred", type=Path, required=True,
                          help="folder of <id>.png label maps, or a wsss cam output (maps/*.npz: threshold sweep)")
    evaluate.add_argument("--dataset", type=Path, required=True, help=DATASET_HELP)
    _add_format_args(evaluate)
    evaluate.add_argument("--split", default=None, help="only this split (default: every image)")
    evaluate.add_argument("--json", type=Path, default=None, help="also write the scores as JSON")
    evaluate.set_defaults(func=cmd_evaluate)

    export = commands.add_parser("export", help="label PNGs → a COCO instances JSON (RLE masks) for annotation tools")
    export.add_argument("labels", type=Path, help="folder of <id>.png label maps (pseudo-labels, predictions)")
    export.add_argument("--dataset", type=Path, required=True, help=DATASET_HELP)
    _add_format_args(export)
    export.add_argument("--split", default=None,
                        help="only the labels of this split's images (those of other images are skipped)")
    export.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    export.add_argument("--per", choices=["region", "class"], default="region",
                        help="one annotation per 8-connected region of a class (default) or per class and image")
    export.add_argument("--min-area", type=int, default=0, metavar="PIXELS",
                        help="leave out segments of fewer pixels (default 0: none)")
    export.add_argument("--boxes-only", action="store_true",
                        help="no segmentation, boxes and areas only (for importers that read no RLE)")
    export.set_defaults(func=cmd_export)

    saliency = commands.add_parser("saliency", help="built-in TokenCut saliency maps (0/255 PNGs) for a data set")
    _add_classifier_run_args(saliency, "output folder (<id>.png, manifest.jsonl)")
    saliency.add_argument("--objects", type=int, default=None,
                          help="objects per image, MaskCut-style (default: refine.saliency.tokencut_objects)")
    _add_config_args(saliency)
    saliency.set_defaults(func=cmd_saliency)

    pseudo = commands.add_parser("pseudo-label", help="maps → PAMR → saliency/label rule → CRF → label PNGs")
    _add_classifier_run_args(pseudo, "output folder (<id>.png, manifest.jsonl)")
    pseudo.add_argument("--method", choices=MAP_METHOD_NAMES, default=None)
    pseudo.add_argument("--save-maps", action="store_true", help="also write the refined maps as maps/<id>.npz")
    _add_config_args(pseudo)
    pseudo.set_defaults(func=cmd_pseudo_label)

    report = commands.add_parser("report", help="stage table of GETAM and the baselines, and the HTML report")
    _add_classifier_run_args(report, "output folder (report.html, report.json)", dataset_help="a data set with masks")
    report.add_argument("--methods", default="getam,attention,rollout,relevance,gradcam",
                        help="comma-separated map methods (default: GETAM and all baselines)")
    report.add_argument("--labels", type=Path, default=None,
                        help="a wsss pseudo-label folder of this data set: also OUT/review.html, its least confident "
                             "labels first (report.review_images)")
    _add_config_args(report)
    report.set_defaults(func=cmd_report)

    demo = commands.add_parser("demo", help="run the main job end to end on the built-in demo data")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    _add_config_args(demo)
    demo.set_defaults(func=cmd_demo)

    flow = commands.add_parser("flow", help="Prefect flows: run one once, or serve the inbox on its schedule")
    flow_commands = flow.add_subparsers(dest="flow_command", required=True)
    from flows import FLOWS  # the registry only (no Prefect import)

    run = flow_commands.add_parser("run", help="run one flow once (Prefect's temporary server unless "
                                               "PREFECT_API_URL is set)")
    run.add_argument("flow", choices=sorted(FLOWS))
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="another flow parameter besides config (e.g. out_dir=..., checkpoint=...; YAML values)")
    _add_config_args(run)
    run.set_defaults(func=cmd_flow_run)
    serve = flow_commands.add_parser("serve", help="serve label-inbox on flow.inbox's schedule until interrupted")
    serve.add_argument("--start-server", action="store_true", help="start a local Prefect server (127.0.0.1) first")
    serve.add_argument("--port", type=int, default=4200, help="port of the local server (default 4200)")
    _add_config_args(serve)
    serve.set_defaults(func=cmd_flow_serve)
    return parser


_FOLDER_WRITERS = (cmd_predict, cmd_cam, cmd_saliency, cmd_pseudo_label)  # commands that fill --out with files


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.func in _FOLDER_WRITERS:  # one run at a time per output folder
            from wsss.lifetime import hold_folder

            with hold_folder(args.out):
                return args.func(args)
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:  # ConfigError, DatasetError, PretrainedWeightsError, ...
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (PermissionError, IsADirectoryError, NotADirectoryError) as error:  # e.g. a read-only output folder
        print(f"error: cannot write or read {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from wsss.lifetime import INTERRUPTED

        print("\ninterrupted: finished outputs are kept, the same command finishes the rest", file=sys.stderr)
        return INTERRUPTED


def run(prefix: tuple[str, ...] = ()) -> None:
    """The ``wsss`` command (and ``python -m wsss``; ``python -m flows`` with prefix
    ``("flow",)``): :func:`main` on ``prefix`` + the command line, with Ctrl-C that stops within
    seconds (``wsss.lifetime.stop_soon_after_interrupt``) and freed memory kept for reuse
    (``wsss.allocator.keep_freed_memory``)."""
    from wsss.allocator import keep_freed_memory
    from wsss.lifetime import stop_soon_after_interrupt

    stop_soon_after_interrupt()
    keep_freed_memory()
    sys.exit(main([*prefix, *sys.argv[1:]]))


if __name__ == "__main__":
    run()
