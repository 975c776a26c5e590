"""What made the files of an output folder, and one kind of files per folder.

Every command and flow that writes per-image outputs into a folder (pseudo-labels, predictions,
attention maps, saliency maps) records what made them in ``OUT/source.json`` and refuses to
finish a folder made by something else, which would mix two kinds of outputs:

    claim_output_dir(out, label_source(config.cam, config.refine, config.data, digest))

A source is a plain dict: the checkpoint's SHA-256 plus the settings that change the outputs
(not those that change only speed: batch sizes, worker counts).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from wsss.config import CamConfig, CrfConfig, DataConfig, PredictConfig, RefineConfig, SaliencyConfig
from wsss.files import make_folder, write_json
from wsss.lifetime import LOCK_FILE

__all__ = ["SOURCE", "claim_output_dir", "recorded_classes", "label_source", "maps_source", "prediction_source",
           "saliency_maps_source", "source_differences"]

SOURCE = "source.json"


def _data_part(data: DataConfig) -> dict:
    """Of the ``data`` section, what changes any output: the size limit (and the saliency folder)."""
    return data.model_dump(mode="json", include={"saliency_dir", "max_side", "oversize"})


def label_source(cam: CamConfig, refine: RefineConfig, data: DataConfig, digest: str) -> dict:
    """What determines pseudo-labels: the classifier's digest, the map method (``cam``), the
    refinement settings (without the CRF's worker count and overlap; with ``refine.sam`` on, its checkpoint's
    size in bytes too: cheap, where a digest of a SAM file would read gigabytes), and of ``data``
    the saliency folder and the size limit."""
    settings = refine.model_dump(mode="json", exclude={"crf": {"workers", "overlap"}})
    sam = refine.sam
    if sam.enabled and sam.checkpoint is not None and Path(sam.checkpoint).is_file():
        settings["sam"]["checkpoint_bytes"] = Path(sam.checkpoint).stat().st_size
    return {
        "checkpoint_sha256": digest,
        "cam": cam.model_dump(mode="json", exclude={"batch_size"}),
        "refine": settings,
        "data": _data_part(data),
    }


def prediction_source(digest: str, predict: PredictConfig, crf: CrfConfig | None, data: DataConfig) -> dict:
    """What determines ``wsss predict``'s labels: the segmenter's digest, the ``predict``
    section's scales, flip and guided filter (named only when on), the CRF (None: off) and the
    size limit."""
    source = {
        "checkpoint_sha256": digest, "scales": [float(s) for s in predict.scales], "flip": bool(predict.flip),
        "crf": None if crf is None else crf.model_dump(mode="json", exclude={"workers", "overlap", "enabled"}),
        "data": _data_part(data),
    }
    if predict.guided_filter.radius > 0:
        source["guided_filter"] = predict.guided_filter.model_dump(mode="json")
    return source


def maps_source(digest: str, cam: CamConfig, method: str, data: DataConfig) -> dict:
    """What determines ``wsss cam``'s maps: the classifier's digest, the method and its
    ``cam`` settings, the size limit."""
    return {"checkpoint_sha256": digest, "cam": {**cam.model_dump(mode="json", exclude={"batch_size"}), "method": method},
            "data": _data_part(data)}


def saliency_maps_source(digest: str | None, saliency: SaliencyConfig, objects: int, data: DataConfig) -> dict:
    """What determines ``wsss saliency``'s TokenCut maps: the classifier's digest (None when
    they are cut on ``saliency.backbone``), TokenCut's settings, the backbone section (None: the
    classifier's keys), the size limit."""
    backbone = None if saliency.backbone is None else saliency.backbone.model_dump(mode="json")
    return {"checkpoint_sha256": digest, "tokencut": {"tau": saliency.tokencut_tau, "eps": saliency.tokencut_eps,
                                                      "objects": objects},
            "backbone": backbone, "data": _data_part(data)}


# the parts of a source that are dumps of a settings section: their defaults are known
_SECTION_PARTS = {"cam": CamConfig, "refine": RefineConfig, "data": DataConfig, "crf": CrfConfig}


