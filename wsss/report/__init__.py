"""Reports: report.json and report.html of a run, built in one place (``wsss.report.build``)
from results handed to it; ``wsss.report.html`` renders the page."""

from wsss.report.build import SegmenterResult, build_report, write_report
from wsss.report.html import Example, Report, render_html

__all__ = ["SegmenterResult", "build_report", "write_report", "Example", "Report", "render_html"]
