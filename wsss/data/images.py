"""Reading images from disk into RGB uint8 arrays, with the conversions a data set needs.

Every reader returns H×W×3 uint8 RGB. Inputs that are readable but unusual are converted
and the conversion is reported (``ImageNotes``) so that ``wsss data check`` can list it:
grayscale → RGB, alpha channel dropped (composited on black), 16-bit → 8-bit, and an EXIF
orientation applied (the array is the image as a viewer shows it, which is what masks drawn on
it follow). Unreadable or truncated files, and images over PIL's decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS``), raise ``ImageReadError`` naming the file.

Only regular files are opened (:func:`regular_file`, the one rule of every reader here and of
the walks' size probe): a FIFO named like an image would block ``open`` until something writes
to it, so it, a device, a socket or a folder raises ``ImageReadError`` ("not a regular file")
and fails its image alone.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_EXIF_ORIENTATION = 0x0112
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


@dataclass
class ImageNotes:
    """Conversions applied while reading one image (empty when it was plain 8-bit RGB)."""

    conversions: list[str] = field(default_factory=list)


def read_rgb(path: str | os.PathLike, notes: ImageNotes | None = None) -> np.ndarray:
    """Read an image file → H×W×3 uint8 RGB.

    Grayscale is replicated to three channels, an alpha channel is composited on black,
    16-bit and float images are rescaled to 0..255; each such conversion is appended to
    ``notes`` when given. Raises ImageReadError for a corrupt or truncated file.
    """
    with decoded_image(path, "image") as image:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation not in (1, None):
            image = ImageOps.exif_transpose(image)
            if notes is not None:
                notes.conversions.append(f"EXIF orientation {orientation} applied (rotated/flipped as shown)")
        return _to_rgb(image, notes)


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def regular_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` when it names a regular file (symlinks followed), checked without opening it.
    FileNotFoundError when nothing is there; ImageReadError naming the file for anything else
    (a FIFO, which ``open`` would wait on for ever, a device, a socket, a folder)."""
    path = Path(path)
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        raise ImageReadError(f"{path}: not a regular file ({kind}); the {what} must be one")
    return path


@contextmanager
def decoded_image(path: str | os.PathLike, what: str) -> Iterator[Image.Image]:
    """The PIL image of ``path``, fully decoded (truncated data raises here). FileNotFoundError
    passes; a file PIL cannot decode, one over ``Image.MAX_IMAGE_PIXELS`` (a decompression
    bomb), or anything but a regular file (:func:`regular_file`) raises ImageReadError naming
    the file and ``what`` it was meant to be."""
    path = Path(path)
    try:
        with Image.open(regular_file(path, what)) as image:
            image.load()
            yield image
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{path}: refused, too many pixels ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageReadError(f"{path}: cannot decode {what} ({error})") from error


def _to_rgb(image: Image.Image, notes: ImageNotes | None) -> np.ndarray:
    def note(text: str) -> None:
        if notes is not None:
            notes.conversions.append(text)

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        note(f"{mode} ({'16-bit' if peak > 255 else 'integer'}) grayscale rescaled to 8-bit RGB")
        gray = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        note("alpha channel composited on black")
        rgba = np.asarray(image.convert("RGBA")).astype(np.float32)
        rgb = rgba[:, :, :3] * (rgba[:, :, 3:4] / 255.0)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    if mode in ("L", "1"):
        note("grayscale replicated to RGB")
    elif mode != "RGB":
        note(f"mode {mode} converted to RGB")
    return np.array(image.convert("RGB"))  # a writable copy


def stored_image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(H, W) of an image file as ``read_rgb`` returns it (EXIF rotations by 90° swap the
    sides), from its header alone (nothing is decoded); None when the header cannot be read or
    ``path`` is not a regular file (reading the image will then say why)."""
    try:
        with Image.open(regular_file(path, "image")) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - any failure: unknown, left to read_rgb to report
        return None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def read_gray01(path: str | os.PathLike) -> np.ndarray:
    """Read a saliency map → H×W float32 in [0, 1] (8- or 16-bit grayscale, or RGB averaged)."""
    with decoded_image(path, "saliency map") as image:
        if image.mode.startswith("I;16") or image.mode == "I":
            return (np.asarray(image).astype(np.float32) / 65535.0).clip(0, 1)
        if image.mode == "F":
            return np.asarray(image).astype(np.float32).clip(0, 1)
        return np.asarray(image.convert("L")).astype(np.float32) / 255.0
