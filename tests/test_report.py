import base64
import io
import re

import numpy as np
from PIL import Image

from wsss.report import Example, Report, bar_chart_svg, write_report


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
    path = write_report(tmp_path / "r" / "report.html", report)
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
