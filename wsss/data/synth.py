"""The built-in demo data set, and a family of variants: synthetic multi-label scenes with exact masks.

With the default settings each image (S×S×3 uint8 RGB, S = ``image_size``) shows 1 to 3 objects
on a cluttered background. A class is defined by shape and texture together, and its main tone
leans to a hue of its own (a band of ±``HUE_SPREAD`` around the class's hue, saturation above 0.7
and value above 0.55); the second tone and the thin distractors draw from all hues, the
background is muted and its soft blobs take hues between the class bands, so colour is a strong
cue that a small ViT trained from scratch on 2 CPU cores picks up in minutes, but not the whole
answer. With ``colour_cue=False`` (``data.synth.colour_cue: false``) every object, blob and
distractor takes any colour, so shape and texture are the only cues. The demo's six classes
(``SYNTH_CLASSES``, labels 1..6 in this order):

    disk      filled circle          polka dots
    square    rotated square         checkerboard
    triangle  rotated triangle       parallel stripes
    star      five-pointed star      concentric rings
    ring      annulus                alternating angular sectors
    cross     plus sign              grid of thin lines

and three more shapes a set may use (``AVAILABLE_SHAPES`` = the six, then these):

    hexagon   rotated regular hexagon                 zigzag stripes
    crescent  a disk less an offset smaller disk      small squares on a diagonal lattice
    arrow     shaft and triangular head, rotated      two-tone blotches (thresholded smooth noise)

Objects measure about 20 % to 60 % of the image side and may overlap (the mask shows the
object on top; every object keeps at least ``MIN_VISIBLE`` of its pixels, and an object that
finds no such place in ``PLACEMENT_TRIES`` tries is left out). The background is a colour
gradient with low-frequency colour noise, sometimes soft sine waves, soft colour blobs and
distractors that belong to no class (thin polylines, arcs, small elongated ellipses): all 0 in
the mask. Masks (H×W uint8, 0 background, 1..C) are rasterised without anti-aliasing and equal
the drawn object pixels exactly; the image is then mildly blurred, noised and saved as a
quality-95 JPEG.

The knobs (``data.synth.*``, :class:`wsss.config.SynthConfig`; each at its default draws the demo
above, byte for byte, as no random number is drawn for a knob left at its default):

    colour_cue   true: class hue bands (above); false: any colour everywhere
    object_size  [0.2, 0.6]: an object's extent as a fraction of the (shorter) image side
    distractors  [3, 8]: classless lines, arcs and ellipses per image
    context      null; a class name: every image holding it gets one fixed background (water)
    classes      null (the six above); a list: the set's classes, 2 or more of AVAILABLE_SHAPES, in
                 label order; with colour_cue their hues are spread evenly (i / C) over the circle
    texture      class: each class its texture; any: each object the texture of any available
                 shape at random; none: objects filled with their first tone only
    objects      [1, 3]: fewest and most objects per image (1, 2, 3 drawn with 45/33/22 %; other
                 ranges uniformly)
    aspect       null (square); [lowest, highest]: each image's width/height ratio, drawn
                 uniformly in log space; the longer side is image_size, the other at least 32
    background   soft (above); busy: soft plus 6 to 12 high-contrast patches of the shapes'
                 textures in any colours (classless clutter that looks like objects); plain: one
                 flat colour (the mean of the soft background), with the image's mild noise

``texture`` and ``background`` change neither the layout nor the colours of the objects: the
extra random numbers they need come from a child generator (``Generator.spawn``), so their
masks equal the default ones. :func:`render_synth_image` takes the first four knobs as
parameters and the other five as one :class:`SynthKnobs`.

Every image draws from its own numpy Generator seeded by (seed, image index): the same
settings give byte-identical files (with the same Pillow/libjpeg build).
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from wsss.config import AVAILABLE_SHAPES, SYNTH_CLASSES, SynthConfig
from wsss.data.folder import write_folder_dataset_index
from wsss.data.label_png import write_label_png

SYNTH_VERSION = 2  # bump when the drawing changes: a folder made by another version is not reused
OBJECT_COUNT_PROBS = (0.45, 0.33, 0.22)  # P(1, 2, 3 objects), when objects is OBJECTS
OBJECTS = (1, 3)  # objects per image, fewest and most (default)
SIZE_RANGE = (0.2, 0.6)  # object extent as a fraction of the image side (default)
DISTRACTORS = (3, 8)  # classless shapes per image, at least and at most (default)
BUSY_PATCHES = (6, 12)  # textured classless patches per image with background 'busy', at least and at most
TEXTURES = ("class", "any", "none")  # the choices of ``texture``
BACKGROUNDS = ("soft", "busy", "plain")  # the choices of ``background``
MIN_SIDE = 32  # the shorter side of an image with ``aspect``, at least
MIN_VISIBLE = 0.45  # fraction of an object's pixels that must stay visible after occlusion
PLACEMENT_TRIES = 12
PARAMS_FILE = "synth.json"
HUE_SPREAD = 0.03  # ±11 degrees

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel vertex positions, still no anti-aliasing
_ONE = 1 << _SHIFT
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def class_hues(count: int) -> tuple[float, ...]:
    """The hues (in [0, 1): 0 red, 1/3 green) of a set of ``count`` classes, spread evenly: i / count."""
    return tuple(i / count for i in range(count))


CLASS_HUES = class_hues(len(SYNTH_CLASSES))  # the demo's six


def _colour(rng: np.random.Generator, saturation=(0.3, 1.0), value=(0.3, 1.0)) -> np.ndarray:
    """One RGB colour, 3 float32 in [0, 255], from the distribution all classes share."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32) * 255.0


