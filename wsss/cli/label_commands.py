"""``wsss cam``, ``wsss saliency``, ``wsss pseudo-label``, ``wsss predict``: the commands that fill
an output folder with one file per image (each a step of ``wsss.steps``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from wsss.cli.arguments import add_config_args, classifier_command, command_config, report_counts, scales_arg
from wsss.config import CamConfig

MAP_METHOD_NAMES = get_args(CamConfig.model_fields["method"].annotation)  # getam and the baselines


def cmd_cam(args) -> int:
    from wsss.steps.maps_step import write_maps

    config = command_config(args)
    method = args.method or config.cam.method
    counts = write_maps(config, args.checkpoint, args.split, args.out, method=method, overlays=not args.no_overlays)
    return report_counts(f"{method} maps", args.out, counts)


def cmd_saliency(args) -> int:
    from wsss.steps.maps_step import write_saliency

    name, counts = write_saliency(command_config(args), args.checkpoint, args.split, args.out, objects=args.objects)
    return report_counts(f"{name} saliency", args.out, counts)


def cmd_pseudo_label(args) -> int:
    from wsss.steps.labels_step import pseudo_label

    config = command_config(args)
    if args.method:
        config = config.model_copy(update={"cam": config.cam.model_copy(update={"method": args.method})})
    summary = pseudo_label(config, args.checkpoint, args.split, args.out, save_maps=args.save_maps)
    saliency = summary.get("saliency", config.refine.saliency.source)  # the source's name when it labelled
    return report_counts("pseudo-labels", args.out, summary, f"; saliency: {saliency}")


def cmd_predict(args) -> int:
    from wsss.models.checkpoint import read_classes
    from wsss.steps.predict_step import predict_images

    config = command_config(args)
    chosen = {key: value for key, value in (("scales", args.scales), ("flip", args.flip), ("crf", args.crf))
              if value is not None}
    if args.guided_radius is not None:
        chosen["guided_filter"] = config.predict.guided_filter.model_copy(update={"radius": args.guided_radius})
    config = config.model_copy(update={"predict": config.predict.model_copy(update=chosen)})
    counts = predict_images(config, args.checkpoint, args.images, args.out)
    settings, classes = config.predict, read_classes(args.checkpoint)
    return report_counts("predictions", args.out, counts,
                         f"; scales {settings.scales}, flip {settings.flip}, guided filter radius "
                         f"{settings.guided_filter.radius} tokens, CRF {settings.crf}; labels 0 background, "
                         + ", ".join(f"{i + 1} {c}" for i, c in enumerate(classes)))


def add_commands(commands) -> None:
    predict = commands.add_parser("predict", help="segment images with a trained segmenter → palette PNGs")
    predict.add_argument("--checkpoint", type=Path, required=True, help="segmenter.pt from wsss train segmenter")
    predict.add_argument("--images", type=Path, required=True, help="folder of images (any sizes)")
    predict.add_argument("--out", type=Path, required=True, help="output folder (<stem>.png, manifest.jsonl)")
    predict.add_argument("--scales", type=scales_arg, default=None, help="comma-separated input scales, e.g. "
                         "0.75,1,1.25 (default: predict.scales)")
    predict.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                         help="average the mirrored input too (default: predict.flip)")
    predict.add_argument("--guided-radius", type=float, default=None, metavar="TOKENS",
                         help="guided filter on the averaged probabilities, window radius in segmenter tokens (0: off; "
                              "default: predict.guided_filter.radius; the demo's 3.5)")
    predict.add_argument("--crf", action=argparse.BooleanOptionalAction, default=None,
                         help="dense CRF on the averaged probabilities (default: predict.crf; kernels: refine.crf)")
    add_config_args(predict)
    predict.set_defaults(func=cmd_predict)

    cam = classifier_command(commands, "cam", "attention maps (GETAM or a baseline) for every image of a data set",
                             "output folder (maps/, overlays/, manifest.jsonl)", cmd_cam)
    cam.add_argument("--method", choices=MAP_METHOD_NAMES, default=None,
                     help="map method (default: cam.method of the config)")
    cam.add_argument("--no-overlays", action="store_true", help="write the .npz maps only")

    saliency = classifier_command(commands, "saliency", "built-in TokenCut saliency maps (0/255 PNGs) for a data set",
                                  "output folder (<id>.png, manifest.jsonl)", cmd_saliency)
    saliency.add_argument("--objects", type=int, default=None,
                          help="objects per image, MaskCut-style (default: refine.saliency.tokencut_objects)")

    pseudo = classifier_command(commands, "pseudo-label", "maps → PAMR → saliency/label rule → CRF → label PNGs",
                                "output folder (<id>.png, manifest.jsonl)", cmd_pseudo_label)
    pseudo.add_argument("--method", choices=MAP_METHOD_NAMES, default=None)
    pseudo.add_argument("--save-maps", action="store_true", help="also write the refined maps as maps/<id>.npz")
