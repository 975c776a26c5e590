"""What the Prefect flows in ``flows/`` need beyond the pipeline's own code.

The flows only orchestrate; the logic they rely on lives here, importable by every worker
process (threads, a process pool, Dask):

    runners   the task runner named by ``config.flow`` (threads, processes, Dask)
    workers   the classifier and pseudo-labeller, loaded once per worker and cached
    shards    planning the work: what is finished on disk, shards of pending images, the
              manifest, the label folder's source marker
    artifacts the Markdown and table content of the flows' Prefect artifacts
    progress  progress artifacts and log lines of training loops and label shards
    inbox     the watched folder of ``label_inbox``
    segmenter the backbone's start, scoring a trained segmenter once, predictions of new images
    reporting the stage table and the report of a run (built by ``wsss.report``)
    server    a local ``prefect server start`` for schedules

Its functions take the settings' sections, like the rest of the library; only the flows and
the command line hold the whole ``Config``.
"""
