import base64
import io
import re

import numpy as np
from PIL import Image

from wsss.eval.confusion import ConfusionMatrix
from wsss.eval.stages import MethodStages, StageResults
from wsss.report.html import Example, Report, bar_chart_svg, write_html


def test_report_is_self_contained_and_shows_everything(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    image[2:5, 2:5] = (255, 0, 0)
    report = Report(
        title="demo <run>",
        stages=[{"stage": "raw GETAM", "mIoU": 41.2}, {"stage": "+PAMR", "mIoU": 50.0, "threshold": 0.35}],
        per_class_iou={"GETAM": {"disk": 0.8, "square": None}, "rollout": {"disk": 0.3, "square": 0.1}},
        notes=["saliency source: tokencut"],
        examples=[Example("img0", {"image": image, "label": image[::-1]})],
    )
    path = write_html(tmp_path / "r" / "report.html", report)
    page = path.read_text()
    assert "demo &lt;run&gt;" in page and "<td>41.2</td>" in page and "<td>0.35</td>" in page
    assert "saliency source: tokencut" in page and "<svg" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    uris = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(uris) == 2
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[0]))))
    assert np.array_equal(decoded, image)
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_bar_chart_skips_missing_values():
    svg = bar_chart_svg({"a": {"x": 0.5, "y": None}})
    assert svg.count("<rect") == 2  # one bar + one legend swatch
    assert ">50.0<" in svg


def _matrix(correct: int, wrong: int) -> ConfusionMatrix:
    """2-class confusion matrix of ``correct`` right and ``wrong`` wrong pixels (mIoU falls with ``wrong``)."""
    matrix = ConfusionMatrix(2)
    gt = np.array([[0] * correct + [1] * correct + [1] * wrong], dtype=np.uint8)
    pred = np.array([[0] * correct + [1] * correct + [0] * wrong], dtype=np.uint8)
    matrix.update(pred, gt)
    return matrix


def test_stage_drops_name_the_steps_that_do_not_help():
    def stages(raw, pamr, rule, crf):
        return MethodStages({0.5: _matrix(10, raw)}, {0.5: _matrix(10, pamr)}, _matrix(10, rule), _matrix(10, crf))

    results = StageResults(classes=["a"], saliency="tokencut")
    results.methods["getam"] = stages(6, 2, 4, 3)  # +saliency is worse than +PAMR, the rest better
    results.methods["rollout"] = stages(6, 5, 4, 3)  # every step helps
    drops = results.drops()
    assert len(drops) == 3 and drops[0].startswith("getam: +saliency, conflict ")
    assert "below +PAMR" in drops[0] and "oracle threshold" in drops[1] and "TokenCut" in drops[2]
    assert "where a step does not help:" in results.text_table()

    results.failed["img7"] = "ImageReadError: cannot decode"
    assert "not scored: 1 image(s), e.g. img7: ImageReadError: cannot decode" in results.text_table()
    results.failed.clear()
    results.methods.pop("getam")
    results.saliency = "none"
    assert results.drops() == [] and "does not help" not in results.text_table()


def test_example_pictures_keep_their_aspect_and_are_shrunk_to_320_px():
    """A 375×500 photo and its overlay go into the page at 240×320 (aspect kept, not squared);
    a small picture stays at its own size."""
    from wsss.report.html import render_html

    photo = np.random.default_rng(0).integers(0, 255, size=(375, 500, 3), dtype=np.uint8)
    small = np.zeros((40, 30, 3), dtype=np.uint8)
    page = render_html(Report(title="t", examples=[Example("a", {"image": photo, "label": small})]))
    sizes = [Image.open(io.BytesIO(base64.b64decode(data))).size
             for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]
    assert sizes == [(320, 240), (30, 40)]
