"""Section 7 of ``benchmarks/templates.py``: the template curves as ``faceaudit eval
--calibrate`` fits them (faceaudit.research.evaluation.template_report), their held-out check,
and the thresholds and recall they give through ``Calibration.for_template``."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import templates_lib as tl

from faceaudit.models.calibration import Calibration
from faceaudit.models.calibration_files import calibration_path
from faceaudit.models.packs import buffalo_s
from faceaudit.models.template_tails import TemplateCalibration
from faceaudit.models.thresholds import STRONG_EXPECTED_FALSE_MATCHES
from faceaudit.research.evaluation.protocol import _clean
from faceaudit.research.evaluation.template_report import SIZES, table_report
from faceaudit.research.evaluation.templates import FaceTable

TEMPLATES = [(k, 0) for k in range(1, 6)] + [(1, 1), (2, 1), (1, 2), (3, 1), (1, 4), (3, 2)]


def _n(size: int) -> str:
    return f"10^{len(str(size)) - 1}"


def section(out: Any, data: tl.Data) -> dict[str, Any]:
    """Print the section; return the eval's ``templates`` JSON section it measured."""
    out("## 7. The calibration's template curves (faceaudit eval --calibrate's fit: "
        "research/evaluation/template_report.py), thresholds through Calibration.for_template")
    faces = data.faces
    table = FaceTable(faces.plain, faces.mirror, faces.photo, faces.labelled,
                      faces.identity_of_photo, data.people)
    shipped = Calibration.from_file(calibration_path(buffalo_s()))
    base = replace(shipped, templates=None)
    report = _clean(asdict(table_report(table, base, "the shipped one-photo calibration")))
    fitted = report["fitted"]
    out(f"fusion: {fitted['fusion']}; {fitted['per_person']} templates per person at most "
        f"(every one-face photo for 1 selfie), {fitted['max_templates']} per kind, seed "
        f"{fitted['seed']}; confirmed faces: the person's other photos above "
        f"{fitted['confirmed_join_above']} against the selfies alone; label errors: identity "
        f"pairs above {fitted['label_errors']['above']} "
        f"({fitted['label_errors']['identity_pairs']}) left out")
    same = report["same_person"]
    out(f"same-person level at pair FMR {same['pair_fmr']:g}: {same['level']} (refuses "
        f"{same['same_person_refused']:.2e} of {same['same_person_pairs']:,} same-person pairs)")
    rows = []
    for c in report["tails"]:
        tail, check = c["tail"], c["validation"]
        rows.append([c["kind"], c["faces"], c["templates"], c["people"],
                     c["impostor_comparisons"], tail["fit_from"], tail["fit_to"],
                     tail["rate_at_fit_to"], tail["scale"], check["raised_by"],
                     " ".join(f"{t}:{p:.0f}/{m}" for t, p, m in
                              check["predicted_vs_measured_pairs"])])
    out.table(["kind", "faces", "templ", "people", "pairs", "fit_from", "fit_to", "rate@to",
               "scale", "raised", "held-out people, threshold:predicted/measured pairs"], rows)
    out("(held-out: 10 halvings of the people, pooled; 'raised': the factor the tail was "
        "raised by where a check beyond the window measured more than predicted)")
    calibration = replace(base, templates=TemplateCalibration.from_eval(report))
    same_as_shipped = shipped.templates is not None and calibration.templates is not None and \
        all(calibration.for_template(s, c).operating_threshold(n)
            == shipped.for_template(s, c).operating_threshold(n)
            for s, c in TEMPLATES for n in SIZES)
    out(f"thresholds (the shipped file's templates section gives the same: {same_as_shipped})")
    rows = []
    for size in SIZES:
        for s, c in TEMPLATES:
            template = calibration.for_template(s, c)
            default = template.operating_threshold(size)
            rows.append([_n(size), s, c, default, template.expected_false_matches(default, size),
                         template.min_threshold(size),
                         template.threshold_for(size, STRONG_EXPECTED_FALSE_MATCHES)])
    out.table(["N", "selfies", "confirmed", "default", "exp@def", "floor", "strong"], rows)
    out("recall at the default (people with >= K+1 photos / with 6-40 photos), without and "
        "with expansion (faces above the 0.001-strangers level join, up to 5 faces; the "
        "second pass at the confirmed template's default)")
    rows = []
    for r in report["recall"]:
        grown = r["expanded"] or {}
        rows.append([_n(r["faces"]), r["selfies"], r["default"], r["recall"], r["recall_6_40"],
                     r["people_6_40"], grown.get("join_above"), grown.get("grew"),
                     grown.get("default_max"), grown.get("recall"), grown.get("recall_6_40"),
                     grown.get("joined_labelled_strangers")])
    out.table(["N", "K", "default", "recall", "rec 6-40", "people", "join above", "grew",
               "exp def max", "expanded", "exp 6-40", "other id joined"], rows)
    out()
    return report
