"""Mean batch fill of the data set walks on a mix of image sizes (issue 16, item 1; issue 31, item 5).

    python benchmarks/batch_fill.py --images 1000 --batch-size 8 [--sizes voc|photos] [--stride 16]

Writes IMAGES tiny-content JPEGs in random order at sizes drawn like PASCAL VOC's (``voc``: about
half 500×375, a fifth 375×500, a tenth 500×333, the rest spread between 300 and 500 on each side)
or like a folder of one's own photos (``photos``: the longer side 224, width/height drawn in
[0.6, 1.6] in log space, as ``data.synth.aspect`` draws them), then batches them three ways: as
the pseudo-labels do (``same_size_batches`` grouped by the model's input size at ``--stride``),
by exact size (every other walk), and as a walk that cuts a batch at every change of size would.
Prints the mean images per batch of each, the share of full batches and the share of images
that are in a full batch.

``--time N`` also times ``write_pseudo_labels`` on the first N images, batched by input size and
by exact size, interleaved A/B/A/B (``--repeats`` pairs), with ``configs/demo.yaml``'s model
(random weights, ``model.img_size`` 224 for ``photos``), views, PAMR, rule and CRF (its pool of
``refine.crf.workers``); images of gradients and shapes so the CRF has edges. Prints each
pass's seconds and the median ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsss.data.batching import same_size_batches  # noqa: E402
from wsss.data.folder import FolderDataset, write_folder_dataset_index  # noqa: E402
from wsss.models.vit_geometry import model_input_size  # noqa: E402


def voc_like_sizes(count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(H, W) of ``count`` images: 50 % 375×500, 20 % 500×375, 10 % 333×500, 20 % anything in 300..500."""
    sizes = []
    for draw in rng.random(count):
        if draw < 0.5:
            sizes.append((375, 500))
        elif draw < 0.7:
            sizes.append((500, 375))
        elif draw < 0.8:
            sizes.append((333, 500))
        else:
            sizes.append((int(rng.integers(300, 501)), int(rng.integers(300, 501))))
    return sizes


def photo_like_sizes(count: int, rng: np.random.Generator, side: int = 224) -> list[tuple[int, int]]:
    """(H, W) of ``count`` images: the longer side ``side``, width/height log-uniform in [0.6, 1.6]."""
    sizes = []
    for aspect in np.exp(rng.uniform(np.log(0.6), np.log(1.6), count)):
        if aspect >= 1:
            sizes.append((max(32, round(side / aspect)), side))
        else:
            sizes.append((side, max(32, round(side * aspect))))
    return sizes


def time_labels(root: Path, count: int, repeats: int, side: int) -> None:
    """Seconds of ``write_pseudo_labels`` on ``count`` images of the folder at ``root``, batched
    by input size and by exact size, interleaved; prints each pass and the median ratio."""
    import torch

    from wsss.config import load_config
    from wsss.models.classifier import create_classifier
    from wsss.refine.chain import offline_labeler
    from wsss.refine.crf import crf_executor
    from wsss.writers.label_pngs import write_pseudo_labels

    config = load_config(ROOT / "configs" / "demo.yaml", [f"model.img_size={side}"])
    dataset = FolderDataset(root)
    torch.manual_seed(0)
    model = create_classifier(config.model, dataset.num_classes).eval()
    ids = dataset.ids[:count]
    seconds: dict[str, list[float]] = {"by input size": [], "by exact size": []}
    with crf_executor(config.refine.crf) as executor, tempfile.TemporaryDirectory() as out:
        labeler = offline_labeler(model, config.cam, config.refine, dataset, executor=executor)
        labeler([dataset.load(ids[0], masks=False)])  # warm-up (the CRF pool's start), excluded
        for repeat in range(repeats):
            for name in seconds:
                if name == "by exact size":
                    labeler.size_key = None  # an instance attribute hides the method: one exact size a batch
                else:
                    vars(labeler).pop("size_key", None)  # the method again: one input size a batch
                start = time.perf_counter()
                write_pseudo_labels(labeler, dataset, Path(out) / f"{name}{repeat}", batch_size=config.cam.batch_size,
                                    ids=ids, progress=False)
                seconds[name].append(time.perf_counter() - start)
                print(f"  {name}, pass {repeat + 1}: {seconds[name][-1]:.1f} s ({count / seconds[name][-1]:.2f} img/s)")
    ratio = statistics.median(b / a for a, b in zip(seconds["by input size"], seconds["by exact size"]))
    print(f"exact-size batches take {ratio:.2f}x the time of input-size batches (median of {repeats} pairs, "
          f"{count} images, batch {config.cam.batch_size})")


def draw(h: int, w: int, rng: np.random.Generator) -> Image.Image:
    """A gradient with two filled rectangles: edges for the CRF, cheap to make."""
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), np.full((h, w), 90)], -1).astype(np.uint8)
    for _ in range(2):
        top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        image[top:top + h // 3, left:left + w // 3] = rng.integers(0, 256, 3)
    return Image.fromarray(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", choices=["voc", "photos"], default="voc")
    parser.add_argument("--stride", type=int, default=16, help="the model's patch stride (DeiT-S, the demo's ViT: 16)")
    parser.add_argument("--time", type=int, default=0, metavar="N", help="also time the pseudo-labels of N images")
    parser.add_argument("--repeats", type=int, default=2, help="A/B pairs of --time")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sizes = (voc_like_sizes if args.sizes == "voc" else photo_like_sizes)(args.images, rng)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        tags = {}
        for i, (h, w) in enumerate(sizes):
            image = draw(h, w, rng) if i < args.time else Image.new("RGB", (w, h), (90, 90, 90))
            image.save(root / "images" / f"{i:05d}.jpg", quality=50)
            tags[f"{i:05d}.jpg"] = ["thing"]
        write_folder_dataset_index(root, ["thing"], tags)
        dataset = FolderDataset(root)
        grouped = [len(b) for b in same_size_batches(dataset, dataset.ids, args.batch_size, lambda i, r: None)]
        by_input = [len(b) for b in same_size_batches(dataset, dataset.ids, args.batch_size, lambda i, r: None,
                                                      size_key=lambda size: model_input_size(size, args.stride))]
        if args.time:
            time_labels(root, args.time, args.repeats, 224 if args.sizes == "photos" else 384)
    cut = []  # a batch ends at every change of size (the rule before size grouping)
    for size in sizes:
        if cut and cut[-1][0] == size and cut[-1][1] < args.batch_size:
            cut[-1][1] += 1
        else:
            cut.append([size, 1])
    cut_lengths = [n for _, n in cut]
    rows = ((f"by input size, stride {args.stride}", by_input), ("grouped by exact size", grouped),
            ("cut at every size change", cut_lengths))
    for name, lengths in rows:
        full = sum(n == args.batch_size for n in lengths) / len(lengths)
        in_full = sum(n for n in lengths if n == args.batch_size) / sum(lengths)
        print(f"{name:26s}: {len(lengths):5d} batches, mean {np.mean(lengths):.2f} of {args.batch_size} images, "
              f"{100 * full:.0f} % of batches full, {100 * in_full:.0f} % of images in a full batch")
    inputs = {model_input_size(size, args.stride) for size in sizes}
    print(f"{len(set(sizes))} distinct sizes among {len(sizes)} images; {len(inputs)} model input sizes at stride "
          f"{args.stride}")


if __name__ == "__main__":
    main()
