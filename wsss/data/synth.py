"""The built-in demo data set: synthetic multi-label scenes with exact masks.

Each image (S×S×3 uint8 RGB) shows 1 to 3 objects on a cluttered background. A class is
defined by shape and texture together, and its main tone leans to a hue of its own (a band of
±``HUE_SPREAD`` around the class's hue, saturation above 0.7 and value above 0.55); the
second tone and the thin distractors draw from all hues, the background is muted and its soft
blobs take hues between the class bands, so colour is a strong cue that a small ViT trained from
scratch on 2 CPU cores picks up in minutes, but not the whole answer. With
``colour_cue=False`` (``data.synth.colour_cue: false``) every object, blob and distractor takes
any colour, so shape and texture are the only cues:

    disk      filled circle          polka dots
    square    rotated square         checkerboard
    triangle  rotated triangle       parallel stripes
    star      five-pointed star      concentric rings
    ring      annulus                alternating angular sectors
    cross     plus sign              grid of thin lines

Objects measure about 20 % to 60 % of the image side and may overlap (the mask shows the
object on top; every object keeps at least ``MIN_VISIBLE`` of its pixels, and an object that
finds no such place in ``PLACEMENT_TRIES`` tries is left out). The background is a colour
gradient with low-frequency colour noise, sometimes soft sine waves, soft colour blobs and
distractors that belong to no class (thin polylines, arcs, small elongated ellipses): all 0 in
the mask. Masks (S×S uint8, 0 background, 1..C) are rasterised without anti-aliasing and equal
the drawn object pixels exactly; the image is then mildly blurred, noised and saved as a
quality-95 JPEG.

Every image draws from its own numpy Generator seeded by (seed, image index): the same
settings give byte-identical files (with the same Pillow/libjpeg build).
"""

from __future__ import annotations

import colorsys
import functools
import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from wsss.config import SYNTH_CLASSES, SynthConfig
from wsss.data.folder import write_folder_dataset_index
from wsss.data.label_png import write_label_png

SYNTH_VERSION = 2  # bump when the drawing changes: a folder made by another version is not reused
OBJECT_COUNT_PROBS = (0.45, 0.33, 0.22)  # P(1, 2, 3 objects)
SIZE_RANGE = (0.2, 0.6)  # object extent as a fraction of the image side (default)
DISTRACTORS = (3, 8)  # classless shapes per image, at least and at most (default)
MIN_VISIBLE = 0.45  # fraction of an object's pixels that must stay visible after occlusion
PLACEMENT_TRIES = 12
PARAMS_FILE = "synth.json"
CLASS_HUES = tuple(i / len(SYNTH_CLASSES) for i in range(len(SYNTH_CLASSES)))  # in [0, 1): 0 red, 1/3 green
HUE_SPREAD = 0.03  # ±11 degrees

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel vertex positions, still no anti-aliasing
_ONE = 1 << _SHIFT


