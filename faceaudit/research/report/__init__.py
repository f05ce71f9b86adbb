"""The dataset exposure report: how many photos, faces and people a dataset holds, under which
licences, how many people were photographed by others, with small counts withheld.

``make_report(folders, k)`` computes it; ``write_report(report, out)`` writes
``out/report.json`` and the self-contained ``out/index.html``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faceaudit.research.report.build import DEFAULT_K, make_report
from faceaudit.research.report.html import render_html

REPORT_JSON = "report.json"
REPORT_HTML = "index.html"

__all__ = ["DEFAULT_K", "REPORT_HTML", "REPORT_JSON", "make_report", "write_report"]


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``index.html`` into ``out`` (created); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / REPORT_JSON, out / REPORT_HTML
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path
