"""Classifier recipes side by side: validation mAP per epoch and seconds, on the demo data and
its colour-free variant (issue 14: one default recipe that learns both).

    python benchmarks/classifier_recipes.py --out /tmp/recipes \
        --recipe "demo=" \
        --recipe "stem+1=model.conv_stem_extra=1 train.classifier.epochs=30" \
        --data demo colour-free

Each recipe is NAME=OVERRIDES (space-separated KEY=VALUE on top of configs/demo.yaml); each
runs ``train_classifier`` from scratch in this process, one after the other, on the same
cached data sets (OUT/data_demo, OUT/data_colour-free). Prints one line per recipe and data
set: final and best val mAP, the epoch of the best, seconds of training; the per-epoch
history stays in OUT/<data>/<recipe>/classifier/history.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsss.config import load_config  # noqa: E402
from wsss.layout import RunLayout  # noqa: E402
from wsss.steps.classifier_step import train_classifier  # noqa: E402
from wsss.train.run_control import RunControl  # noqa: E402

DATA = {"demo": "data.synth.colour_cue=true", "colour-free": "data.synth.colour_cue=false"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipe", action="append", required=True, help="NAME=KEY=VALUE KEY=VALUE ...")
    parser.add_argument("--data", nargs="+", choices=sorted(DATA), default=["colour-free"])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    rows = []
    for data in args.data:
        for recipe in args.recipe:
            name, _, overrides = recipe.partition("=")
            sets = [f"run_dir={args.out / data / name}", f"data.root={args.out / f'data_{data}'}", DATA[data],
                    *overrides.split()]
            if args.threads:
                sets.append(f"train.classifier.threads={args.threads}")
            config = load_config(args.config, sets)
            started = time.perf_counter()
            files = RunLayout(config.run_dir).classifier
            train_classifier(config, RunControl(restart=True, progress=False))
            seconds = time.perf_counter() - started
            history = json.loads(files.history.read_text())
            best = max(history, key=lambda e: e["val_mAP"])
            rows.append((data, name, history[-1]["val_mAP"], best["val_mAP"], best["epoch"], len(history), seconds))
            print(f"== {data:11s} {name:20s} final mAP {rows[-1][2]:.3f}  best {best['val_mAP']:.3f} (epoch "
                  f"{best['epoch']}/{len(history)})  {seconds:.0f} s", flush=True)
    print("\n| data | recipe | val mAP (last epoch) | best (epoch) | training s |\n|---|---|---|---|---|")
    for data, name, final, best, epoch, epochs, seconds in rows:
        print(f"| {data} | {name} | {final:.3f} | {best:.3f} ({epoch}/{epochs}) | {seconds:.0f} |")


if __name__ == "__main__":
    main()
