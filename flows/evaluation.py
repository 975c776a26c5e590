"""The ``evaluate`` flow: score a folder of label PNGs against a data set's masks."""

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from wsss.config import Config
from wsss.report.artifact_content import evaluation_rows
from wsss.steps.evaluate_step import evaluate_folder


def evaluation_artifact(scores: dict, key: str, description: str) -> None:
    """A table artifact of ``scores`` (``evaluate_folder``'s): IoU, precision, recall per class."""
    create_table_artifact(table=evaluation_rows(scores), key=key,
                          description=f"{description}: mIoU {100 * scores['mIoU']:.1f} %")


@flow(name="evaluate", log_prints=True)
def evaluate(predictions: Path, config: Config = Config(), split: str | None = None,
             artifact_key: str = "evaluation") -> dict:
    """Score ``predictions/<id>.png`` against the masks of ``config.data`` (``split``; None: the
    validation split); writes ``predictions/evaluation.json`` and a table artifact; returns the
    scores (``Evaluation.to_dict``) plus the number of images."""
    split = split or config.data.val_split
    predictions = Path(predictions)
    scores = evaluate_folder(config, predictions, split, json_path=predictions / "evaluation.json", progress=False,
                             require_predictions=True)  # a folder of none: an error, not a score of NaN
    evaluation_artifact(scores, artifact_key, f"{predictions} against the masks of {config.data.root} ({split}), "
                                              f"{scores['images'] - scores['not_scored']} images")
    return scores
