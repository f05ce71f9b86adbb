"""``index.html``: the report as one self-contained page (inline CSS, charts as inline SVG, no
script, nothing fetched), rendered with Jinja2 from the published tree of ``report.json``."""

from __future__ import annotations

import copy
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from faceaudit.indexer.summary import DOWNLOADED_KINDS
from faceaudit.research.report.publish import withhold
from faceaudit.research.report.svg import SECONDARY, bar_chart, count_text

TEMPLATE = "report.html.j2"


def _environment(k: int) -> Environment:
    env = Environment(loader=PackageLoader("faceaudit.research.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["n"] = lambda value: count_text(value, k)
    env.globals["error_summary"] = error_summary
    env.globals["downloaded_kinds"] = DOWNLOADED_KINDS
    env.filters["share"] = lambda value: "–" if value is None else f"{value:.1%}"
    env.globals["histogram_chart"] = lambda chart_id, title, histogram: bar_chart(
        chart_id, title, [(b["label"], b["count"]) for b in histogram["bins"]], k,
        histogram["counts"])
    env.globals["counts_chart"] = lambda chart_id, title, counts, counts_what: bar_chart(
        chart_id, title, list(counts.items()), k, counts_what)
    return env


def error_summary(error: dict[str, Any]) -> str:
    """The clustering's measured error in a few words, from ``identities_estimated_error``."""
    if not error.get("measured"):
        return "its error has not been measured yet"
    parts = []
    if error.get("identities_error") is not None:
        parts.append(f"the count was off by {error['identities_error']:+.1%}")
    if error.get("bcubed_precision") is not None and error.get("bcubed_recall") is not None:
        parts.append(f"BCubed precision {error['bcubed_precision']:.3f}, recall "
                     f"{error['bcubed_recall']:.3f}")
    where = f" on {error['dataset']}" if error.get("dataset") else ""
    return (f"measured{where}: " + "; ".join(parts)) if parts else f"measured{where}"


def render_html(report: dict[str, Any]) -> str:
    """The page of ``report``; a count withheld to protect another (``suppressed_secondary``,
    which may be k or more) is shown as "withheld", not as "<k"."""
    k = int(report["suppression"]["k"])
    secondary = set(report.get("suppressed_secondary", []))
    shown = copy.deepcopy(report)
    withhold(shown, secondary, SECONDARY)
    small = [where for where in report["suppressed"] if where not in secondary]
    return _environment(k).get_template(TEMPLATE).render(r=shown, k=k, small=small,
                                                         secondary=sorted(secondary))
