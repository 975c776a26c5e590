"""Mean batch fill of the data set walks on a VOC-like mix of image sizes (issue 16, item 1).

    python benchmarks/batch_fill.py --images 1000 --batch-size 8

Writes IMAGES tiny-content JPEGs at sizes drawn like PASCAL VOC's (about half 500×375, a fifth
375×500, a tenth 500×333, the rest spread between 300 and 500 on each side) in random order,
then batches them as ``wsss.data.batching.same_size_batches`` does (grouped by size) and as a
walk that cuts a batch at every change of size would. Prints the mean images per batch of
both, the share of full batches and the share of images that are in a full batch (the tail of
sizes met once stays at batch 1 under any exact rule).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsss.data.batching import same_size_batches  # noqa: E402
from wsss.data.folder import FolderDataset, write_folder_dataset_index  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sizes = voc_like_sizes(args.images, rng)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        tags = {}
        for i, (h, w) in enumerate(sizes):
            Image.new("RGB", (w, h), (90, 90, 90)).save(root / "images" / f"{i:05d}.jpg", quality=50)
            tags[f"{i:05d}.jpg"] = ["thing"]
        write_folder_dataset_index(root, ["thing"], tags)
        dataset = FolderDataset(root)
        grouped = [len(b) for b in same_size_batches(dataset, dataset.ids, args.batch_size, lambda i, r: None)]
    cut = []  # a batch ends at every change of size (the rule before size grouping)
    for size in sizes:
        if cut and cut[-1][0] == size and cut[-1][1] < args.batch_size:
            cut[-1][1] += 1
        else:
            cut.append([size, 1])
    cut_lengths = [n for _, n in cut]
    for name, lengths in (("grouped by size (wsss)", grouped), ("cut at every size change", cut_lengths)):
        full = sum(n == args.batch_size for n in lengths) / len(lengths)
        in_full = sum(n for n in lengths if n == args.batch_size) / sum(lengths)
        print(f"{name:26s}: {len(lengths):5d} batches, mean {np.mean(lengths):.2f} of {args.batch_size} images, "
              f"{100 * full:.0f} % of batches full, {100 * in_full:.0f} % of images in a full batch")
    print(f"{len(set(sizes))} distinct sizes among {len(sizes)} images")


if __name__ == "__main__":
    main()
