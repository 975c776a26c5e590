"""``wsss init DATASET``: read a data set and write the settings for it, each size- and
count-dependent one derived by a stated rule (``wsss.steps.recipe``), printed with its reason."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

from wsss.cli.arguments import add_format_args
from wsss.config import DataConfig, load_config

VAL_FRACTION = 0.15  # the share of a folder data set without splits held out for validation


def cmd_init(args) -> int:
    from wsss.data import dataset_section
    from wsss.data.survey import survey_dataset
    from wsss.steps.recipe import apply_derived, choose_model, demo_template, derive_settings, recipe_yaml

    out = args.out or Path(f"{args.dataset.resolve().name}.yaml")
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists: choose another --out, or --force to replace it")
    data = dataset_section(DataConfig(), args.dataset, args.format, args.annotations)
    data, split_note = _with_splits(data, args)
    survey = survey_dataset(data)
    template = demo_template()
    model = choose_model(template, args.model, args.weights, allow_download=args.allow_download)
    run_dir = str(args.run_dir or Path("runs") / args.dataset.resolve().name)
    derived = derive_settings(survey, model, run_dir, template)
    header = [f"wsss init {args.dataset}: settings for this data set (edit freely).", "What the data set holds:",
              *(f"  {wrapped}" for line in survey.describe() for wrapped in textwrap.wrap(line, 104)),
              "Settings marked 'derived' follow a stated rule (wsss.steps.recipe); the others are the demo's measured",
              "recipe (configs/demo.yaml, docs/results.md). Run: wsss flow run pipeline --config THIS_FILE"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(recipe_yaml(apply_derived(template, derived), derived, header), encoding="utf-8")
    load_config(out)  # what was written validates (ConfigError naming the key otherwise)
    print("\n".join(survey.describe()))
    if split_note:
        print(split_note)
    print("\nderived settings:")
    for item in derived:
        print(f"  {item.key} = {_shown(item.value)}\n      {item.reason}")
    print(f"\nwrote {out}\nnext: wsss data check {args.dataset}{_format_args(args)}   (reads every image)\n"
          f"      wsss flow run pipeline --config {out}   (classifier, pseudo-labels, segmenter, report)")
    return 0


def _shown(value) -> str:
    return "null" if value is None else str(value)


def _format_args(args) -> str:
    return f" --format coco --annotations {args.annotations}" if args.annotations else ""


def _with_splits(data: DataConfig, args) -> tuple[DataConfig, str]:
    """The data section with its training and validation splits: VOC's train_aug (else train)
    and val; a folder's splits/train.txt and val.txt, written when it has no splits/ yet
    (VAL_FRACTION of the images, chosen with a fixed seed); COCO's JSON stems."""
    root = Path(data.root)
    if data.format == "voc":
        listed = root / "ImageSets" / "Segmentation"
        train = next((s for s in ("train_aug", "train") if (listed / f"{s}.txt").is_file()), None)
        val = "val" if (listed / "val.txt").is_file() else None
        return data.model_copy(update={"train_split": train, "val_split": val}), ""
    if data.format == "coco":
        update = {"train_split": Path(data.coco_annotations).stem}
        if args.val_annotations is not None:
            update.update(val_split=Path(args.val_annotations).stem, coco_val_annotations=args.val_annotations,
                          coco_val_root=args.val_images or root)
        return data.model_copy(update=update), ""
    splits = root / "splits"
    if (splits / "train.txt").is_file() and (splits / "val.txt").is_file():
        return data.model_copy(update={"train_split": "train", "val_split": "val"}), ""
    if splits.is_dir() and any(splits.glob("*.txt")):
        found = sorted(p.stem for p in splits.glob("*.txt"))
        raise ValueError(f"{splits}: has {found} but not train.txt and val.txt; write those two (one id a line) or "
                         "move the folder away for wsss init to write them")
    from wsss.data.folder import FolderDataset

    ids = FolderDataset(root).ids
    if len(ids) < 2:
        raise ValueError(f"{root}: {len(ids)} image(s) in tags.csv: too few to hold some out for validation")
    held = set(random.Random(0).sample(ids, max(1, round(len(ids) * VAL_FRACTION))))
    splits.mkdir(exist_ok=True)
    (splits / "train.txt").write_text("".join(f"{i}\n" for i in ids if i not in held), encoding="utf-8")
    (splits / "val.txt").write_text("".join(f"{i}\n" for i in ids if i in held), encoding="utf-8")
    note = (f"wrote {splits / 'train.txt'} ({len(ids) - len(held)} ids) and {splits / 'val.txt'} ({len(held)} ids): "
            f"{VAL_FRACTION:.0%} held out (seed 0) for the classifier's validation and the scores")
    return data.model_copy(update={"train_split": "train", "val_split": "val"}), note


def add_commands(commands) -> None:
    init = commands.add_parser(
        "init", help="read a data set and write its settings (size- and count-dependent ones derived, each with its "
                     "rule); the first command on your own data")
    init.add_argument("dataset", type=Path, help="a plain folder (images/, tags.csv, classes.txt), a VOC2012 folder, "
                                                 "or a COCO images folder (with --annotations)")
    add_format_args(init)
    init.add_argument("--val-annotations", type=Path, default=None, metavar="FILE",
                      help="COCO: the validation split's instances JSON (default: no validation split)")
    init.add_argument("--val-images", type=Path, default=None, metavar="DIR",
                      help="COCO: the folder of --val-annotations' images (default: DATASET)")
    init.add_argument("--model", default=None, metavar="NAME",
                      help="a timm ViT (e.g. deit_small_patch16_224) with its own architecture (default: the demo's "
                           "small ViT, trained from scratch)")
    init.add_argument("--weights", default=None, metavar="PATH",
                      help="pretrained weights: a file, a timm Hugging Face folder, or hf-hub:timm/NAME from the "
                           "local Hugging Face cache (the model is then named by them unless --model is given)")
    init.add_argument("--allow-download", action="store_true",
                      help="hf-hub: weights not in the local cache are downloaded (default: never)")
    init.add_argument("--out", type=Path, default=None, help="the YAML to write (default: DATASET_NAME.yaml here)")
    init.add_argument("--run-dir", type=Path, default=None, help="the run folder it names (default: runs/DATASET_NAME)")
    init.add_argument("--force", action="store_true", help="replace --out if it exists")
    init.set_defaults(func=cmd_init)