def _default_at(path: list[str]):
    """The default value of the setting at ``path`` (e.g. ["refine", "sam", "enabled"]), or a
    marker that never equals a value when the path is not a known section's setting."""
    section = _SECTION_PARTS.get(path[0])
    value = section().model_dump(mode="json") if section is not None else None
    for key in path[1:]:
        if not isinstance(value, dict) or key not in value:
            return _UNKNOWN
        value = value[key]
    return value if section is not None else _UNKNOWN


_UNKNOWN = object()

# top-level parts of a source that older folders lack: no difference when missing from a record
ADDED_LATER = {"classes"}


def source_differences(previous: dict, source: dict, path: tuple[str, ...] = ()) -> list[str]:
    """What differs between a recorded source and a new one, as "key.path: old → new" lines.

    A setting that the recorded source lacks was added to wsss after the folder was made: it
    is no difference when its new value is its default (a new setting's default keeps the old
    behaviour), and one otherwise (e.g. ``refine.sam.enabled: true`` into an older folder). A
    whole part missing at the top level (e.g. ``data`` in folders of older versions) is one,
    except those of ``ADDED_LATER`` (the class names, recorded since December 2026).
    """
    lines = []
    for key in sorted(set(previous) | set(source)):
        where = [*path, key]
        old, new = previous.get(key), source.get(key)
        if not path and key in ADDED_LATER and key not in previous:
            continue  # a record made before wsss kept it
        if key not in previous and path:
            if new == _default_at(where):
                continue
            if isinstance(new, dict):  # a new section: which of its settings are not at their defaults
                old = {}
        if isinstance(old, dict) and isinstance(new, dict):
            lines += source_differences(old, new, tuple(where))
        elif old != new:
            lines.append(f"{'.'.join(where)}: {json.dumps(old)} → {json.dumps(new)}")
    return lines


def claim_output_dir(out_dir: str | os.PathLike, source: dict, strict: bool = True) -> str | None:
    """Make ``out_dir`` a folder of outputs of ``source``.

    A new (or empty) folder gets ``source.json``. A folder made with another source, or one that
    holds files but no ``source.json`` (not written by a wsss run: its files would be taken for
    finished outputs, e.g. ``--out`` naming the data set's own masks), raises ValueError when
    ``strict`` (naming what differs or what is there); otherwise the marker is written and a
    note saying so is returned (earlier outputs stay as they are).
    """
    out = make_folder(out_dir)  # NotAFolderError (a ValueError) when it names a file
    marker = out / SOURCE
    note = None
    if not marker.is_file():
        # hidden names are wsss's own (the lock, OUT/.claims, the temporary of a source.json another
        # run is writing right now), never outputs
        found = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE and not p.name.startswith("."))
        if found:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            note = (f"{out} holds {len(found)} file(s) or folder(s) ({shown}) but no {SOURCE}: nothing records "
                    f"that a wsss run of these settings wrote them")
            if strict:
                raise ValueError(f"{note}, and they would be taken for finished outputs. Give an output folder that is "
                                 f"new or empty (or one this command wrote before)")
    else:
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{marker}: not valid JSON ({error}); delete it to redo this folder") from error
        changed = source_differences(previous, source)
        if not changed:
            return None
        note = f"{out}: the files so far were made with other settings ({'; '.join(changed)})"
        if strict:
            raise ValueError(
                f"{note}; finishing the folder would mix two kinds of outputs. Use another output folder, "
                f"or delete {out} to redo everything"
            )
    write_json(marker, source)
    return note


def recorded_classes(out_dir: str | os.PathLike) -> list[str] | None:
    """The class names a folder's outputs were made with (its source.json), or None when it
    records none (no source.json, or made before the class names were recorded)."""
    marker = Path(out_dir) / SOURCE
    if not marker.is_file():
        return None
    try:
        classes = json.loads(marker.read_text(encoding="utf-8")).get("classes")
    except json.JSONDecodeError as error:
        raise ValueError(f"{marker}: not valid JSON ({error})") from error
    return None if classes is None else list(classes)
