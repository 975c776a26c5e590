"""The ``evaluate`` flow: score a folder of label PNGs against a data set's masks."""

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from wsss.config import Config
from wsss.data import open_dataset
from wsss.eval.evaluate import evaluate_label_dir
from wsss.files import write_json
from wsss.report.artifact_content import evaluation_rows
from wsss.steps.label_plan import has_masks


@flow(name="evaluate", log_prints=True)
def evaluate(predictions: Path, config: Config = Config(), split: str | None = None,
             artifact_key: str = "evaluation") -> dict:
    """Score ``predictions/<id>.png`` against the masks of ``config.data`` (``split``; None: the
    validation split); writes ``predictions/evaluation.json`` and a table artifact; returns the
    scores (``Evaluation.to_dict``) plus the number of images."""
    split = split or config.data.val_split
    predictions = Path(predictions)
    dataset = open_dataset(config.data, split)
    if not has_masks(dataset):
        raise ValueError(f"{config.data.root} (split {split}): no masks to evaluate against")
    result = evaluate_label_dir(predictions, dataset, progress=False)
    print(result.summary(dataset.classes))
    scores = {**result.to_dict(dataset.classes), "images": len(dataset)}
    write_json(predictions / "evaluation.json", scores)
    create_table_artifact(
        table=evaluation_rows(scores), key=artifact_key,
        description=f"{predictions} against the masks of {config.data.root} ({split}): "
                    f"mIoU {100 * scores['mIoU']:.1f} % over {len(dataset) - scores['not_scored']} images",
    )
    return scores
