"""Prefect flows of wsss. They orchestrate; the work is done by the ``wsss`` package.

    pseudo_labels     pseudo-labels for a data set, one task per shard of images
    train_classifier  the tag classifier
    train_segmenter   the segmenter
    evaluate          label PNGs against a data set's masks
    pipeline          data → classifier → pseudo-labels → segmenter → evaluation → report
    label_inbox       the scheduled flow: labels what is new in a watched folder

The flow modules do not use ``from __future__ import annotations``: a deployed flow's
parameters are validated from its annotations, which must be the classes themselves.

Run one from Python (``from flows.pipeline import pipeline; pipeline(load_config(...))``),
or from the shell: ``python -m flows --help``.
"""
