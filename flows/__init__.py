"""Prefect flows of wsss. They orchestrate; the work is done by the ``wsss`` package.

    pipeline          data → classifier → pseudo-labels → segmenter → evaluation → report
    pseudo-labels     pseudo-labels for a data set, one task per shard of images
    self-training     the saliency of refine.saliency.source=segmenter (a first-round segmenter)
    train-classifier  the tag classifier
    train-segmenter   the segmenter
    evaluate          label PNGs against a data set's masks
    label-inbox       the scheduled flow: labels what is new in a watched folder

The flow modules do not use ``from __future__ import annotations``: a deployed flow's
parameters are validated from its annotations, which must be the classes themselves.

Each flow's tasks call the step entries of ``wsss.steps``; the modules beside the flows hold
what is Prefect's: ``task_runners`` (threads, processes, Dask), ``progress_artifacts`` (progress
where Prefect users look), ``prefect_server`` (a local ``prefect server start``),
``shard_passes`` (the pseudo-labels flow's shards, in two passes, and their tallies) and
``shard_events`` (log lines for a lost worker's shard redone, another run's images). The flows
never import the command line.

Run one from the shell with ``wsss flow run NAME``, serve the inbox with ``wsss flow serve``,
or call it from Python (``from flows.pipeline import pipeline; pipeline(load_config(...))``).
"""

import ast
import importlib
import importlib.util
from pathlib import Path

# name on the command line → (module, flow function)
FLOWS = {
    "pipeline": ("flows.pipeline", "pipeline"),
    "pseudo-labels": ("flows.pseudo_labels", "pseudo_labels"),
    "self-training": ("flows.self_training", "self_training"),
    "train-classifier": ("flows.training", "train_classifier"),
    "train-segmenter": ("flows.training", "train_segmenter"),
    "evaluate": ("flows.evaluation", "evaluate"),
    "label-inbox": ("flows.label_inbox", "label_inbox"),
}


def load_flow(name: str):
    """The flow function registered as ``name`` (a key of FLOWS)."""
    if name not in FLOWS:
        raise ValueError(f"flow {name!r}: expected one of {', '.join(sorted(FLOWS))}")
    module, attribute = FLOWS[name]
    return getattr(importlib.import_module(module), attribute)


def flow_parameters(name: str) -> dict[str, bool]:
    """The parameters of flow ``name`` → whether each is required (has no default), read from
    the flow module's source without importing it (so that ``wsss flow run`` can check its
    ``--param`` before a Prefect server is started and Prefect imported)."""
    if name not in FLOWS:
        raise ValueError(f"flow {name!r}: expected one of {', '.join(sorted(FLOWS))}")
    module, attribute = FLOWS[name]
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8"))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == attribute)
    arguments = [*function.args.posonlyargs, *function.args.args]
    required = len(arguments) - len(function.args.defaults)
    parameters = {a.arg: i < required for i, a in enumerate(arguments)}
    parameters.update({a.arg: d is None for a, d in zip(function.args.kwonlyargs, function.args.kw_defaults)})
    return parameters
