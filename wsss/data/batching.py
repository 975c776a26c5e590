"""The batching rule of every walk over a data set (``wsss.data.dataset_walk``), in one function.

Images are grouped by the size the walk computes them at (their header's size, after an EXIF
rotation and ``data.max_side``), so that on a mix of sizes (VOC: mostly 500×375 and 375×500
with a long tail) batches stay full, and batch members are never padded or resized: each
output equals the one of the image computed alone. Within a group, and between groups (by their
first image), the id order is kept.

A walk whose model sees each image at a size of its own making may group coarser: ``size_key``
maps an image's (H, W) to the key of its group. The pseudo-labels group by the model's input
size (each side rounded to the patch stride, ``wsss.models.vit_geometry.model_input_size``), so
a folder of photos of a hundred sizes near one another fills its batches too, and each image is
still computed exactly as it would be alone (its maps at that input size, the rest of the chain
at its own size).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator

from wsss.data.base import Dataset, DatasetError, Sample
from wsss.data.images import ImageReadError, stored_image_size
from wsss.data.size_limit import fit_max_side, working_size

__all__ = ["same_size_batches", "size_grouped"]


SizeKey = Callable[[tuple[int, int]], Hashable]


def size_grouped(dataset: Dataset, ids: Iterable[str], size_key: SizeKey | None = None) -> list[str]:
    """``ids`` reordered so that images of one working size (or one ``size_key`` of it) follow
    each other: groups in the order of their first image, ids in their order within a group. An
    image whose header cannot be read keeps a place of its own (loading it reports why)."""
    groups: dict[object, list[str]] = {}
    for image_id in ids:
        try:
            size = stored_image_size(dataset.image_path(image_id))
        except (DatasetError, OSError, KeyError):
            size = None
        if size is not None and dataset.max_side is not None:
            size = working_size(*size, dataset.max_side)
        if size is not None and size_key is not None:
            size = size_key(size)
        groups.setdefault(size if size is not None else ("unknown", image_id), []).append(image_id)
    return [image_id for group in groups.values() for image_id in group]


def same_size_batches(
    dataset: Dataset,
    ids: Iterable[str],
    batch_size: int,
    on_failure: Callable[[str, str], None],
    needs_tags: bool = True,
    masks: bool = False,
    on_note: Callable[[str, str], None] | None = None,
    size_key: SizeKey | None = None,
) -> Iterator[list[Sample]]:
    """Yield lists of at most ``batch_size`` loaded samples of one image size (with ``size_key``:
    of one key of their (H, W)), the ids grouped first (:func:`size_grouped`): every batch is
    full except the last of each group.

    An image that cannot be read (its image, its mask when ``masks``, its saliency map, its
    tags; or no tags, when ``needs_tags``), or is over the data set's ``max_side`` when it
    refuses such images, is reported through ``on_failure(id, reason)`` and left out; the walk
    goes on. An image over ``max_side`` is otherwise shrunk (``wsss.data.size_limit``) and
    ``on_note(id, note)`` says so. Masks are read only when ``masks`` is True.
    """
    key = size_key or (lambda size: size)
    pending: list[Sample] = []
    for image_id in size_grouped(dataset, ids, size_key):
        try:
            sample, note = fit_max_side(dataset.load(image_id, masks=masks), dataset.max_side, dataset.oversize,
                                        where=str(dataset.image_path(image_id)))
        except (ImageReadError, DatasetError, ValueError, OSError) as error:  # ValueError: e.g. an RGB mask
            on_failure(image_id, str(error) if isinstance(error, (ImageReadError, DatasetError))
                       else f"{type(error).__name__}: {error}")
            continue
        if needs_tags and not sample.tags.any():
            on_failure(image_id, "no tags: nothing to localise")
            continue
        if note and on_note is not None:
            on_note(image_id, note)
        if pending and key(pending[0].image.shape[:2]) != key(sample.image.shape[:2]):
            yield pending
            pending = []
        pending.append(sample)
        if len(pending) == batch_size:
            yield pending
            pending = []
    if pending:
        yield pending