def _colour(rng: np.random.Generator, saturation=(0.3, 1.0), value=(0.3, 1.0)) -> np.ndarray:
    """One RGB colour, 3 float32 in [0, 255], from the distribution all classes share."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32) * 255.0


def _class_colour(rng: np.random.Generator, label: int) -> np.ndarray:
    """The main tone of an object of class ``label`` (1..C): 3 float32 RGB in [0, 255]."""
    hue = (CLASS_HUES[label - 1] + rng.uniform(-HUE_SPREAD, HUE_SPREAD)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.55, 1.0))
    return np.array(rgb, dtype=np.float32) * 255.0


def _off_class_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour whose hue lies between the class hue bands (3 float32 RGB in [0, 255])."""
    gap = rng.integers(len(CLASS_HUES))
    hue = (CLASS_HUES[gap] + 0.5 / len(CLASS_HUES) + rng.uniform(-0.03, 0.03)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    return np.array(rgb, dtype=np.float32) * 255.0


def _two_tones(rng: np.random.Generator, label: int, colour_cue: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The class tone (any colour without ``colour_cue``) and a free one whose luma differs by
    at least 60 of 255 (a visible texture)."""
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    first = _class_colour(rng, label) if colour_cue else _colour(rng)
    second = _colour(rng)
    for _ in range(20):
        if abs(float((first - second) @ luma)) >= 60:
            break
        second = _colour(rng)
    else:  # a dark or light grey against the first tone
        second = np.full(3, 20.0 if first @ luma > 127 else 235.0, dtype=np.float32)
    return first, second


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates: two read-only S×S float32 arrays (x, y)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _points(xy: np.ndarray) -> np.ndarray:
    """N×2 float vertex positions → int32 fixed-point points for cv2 (``shift=_SHIFT``)."""
    return np.round(xy * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _polygon(n: int, radius: float, angle: float, inner: float | None = None) -> np.ndarray:
    """Regular n-gon (or n-pointed star with inner radius ``inner``) centred at 0: M×2 float."""
    if inner is None:
        a = angle + np.arange(n) * 2 * np.pi / n
        return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)
    a = angle + np.arange(2 * n) * np.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, radius, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _shape_mask(name: str, image_size: int, centre: np.ndarray, extent: float, angle: float) -> np.ndarray:
    """S×S bool: the pixels of one object of class ``name`` (no anti-aliasing).

    centre: 2 float (x, y) in pixels; extent: about the object's width in pixels; angle: radians.
    """
    canvas = np.zeros((image_size, image_size), dtype=np.uint8)
    r = extent / 2
    polygons: list[np.ndarray] = []
    if name in ("disk", "ring"):
        middle = tuple(int(v) for v in np.round(centre * _ONE))
        cv2.circle(canvas, middle, int(round(r * _ONE)), 1, -1, cv2.LINE_8, _SHIFT)
        if name == "ring":
            cv2.circle(canvas, middle, int(round(0.55 * r * _ONE)), 0, -1, cv2.LINE_8, _SHIFT)
    elif name == "square":
        polygons = [_polygon(4, 0.8 * r * math.sqrt(2), angle)]
    elif name == "triangle":
        polygons = [_polygon(3, 1.15 * r, angle)]
    elif name == "star":
        polygons = [_polygon(5, 1.1 * r, angle, inner=0.5 * r)]
    elif name == "cross":  # two bars of width 0.34 × extent
        bar = np.array([[-r, -0.34 * r], [r, -0.34 * r], [r, 0.34 * r], [-r, 0.34 * r]])
        for turn in (angle, angle + math.pi / 2):
            rotation = np.array([[math.cos(turn), math.sin(turn)], [-math.sin(turn), math.cos(turn)]])
            polygons.append(bar @ rotation)
    else:
        raise ValueError(f"unknown synthetic class {name!r}; choices: {', '.join(SYNTH_CLASSES)}")
    for polygon in polygons:
        cv2.fillPoly(canvas, [_points(centre + polygon)], 1, cv2.LINE_8, _SHIFT)
    return canvas.astype(bool)


def _texture(
    name: str, rng: np.random.Generator, x: np.ndarray, y: np.ndarray, centre: np.ndarray, extent: float
) -> np.ndarray:
    """Two-tone pattern of class ``name`` at pixels (x, y) (N float32 each) → N bool (True = first tone).

    The pattern's period is extent / 3..5 (at least 5 px), at a random orientation and phase.
    """
    period = max(5.0, extent / rng.uniform(3.0, 5.0))
    angle = rng.uniform(0, math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    dx, dy = x - float(centre[0]), y - float(centre[1])
    u = dx * cos + dy * sin + rng.uniform(0, period)
    v = dy * cos - dx * sin + rng.uniform(0, period)
    if name == "disk":  # polka dots (the dots take the second tone)
        return (np.mod(u, period) - period / 2) ** 2 + (np.mod(v, period) - period / 2) ** 2 >= (0.3 * period) ** 2
    if name == "square":  # checkerboard
        return (np.floor(u / (period / 2)) + np.floor(v / (period / 2))) % 2 == 0
    if name == "triangle":  # stripes
        return np.mod(u, period) < period / 2
    if name == "star":  # concentric rings
        return np.mod(np.hypot(dx, dy), period * 0.8) < period * 0.4
    if name == "ring":  # angular sectors
        sectors = 2 * int(rng.integers(4, 7))
        return np.floor((np.arctan2(dy, dx) + angle) / (2 * math.pi / sectors)) % 2 == 0
    if name == "cross":  # grid of thin lines
        return (np.mod(u, period) < 0.3 * period) | (np.mod(v, period) < 0.3 * period)
    raise ValueError(f"unknown synthetic class {name!r}; choices: {', '.join(SYNTH_CLASSES)}")


def _background(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, colour_cue: bool = True) -> np.ndarray:
    """S×S×3 float32 cluttered background: gradient, colour noise, waves, soft blobs (whose hues
    avoid the class bands with ``colour_cue``, any hue without).

    Built channel-first (3×S×S, where numpy broadcasting is fast) and transposed at the end.
    """
    size = x.shape[0]
    angle = rng.uniform(0, 2 * math.pi)
    t = ((x - size / 2) * math.cos(angle) + (y - size / 2) * math.sin(angle)) / size + 0.5
    start, end = _colour(rng, (0.0, 0.35), (0.15, 1.0)), _colour(rng, (0.0, 0.35), (0.15, 1.0))
    image = start[:, None, None] + (end - start)[:, None, None] * t
    cells = int(rng.integers(3, 7))
    noise = rng.normal(0, rng.uniform(10, 35), size=(cells, cells, 3)).astype(np.float32)
    noise = cv2.resize(noise, (32, 32), interpolation=cv2.INTER_CUBIC)  # smooth, and cheaper than
    image += cv2.resize(noise, (size, size), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)  # cubic at S
    if rng.uniform() < 0.5:  # soft sine waves (unlike the hard two-tone stripes of 'triangle')
        wave_angle = rng.uniform(0, math.pi)
        phase = (x * math.cos(wave_angle) + y * math.sin(wave_angle)) * (2 * math.pi / rng.uniform(12, 40))
        image += rng.uniform(6, 18) * np.sin(phase)
    for _ in range(int(rng.integers(1, 5))):  # soft-edged colour blobs (ellipses with a linear ramp)
        cx, cy = rng.uniform(0, size, 2)
        a, b = rng.uniform(0.08, 0.3, 2) * size
        blob_angle = rng.uniform(0, math.pi)
        cos, sin = math.cos(blob_angle), math.sin(blob_angle)
        u, v = ((x - cx) * cos + (y - cy) * sin) / a, ((y - cy) * cos - (x - cx) * sin) / b
        radius = np.sqrt(u * u + v * v)
        blob = np.clip((1.0 - radius) / rng.uniform(0.3, 1.0) + 0.5, 0.0, 1.0) * rng.uniform(0.4, 0.9)
        tone = _off_class_colour(rng) if colour_cue else _colour(rng)
        image += (tone[:, None, None] - image) * blob
    return np.ascontiguousarray(image.transpose(1, 2, 0))


def _draw_distractors(rng: np.random.Generator, image: np.ndarray, count: tuple[int, int] = DISTRACTORS) -> None:
    """Draw ``count`` (at least, at most) classless shapes in place on S×S×3 float32 ``image``:
    lines, arcs, slim ellipses."""
    size = image.shape[0]
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        colour = tuple(float(c) for c in _colour(rng))
        kind = int(rng.integers(3))
        if kind == 0:  # thin polyline
            points = rng.uniform(-0.1, 1.1, size=(int(rng.integers(2, 5)), 2)) * size
            cv2.polylines(image, [_points(points)], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA, _SHIFT)
        elif kind == 1:  # arc
            centre = tuple(int(v) for v in rng.uniform(0, size, 2))
            axes = tuple(int(v) for v in rng.uniform(0.05, 0.3, 2) * size)
            start = rng.uniform(0, 360)
            cv2.ellipse(image, centre, axes, rng.uniform(0, 180), start, start + rng.uniform(60, 200),
                        colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:  # small slim filled ellipse
            centre = tuple(int(v) for v in rng.uniform(0, size, 2))
            long_axis = rng.uniform(0.03, 0.12) * size
            axes = (max(2, int(long_axis)), max(1, int(long_axis / rng.uniform(2.5, 4.5))))
            cv2.ellipse(image, centre, axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)


def _context_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """The one surroundings of the ``context`` class: S×S×3 float32 diagonal waves between two
    fixed blues (water, say), with a little noise."""
    x, y = _grid(size)
    wave = 0.5 + 0.5 * np.sin((x + y) * (2 * math.pi / 7.0) + rng.uniform(0, 2 * math.pi))
    low, high = np.array([20, 60, 110], np.float32), np.array([90, 170, 220], np.float32)
    return low + (high - low) * wave[..., None] + rng.uniform(-8, 8, size=(size, size, 1)).astype(np.float32)


def render_synth_image(rng: np.random.Generator, image_size: int = 128, colour_cue: bool = True,
                       object_size: tuple[float, float] = SIZE_RANGE,
                       distractors: tuple[int, int] = DISTRACTORS, context: str | None = None,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene → (image S×S×3 uint8 RGB, mask S×S uint8 with 0 background, 1..C).

    colour_cue: each class's main tone leans to its own hue band (the demo); False: every
    object, blob and distractor takes any colour, so shape and texture are the only cues.
    context: a class name whose images get ``_context_background`` wherever the mask is
    background (the class is then told by its surroundings as well as its shape)."""
    image = _background(rng, *_grid(image_size), colour_cue=colour_cue)
    _draw_distractors(rng, image, distractors)
    instances = np.zeros((image_size, image_size), dtype=np.int32)  # 0 none, k = k-th object
    areas: list[int] = []
    labels = [0]
    for _ in range(int(rng.choice(len(OBJECT_COUNT_PROBS), p=OBJECT_COUNT_PROBS)) + 1):
        label = int(rng.integers(len(SYNTH_CLASSES))) + 1
        name = SYNTH_CLASSES[label - 1]
        for _ in range(PLACEMENT_TRIES):
            extent = rng.uniform(*object_size) * image_size
            centre = rng.uniform(0.4 * extent, image_size - 0.4 * extent, size=2)
            shape = _shape_mask(name, image_size, centre, extent, rng.uniform(0, 2 * math.pi))
            trial = np.where(shape, len(areas) + 1, instances)
            visible = np.bincount(trial.ravel(), minlength=len(areas) + 2)[1:-1]
            if shape.sum() >= 20 and np.all(visible >= MIN_VISIBLE * np.array(areas, dtype=np.int64)):
                ys, xs = np.nonzero(shape)
                pattern = _texture(name, rng, xs.astype(np.float32), ys.astype(np.float32), centre, extent)
                first, second = _two_tones(rng, label, colour_cue)
                image[ys, xs] = np.where(pattern[:, None], first, second)
                instances = trial
                areas.append(int(shape.sum()))
                labels.append(label)
                break
    mask = np.array(labels, dtype=np.uint8)[instances]
    if context is not None and SYNTH_CLASSES.index(context) + 1 in labels:
        background = mask == 0
        image[background] = _context_background(rng, image_size)[background]
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.8))
    image += rng.uniform(2, 6) * rng.standard_normal(size=(image_size, image_size, 1), dtype=np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


def generate_synth_dataset(out_dir: str | os.PathLike, synth: SynthConfig, progress: bool = True,
                           overwrite: bool = False) -> Path:
    """Write the synthetic data set of ``synth`` (the ``data.synth`` section) in the plain folder
    format (wsss.data.folder) → its root.

    Files: classes.txt (SYNTH_CLASSES), tags.csv (tags = the classes visible in each mask),
    images/synth_NNNNN.jpg (JPEG quality 95, no chroma subsampling), masks/synth_NNNNN.png,
    splits/train.txt and splits/val.txt (val: round(val_fraction × num_images) ids drawn
    with ``seed``), synth.json (the settings). Image i depends only on (seed, i) and
    ``colour_cue``, ``object_size``, ``distractors`` and ``context`` (see :func:`render_synth_image`).
    A folder already holding a complete set made with the same settings (and SYNTH_VERSION)
    is returned as is; any other non-empty folder raises ValueError unless ``overwrite`` (then
    synth.json, classes.txt, tags.csv, images/, masks/ and splits/ are replaced).
    """
    num_images, image_size, val_fraction, seed = synth.num_images, synth.image_size, synth.val_fraction, synth.seed
    colour_cue, object_size, distractors = synth.colour_cue, tuple(synth.object_size), tuple(synth.distractors)
    if num_images < 1 or image_size < 32 or not 0.0 <= val_fraction < 1.0 or seed < 0:
        raise ValueError(
            f"need num_images >= 1, image_size >= 32, 0 <= val_fraction < 1, seed >= 0; "
            f"got {num_images}, {image_size}, {val_fraction}, {seed}"
        )
    root = Path(out_dir)
    params = {"version": SYNTH_VERSION, "num_images": num_images, "image_size": image_size,
              "val_fraction": val_fraction, "seed": seed}
    # settings at their defaults are left out: folders made before they existed still match
    if not colour_cue:
        params["colour_cue"] = False
    if object_size != SIZE_RANGE:
        params["object_size"] = [float(v) for v in object_size]
    if distractors != DISTRACTORS:
        params["distractors"] = [int(v) for v in distractors]
    if synth.context is not None:
        params["context"] = synth.context
    params_file = root / PARAMS_FILE
    ids = [f"synth_{index:05d}" for index in range(num_images)]
    if params_file.is_file() and json.loads(params_file.read_text()) == params and all(
        (root / "images" / f"{i}.jpg").is_file() and (root / "masks" / f"{i}.png").is_file() for i in ids
    ):
        return root
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            held = params_file.read_text().strip() if params_file.is_file() else "no synth.json"
            raise ValueError(f"{root}: folder is not empty and holds no synthetic set made with {params} "
                             f"(it holds {held}); choose another data.root or delete the folder")
        params_file.unlink(missing_ok=True)
        for sub in ("images", "masks", "splits"):
            shutil.rmtree(root / sub, ignore_errors=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    tags: dict[str, list[str]] = {}
    for index, image_id in enumerate(tqdm(ids, desc="synthetic images", disable=not progress)):
        image, mask = render_synth_image(np.random.default_rng([seed, index]), image_size, colour_cue,
                                         object_size, distractors, synth.context)
        Image.fromarray(image).save(root / "images" / f"{image_id}.jpg", format="JPEG", quality=95, subsampling=0)
        write_label_png(root / "masks" / f"{image_id}.png", mask)
        tags[f"{image_id}.jpg"] = [SYNTH_CLASSES[label - 1] for label in np.unique(mask) if label > 0]
    order = np.random.default_rng([seed, num_images, 1]).permutation(num_images)
    val = set(order[: int(round(val_fraction * num_images))].tolist())
    splits = {
        "train": [i for n, i in enumerate(ids) if n not in val],
        "val": [i for n, i in enumerate(ids) if n in val],
    }
    write_folder_dataset_index(root, SYNTH_CLASSES, tags, splits)
    params_file.write_text(json.dumps(params) + "\n")
    return root