def _class_colour(rng: np.random.Generator, label: int, hues: Sequence[float] = CLASS_HUES) -> np.ndarray:
    """The main tone of an object of class ``label`` (1..C, hue ``hues[label - 1]``): 3 float32 RGB in [0, 255]."""
    hue = (hues[label - 1] + rng.uniform(-HUE_SPREAD, HUE_SPREAD)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.55, 1.0))
    return np.array(rgb, dtype=np.float32) * 255.0


def _off_class_colour(rng: np.random.Generator, hues: Sequence[float] = CLASS_HUES) -> np.ndarray:
    """A colour whose hue lies between the class hue bands ``hues`` (3 float32 RGB in [0, 255])."""
    gap = rng.integers(len(hues))
    hue = (hues[gap] + 0.5 / len(hues) + rng.uniform(-0.03, 0.03)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    return np.array(rgb, dtype=np.float32) * 255.0


def _contrasting_colour(rng: np.random.Generator, first: np.ndarray) -> np.ndarray:
    """A free colour whose luma differs from ``first``'s by at least 60 of 255 (a visible texture)."""
    second = _colour(rng)
    for _ in range(20):
        if abs(float((first - second) @ _LUMA)) >= 60:
            break
        second = _colour(rng)
    else:  # a dark or light grey against the first tone
        second = np.full(3, 20.0 if first @ _LUMA > 127 else 235.0, dtype=np.float32)
    return second


def _two_tones(rng: np.random.Generator, label: int, colour_cue: bool = True,
               hues: Sequence[float] = CLASS_HUES) -> tuple[np.ndarray, np.ndarray]:
    """The class tone (any colour without ``colour_cue``) and a free one whose luma differs by
    at least 60 of 255 (a visible texture)."""
    first = _class_colour(rng, label, hues) if colour_cue else _colour(rng)
    return first, _contrasting_colour(rng, first)


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates: two read-only H×W float32 arrays (x, y); ``width`` None: square."""
    y, x = np.mgrid[0:height, 0:height if width is None else width].astype(np.float32)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _image_shape(rng: np.random.Generator, image_size: int, aspect: Sequence[float] | None) -> tuple[int, int]:
    """(height, width) of one image: S×S without ``aspect``; else a width/height ratio drawn
    uniformly in log space from [lowest, highest], the longer side S, the shorter at least MIN_SIDE."""
    if aspect is None:
        return image_size, image_size
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    if ratio >= 1.0:
        return max(MIN_SIDE, round(image_size / ratio)), image_size
    return image_size, max(MIN_SIDE, round(image_size * ratio))


def _points(xy: np.ndarray) -> np.ndarray:
    """N×2 float vertex positions → int32 fixed-point points for cv2 (``shift=_SHIFT``)."""
    return np.round(xy * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _fixed(xy: np.ndarray) -> tuple[int, int]:
    """One float (x, y) position → the fixed-point point cv2.circle takes (``shift=_SHIFT``)."""
    return tuple(int(v) for v in np.round(xy * _ONE))


def _rotated(outline: np.ndarray, angle: float) -> np.ndarray:
    """M×2 points turned by ``angle`` radians about 0 (as the cross's bars)."""
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    return outline @ rotation


def _polygon(n: int, radius: float, angle: float, inner: float | None = None) -> np.ndarray:
    """Regular n-gon (or n-pointed star with inner radius ``inner``) centred at 0: M×2 float."""
    if inner is None:
        a = angle + np.arange(n) * 2 * np.pi / n
        return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)
    a = angle + np.arange(2 * n) * np.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, radius, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _shape_mask(name: str, size: int | tuple[int, int], centre: np.ndarray, extent: float, angle: float) -> np.ndarray:
    """H×W bool: the pixels of one object of class ``name`` (no anti-aliasing).

    size: S (square) or (H, W); centre: 2 float (x, y) in pixels; extent: about the object's
    width in pixels; angle: radians.
    """
    canvas = np.zeros((size, size) if isinstance(size, int) else tuple(size), dtype=np.uint8)
    r = extent / 2
    polygons: list[np.ndarray] = []
    if name in ("disk", "ring", "crescent"):
        middle = _fixed(centre)
        cv2.circle(canvas, middle, int(round(r * _ONE)), 1, -1, cv2.LINE_8, _SHIFT)
        if name == "ring":
            cv2.circle(canvas, middle, int(round(0.55 * r * _ONE)), 0, -1, cv2.LINE_8, _SHIFT)
        elif name == "crescent":  # bitten by a disk of 0.8 r whose centre lies 0.5 r towards ``angle``
            bite = centre + 0.5 * r * np.array([math.cos(angle), math.sin(angle)])
            cv2.circle(canvas, _fixed(bite), int(round(0.8 * r * _ONE)), 0, -1, cv2.LINE_8, _SHIFT)
    elif name == "square":
        polygons = [_polygon(4, 0.8 * r * math.sqrt(2), angle)]
    elif name == "triangle":
        polygons = [_polygon(3, 1.15 * r, angle)]
    elif name == "star":
        polygons = [_polygon(5, 1.1 * r, angle, inner=0.5 * r)]
    elif name == "cross":  # two bars of width 0.34 × extent
        bar = np.array([[-r, -0.34 * r], [r, -0.34 * r], [r, 0.34 * r], [-r, 0.34 * r]])
        for turn in (angle, angle + math.pi / 2):
            polygons.append(_rotated(bar, turn))
    elif name == "hexagon":
        polygons = [_polygon(6, r, angle)]
    elif name == "arrow":  # a shaft 0.44 r wide from the tail (-r), a head 1.24 r wide from 0.1 r to the tip (r)
        outline = np.array([[-r, -0.22 * r], [0.1 * r, -0.22 * r], [0.1 * r, -0.62 * r], [r, 0.0],
                            [0.1 * r, 0.62 * r], [0.1 * r, 0.22 * r], [-r, 0.22 * r]])
        polygons = [_rotated(outline, angle)]
    else:
        raise ValueError(f"unknown synthetic class {name!r}; choices: {', '.join(AVAILABLE_SHAPES)}")
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
    if name == "hexagon":  # zigzag stripes: stripes across u whose edges zigzag at 45 degrees along v
        return np.mod(u + np.abs(np.mod(v, period) - period / 2), period) < period / 2
    if name == "crescent":  # small squares (second tone, side 0.34 period) at the corners and centres of the cells:
        # a diagonal lattice, denser than the disk's dots and square where they are round
        half = 0.17 * period
        cu, cv = np.abs(np.mod(u, period) - period / 2), np.abs(np.mod(v, period) - period / 2)
        return ~(((cu < half) & (cv < half)) | ((cu > period / 2 - half) & (cv > period / 2 - half)))
    if name == "arrow":  # blotches: value noise (a wrapped 16×16 grid, cells of 0.7 period, smoothstep) above 0
        cells = rng.standard_normal((16, 16)).astype(np.float32)
        gu, gv = u / (0.7 * period), v / (0.7 * period)
        iu, iv = np.floor(gu), np.floor(gv)
        fu, fv = gu - iu, gv - iv
        fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
        i0, j0 = iu.astype(np.int64) % 16, iv.astype(np.int64) % 16
        i1, j1 = (i0 + 1) % 16, (j0 + 1) % 16
        top = cells[j0, i0] + (cells[j0, i1] - cells[j0, i0]) * fu
        bottom = cells[j1, i0] + (cells[j1, i1] - cells[j1, i0]) * fu
        return top + (bottom - top) * fv > 0
    raise ValueError(f"unknown synthetic class {name!r}; choices: {', '.join(AVAILABLE_SHAPES)}")


def _background(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, colour_cue: bool = True,
                hues: Sequence[float] = CLASS_HUES) -> np.ndarray:
    """H×W×3 float32 cluttered background: gradient, colour noise, waves, soft blobs (whose hues
    avoid the class bands ``hues`` with ``colour_cue``, any hue without). x, y: H×W pixel
    coordinates; sizes are fractions of the shorter side.

    Built channel-first (3×H×W, where numpy broadcasting is fast) and transposed at the end.
    """
    height, width = x.shape
    size, side = max(height, width), min(height, width)
    angle = rng.uniform(0, 2 * math.pi)
    t = ((x - width / 2) * math.cos(angle) + (y - height / 2) * math.sin(angle)) / size + 0.5
    start, end = _colour(rng, (0.0, 0.35), (0.15, 1.0)), _colour(rng, (0.0, 0.35), (0.15, 1.0))
    image = start[:, None, None] + (end - start)[:, None, None] * t
    cells = int(rng.integers(3, 7))
    noise = rng.normal(0, rng.uniform(10, 35), size=(cells, cells, 3)).astype(np.float32)
    noise = cv2.resize(noise, (32, 32), interpolation=cv2.INTER_CUBIC)  # smooth, and cheaper than
    image += cv2.resize(noise, (width, height), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)  # cubic at H×W
    if rng.uniform() < 0.5:  # soft sine waves (unlike the hard two-tone stripes of 'triangle')
        wave_angle = rng.uniform(0, math.pi)
        phase = (x * math.cos(wave_angle) + y * math.sin(wave_angle)) * (2 * math.pi / rng.uniform(12, 40))
        image += rng.uniform(6, 18) * np.sin(phase)
    for _ in range(int(rng.integers(1, 5))):  # soft-edged colour blobs (ellipses with a linear ramp)
        cx, cy = rng.uniform(0, np.array([width, height]))
        a, b = rng.uniform(0.08, 0.3, 2) * side
        blob_angle = rng.uniform(0, math.pi)
        cos, sin = math.cos(blob_angle), math.sin(blob_angle)
        u, v = ((x - cx) * cos + (y - cy) * sin) / a, ((y - cy) * cos - (x - cx) * sin) / b
        radius = np.sqrt(u * u + v * v)
        blob = np.clip((1.0 - radius) / rng.uniform(0.3, 1.0) + 0.5, 0.0, 1.0) * rng.uniform(0.4, 0.9)
        tone = _off_class_colour(rng, hues) if colour_cue else _colour(rng)
        image += (tone[:, None, None] - image) * blob
    return np.ascontiguousarray(image.transpose(1, 2, 0))


def _draw_patches(rng: np.random.Generator, image: np.ndarray, count: tuple[int, int] = BUSY_PATCHES) -> None:
    """Draw ``count`` (at least, at most) classless textured patches in place on H×W×3 float32
    ``image`` (background 'busy'): irregular blobs and slim strips, 15 % to 40 % of the shorter
    side, each with the texture of a random available shape in two contrasting colours of any
    hue, hard-edged. Their outlines are none of the shapes: what they share with objects is
    texture and contrast."""
    height, width = image.shape[:2]
    side = min(height, width)
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        centre = rng.uniform(0, np.array([width, height]))
        extent = rng.uniform(0.15, 0.4) * side
        angle = rng.uniform(0, 2 * math.pi)
        if rng.uniform() < 0.5:  # an irregular blob: 9 to 14 vertices at random radii around the centre
            corners = int(rng.integers(9, 15))
            turns = angle + np.sort(rng.uniform(0, 2 * math.pi, corners))
            radii = rng.uniform(0.5, 1.0, corners) * extent / 2
            outline = np.stack([radii * np.cos(turns), radii * np.sin(turns)], axis=1)
        else:  # a slim strip: 0.25 to 0.5 times as wide as long
            half_width = rng.uniform(0.25, 0.5) * extent / 2
            outline = _rotated(np.array([[-extent / 2, -half_width], [extent / 2, -half_width],
                                         [extent / 2, half_width], [-extent / 2, half_width]]), angle)
        canvas = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(canvas, [_points(centre + outline)], 1, cv2.LINE_8, _SHIFT)
        ys, xs = np.nonzero(canvas)
        pattern = _texture(AVAILABLE_SHAPES[int(rng.integers(len(AVAILABLE_SHAPES)))], rng,
                           xs.astype(np.float32), ys.astype(np.float32), centre, extent)
        first = _colour(rng, value=(0.2, 1.0))
        image[ys, xs] = np.where(pattern[:, None], first, _contrasting_colour(rng, first))


def _draw_distractors(rng: np.random.Generator, image: np.ndarray, count: tuple[int, int] = DISTRACTORS) -> None:
    """Draw ``count`` (at least, at most) classless shapes in place on H×W×3 float32 ``image``:
    lines, arcs, slim ellipses (sizes are fractions of the shorter side)."""
    height, width = image.shape[:2]
    side, corner = min(height, width), np.array([width, height])
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        colour = tuple(float(c) for c in _colour(rng))
        kind = int(rng.integers(3))
        if kind == 0:  # thin polyline
            points = rng.uniform(-0.1, 1.1, size=(int(rng.integers(2, 5)), 2)) * corner
            cv2.polylines(image, [_points(points)], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA, _SHIFT)
        elif kind == 1:  # arc
            centre = tuple(int(v) for v in rng.uniform(0, corner))
            axes = tuple(int(v) for v in rng.uniform(0.05, 0.3, 2) * side)
            start = rng.uniform(0, 360)
            cv2.ellipse(image, centre, axes, rng.uniform(0, 180), start, start + rng.uniform(60, 200),
                        colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:  # small slim filled ellipse
            centre = tuple(int(v) for v in rng.uniform(0, corner))
            long_axis = rng.uniform(0.03, 0.12) * side
            axes = (max(2, int(long_axis)), max(1, int(long_axis / rng.uniform(2.5, 4.5))))
            cv2.ellipse(image, centre, axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)


def _context_background(rng: np.random.Generator, height: int, width: int | None = None) -> np.ndarray:
    """The one surroundings of the ``context`` class: H×W×3 float32 (``width`` None: square)
    diagonal waves between two fixed blues (water, say), with a little noise."""
    width = height if width is None else width
    x, y = _grid(height, width)
    wave = 0.5 + 0.5 * np.sin((x + y) * (2 * math.pi / 7.0) + rng.uniform(0, 2 * math.pi))
    low, high = np.array([20, 60, 110], np.float32), np.array([90, 170, 220], np.float32)
    return low + (high - low) * wave[..., None] + rng.uniform(-8, 8, size=(height, width, 1)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SynthKnobs:
    """The knobs of :func:`render_synth_image` beyond its first six parameters, travelling as one
    object (their defaults draw the demo). Lists are taken as tuples; a value out of range raises
    ValueError naming the knob.

    classes: the shape names of labels 1..C (None: SYNTH_CLASSES); texture: 'class', 'any' or
    'none'; objects: (fewest, most) per image; aspect: (lowest, highest) width/height ratio, or
    None (square); background: 'soft', 'busy' or 'plain'.
    """

    classes: tuple[str, ...] | None = None
    texture: str = "class"
    objects: tuple[int, int] = OBJECTS
    aspect: tuple[float, float] | None = None
    background: str = "soft"

    def __post_init__(self) -> None:
        for key in ("classes", "objects", "aspect"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, tuple(getattr(self, key)))
        names = self.names
        if any(name not in AVAILABLE_SHAPES for name in names) or len(names) < 2 or len(set(names)) < len(names):
            raise ValueError(f"classes must be 2 or more different shapes of {list(AVAILABLE_SHAPES)}, "
                             f"got {list(names)}")
        if self.texture not in TEXTURES:
            raise ValueError(f"texture must be one of {TEXTURES}, got {self.texture!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {self.background!r}")
        if len(self.objects) != 2 or not 1 <= self.objects[0] <= self.objects[1]:
            raise ValueError(f"objects must be (fewest, most) with 1 <= fewest <= most, got {self.objects}")
        if self.aspect is not None and (len(self.aspect) != 2 or not 0 < self.aspect[0] <= self.aspect[1] < math.inf):
            raise ValueError(f"aspect must be (lowest, highest) with 0 < lowest <= highest, or None; got {self.aspect}")

    @property
    def names(self) -> list[str]:
        """The class names of labels 1..C."""
        return list(SYNTH_CLASSES if self.classes is None else self.classes)

    @classmethod
    def from_config(cls, synth: SynthConfig) -> "SynthKnobs":
        """The knobs of a ``data.synth`` section."""
        return cls(classes=synth.classes, texture=synth.texture, objects=synth.objects, aspect=synth.aspect,
                   background=synth.background)


def render_synth_image(rng: np.random.Generator, image_size: int = 128, colour_cue: bool = True,
                       object_size: tuple[float, float] = SIZE_RANGE,
                       distractors: tuple[int, int] = DISTRACTORS, context: str | None = None, *,
                       knobs: SynthKnobs = SynthKnobs()) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene → (image H×W×3 uint8 RGB, mask H×W uint8 with 0 background, 1..C); H = W =
    ``image_size`` without ``knobs.aspect``. The knobs are those of the module docstring.

    colour_cue: each class's main tone leans to its own hue band (the demo); False: every
    object, blob and distractor takes any colour, so shape and texture are the only cues.
    context: a class name (one of the knobs' classes) whose images get ``_context_background``
    wherever the mask is background (the class is then told by its surroundings as well as its
    shape). knobs: classes, texture, objects, aspect and background (:class:`SynthKnobs`).
    Each knob at its default draws no random number of its own: the demo's image, byte for byte."""
    names, texture, objects, aspect, background = (knobs.names, knobs.texture, knobs.objects, knobs.aspect,
                                                   knobs.background)
    if context is not None and context not in names:
        raise ValueError(f"context must be one of the classes {names} or None, got {context!r}")
    hues = class_hues(len(names))  # CLASS_HUES for the demo's six
    height, width = _image_shape(rng, image_size, aspect)
    side, corner = min(height, width), np.array([width, height])
    # the random numbers of texture 'any' and background 'busy' come from a child generator: the
    # scene (layout, colours) stays the one the default settings draw
    extra = rng.spawn(1)[0] if texture == "any" or background == "busy" else None
    image = _background(rng, *_grid(height, width), colour_cue=colour_cue, hues=hues)
    if background == "plain":  # drawn all the same, for the random numbers after it
        image[:] = image.mean(axis=(0, 1))
    elif background == "busy":
        _draw_patches(extra, image)
    _draw_distractors(rng, image, distractors)
    instances = np.zeros((height, width), dtype=np.int32)  # 0 none, k = k-th object
    areas: list[int] = []
    labels = [0]
    if objects == OBJECTS:
        count = int(rng.choice(len(OBJECT_COUNT_PROBS), p=OBJECT_COUNT_PROBS)) + 1
    else:
        count = int(rng.integers(objects[0], objects[1] + 1))
    for _ in range(count):
        label = int(rng.integers(len(names))) + 1
        name = names[label - 1]
        for _ in range(PLACEMENT_TRIES):
            extent = rng.uniform(*object_size) * side
            centre = rng.uniform(0.4 * extent, corner - 0.4 * extent)
            shape = _shape_mask(name, (height, width), centre, extent, rng.uniform(0, 2 * math.pi))
            trial = np.where(shape, len(areas) + 1, instances)
            visible = np.bincount(trial.ravel(), minlength=len(areas) + 2)[1:-1]
            if shape.sum() >= 20 and np.all(visible >= MIN_VISIBLE * np.array(areas, dtype=np.int64)):
                ys, xs = np.nonzero(shape)
                fx, fy = xs.astype(np.float32), ys.astype(np.float32)
                pattern = _texture(name, rng, fx, fy, centre, extent)  # drawn with every texture: same scene
                first, second = _two_tones(rng, label, colour_cue, hues)
                if texture == "any":
                    other = AVAILABLE_SHAPES[int(extra.integers(len(AVAILABLE_SHAPES)))]
                    pattern = _texture(other, extra, fx, fy, centre, extent)
                elif texture == "none":
                    pattern = np.ones_like(pattern)
                image[ys, xs] = np.where(pattern[:, None], first, second)
                instances = trial
                areas.append(int(shape.sum()))
                labels.append(label)
                break
    mask = np.array(labels, dtype=np.uint8)[instances]
    if context is not None and names.index(context) + 1 in labels:
        background_pixels = mask == 0
        image[background_pixels] = _context_background(rng, height, width)[background_pixels]
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.8))
    image += rng.uniform(2, 6) * rng.standard_normal(size=(height, width, 1), dtype=np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


def generate_synth_dataset(out_dir: str | os.PathLike, synth: SynthConfig, progress: bool = True,
                           overwrite: bool = False) -> Path:
    """Write the synthetic data set of ``synth`` (the ``data.synth`` section) in the plain folder
    format (wsss.data.folder) → its root.

    Files: classes.txt (``synth.classes`` in their order, label i + 1 = classes[i]; SYNTH_CLASSES
    when None), tags.csv (tags = the classes visible in each mask), images/synth_NNNNN.jpg (JPEG
    quality 95, no chroma subsampling; square unless ``aspect``), masks/synth_NNNNN.png (the
    image's size), splits/train.txt and splits/val.txt (val: round(val_fraction × num_images) ids
    drawn with ``seed``), synth.json (the settings: the knobs only where they differ from their
    defaults, so a folder made before a knob existed still matches). Image i depends only on
    (seed, i) and the knobs ``colour_cue``, ``object_size``, ``distractors``, ``context``,
    ``classes``, ``texture``, ``objects``, ``aspect`` and ``background`` (see
    :func:`render_synth_image`). A folder already holding a complete set made with the same
    settings (and SYNTH_VERSION) is returned as is; any other non-empty folder raises ValueError
    unless ``overwrite`` (then synth.json, classes.txt, tags.csv, images/, masks/ and splits/ are
    replaced).
    """
    num_images, image_size, val_fraction, seed = synth.num_images, synth.image_size, synth.val_fraction, synth.seed
    colour_cue, object_size, distractors = synth.colour_cue, tuple(synth.object_size), tuple(synth.distractors)
    knobs = SynthKnobs.from_config(synth)
    classes, objects, aspect = knobs.names, knobs.objects, knobs.aspect
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
    if classes != SYNTH_CLASSES:  # the demo's six in their order draw the demo
        params["classes"] = list(classes)
    if knobs.texture != "class":
        params["texture"] = knobs.texture
    if objects != OBJECTS:
        params["objects"] = [int(v) for v in objects]
    if aspect is not None:
        params["aspect"] = [float(v) for v in aspect]
    if knobs.background != "soft":
        params["background"] = knobs.background
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
                                         object_size, distractors, synth.context, knobs=knobs)
        Image.fromarray(image).save(root / "images" / f"{image_id}.jpg", format="JPEG", quality=95, subsampling=0)
        write_label_png(root / "masks" / f"{image_id}.png", mask)
        tags[f"{image_id}.jpg"] = [classes[label - 1] for label in np.unique(mask) if label > 0]
    order = np.random.default_rng([seed, num_images, 1]).permutation(num_images)
    val = set(order[: int(round(val_fraction * num_images))].tolist())
    splits = {
        "train": [i for n, i in enumerate(ids) if n not in val],
        "val": [i for n, i in enumerate(ids) if n in val],
    }
    write_folder_dataset_index(root, classes, tags, splits)
    params_file.write_text(json.dumps(params) + "\n")
    return root
