"""Render an evaluation (``EvalRun.as_dict()``) as readable tables."""

from __future__ import annotations

from typing import Any


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _verification(v: dict[str, Any]) -> list[str]:
    lines = [
        f"Verification: {v['pairs']} pairs ({v['same_pairs']} same, {v['different_pairs']} "
        f"different), {v['folds']} folds ({v['fold_source']})",
        f"  accuracy           {_number(v['accuracy'])} ± {_number(v['accuracy_std'])}  "
        f"(threshold {_number(v['threshold'], 3)} ± {_number(v['threshold_std'], 3)})",
        f"  balanced accuracy  {_number(v['balanced_accuracy'])}  "
        f"(threshold {_number(v['balanced_threshold'], 3)})",
        f"  ROC AUC            {_number(v['auc'])}",
    ]
    for far, tar in v["tar_at_far"].items():
        lines.append(f"  TAR @ FAR {far:<7}  {_number(tar)}  "
                     f"(above {_number(v['tar_at_far_threshold'][far], 3)})")
    lines.append(f"  pairs with a face missing: {v['pairs_with_missing_face']} "
                 "(scored -1, i.e. decided 'different')")
    return lines


def _search(s: dict[str, Any], impostor: dict[str, Any]) -> list[str]:
    fmr = {round(row["threshold"], 4): row["fmr"] for row in impostor["fmr"]}
    lines = [
        f"1:N self-search: {s['searches']} mated searches ({s['selfies_without_face']} selfies "
        f"without a face), {s['nonmated_searches']} non-mated; gallery {s['gallery_images']} "
        f"photos, {s['gallery_faces']} faces",
        "  threshold  recall   FNIR     FPIR     FPIR(lab)  false/search  non-centre  FMR",
    ]
    for row in s["sweep"]:
        mark = "*" if abs(row["threshold"] - s["threshold"]) < 1e-9 else " "
        rate = fmr.get(round(row["threshold"], 4))
        lines.append(
            f" {mark}{row['threshold']:<9.3f}  {_number(row['recall'])}   "
            f"{_number(row['fnir'])}   {_number(row['fpir'])}   "
            f"{_number(row['fpir_labelled_only'])}     {_number(row['false_matches_per_search'])}"
            f"        {row['non_centre_hits']:<10d}  {'n/a' if rate is None else f'{rate:.2e}'}")
    lines.append(
        f"  at threshold {s['threshold']:.3f}: recall {_number(s['recall'])}, FNIR "
        f"{_number(s['fnir'])}, FPIR {_number(s['fpir'])}, "
        f"{_number(s['false_matches_per_search'])} false matches per search")
    best = s["recall_at_fpir_1pct"]
    lines.append("  recall at FPIR <= 1%: " + (
        "none of the thresholds" if best is None else
        f"{_number(best['recall'])} at threshold {best['threshold']:.3f} "
        f"(FPIR {_number(best['fpir'])})"))
    lines.append("  FPIR(lab): only photos matched through their labelled (centre) face; "
                 "non-centre: other people's photos matched through another face")
    lines.append(
        f"  FMR: share of {impostor['comparisons']:,} comparisons of labelled faces of "
        f"different people above the threshold ({impostor['faces']} faces"
        f"{', sampled' if impostor['sampled'] else ''}; highest {_number(impostor['max_score'])})"
        "; an index of N faces gives about N x FMR false matches per search")
    return lines


def _clustering(c: dict[str, Any]) -> list[str]:
    def row(mark: str, s: dict[str, Any]) -> str:
        error, size = s["identities_error"], s.get("index_faces")
        return (f" {mark}{s['threshold']:<9.3f}  {_number(s['pairwise_precision'])}  "
                f"{_number(s['pairwise_recall'])}  {_number(s['bcubed_precision'])}  "
                f"{_number(s['bcubed_recall'])}  {_number(s['bcubed_f1'])}  "
                f"{s['predicted_identities']:>6} / {s['true_identities']:<6} "
                f"{'n/a' if error is None else f'{error:+.3f}'}  "
                f"{'' if size is None else f'{size:,}'}")

    s, guard = c["scores"], c["without_guard"]
    lines = [
        f"Identity clustering ({c['method']}, k {c['k']}, min link {c['min_link']:g}): "
        f"{c['faces']} faces clustered, the {c['scored_faces']} labelled ones scored",
        "  threshold  pw prec  pw rec   B3 prec  B3 rec   B3 F1   identities      error   "
        "default for indexes of up to (faces)",
    ]
    lines += [row("*" if abs(r["threshold"] - c["threshold"]) < 1e-9 else " ", r)
              for r in c["sweep"]]
    lines.append(
        f"  at threshold {c['threshold']:.3f}: pairwise P/R/F1 {_number(s['pairwise_precision'])}"
        f" / {_number(s['pairwise_recall'])} / {_number(s['pairwise_f1'])}, BCubed P/R/F1 "
        f"{_number(s['bcubed_precision'])} / {_number(s['bcubed_recall'])} / "
        f"{_number(s['bcubed_f1'])}; {s['predicted_identities']} identities estimated for "
        f"{s['true_identities']} true")
    lines.append(f"  without the chaining guard: pairwise precision "
                 f"{_number(guard['pairwise_precision'])}, BCubed F1 {_number(guard['bcubed_f1'])}"
                 f", {guard['predicted_identities']} identities")
    return lines


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"faceaudit eval: {result['images']} images, {result['identities']} identities, "
        f"model pack {result['model_pack']}; {result['seconds']:.1f} s "
        f"({result['images_per_second']:.1f} images/s)",
        f"no face detected in {result['no_face_images']} images, "
        f"{result['failed_images']} failed",
    ]
    if result["no_face_examples"]:
        lines.append("  e.g. " + ", ".join(result["no_face_examples"][:5]))
    if result["verification"] is not None:
        lines += [""] + _verification(result["verification"])
    lines += [""] + _search(result["search"], result["impostor"])
    if result.get("clustering"):
        lines += [""] + _clustering(result["clustering"])
    if result.get("templates"):
        lines += [""] + _templates(result["templates"])
    examples = result["search"]["false_match_examples"][:10]
    if examples:
        lines += ["", f"Highest-scoring false matches at {result['search']['threshold']:.3f}:"]
        lines += [f"  {e['score']:.3f}  {e['selfie']} -> {e['photo']}"
                  f"{'' if e['labelled_face'] else '  (not the labelled face)'}"
                  for e in examples]
    return "\n".join(lines)


def _templates(t: dict[str, Any]) -> list[str]:
    same = t["same_person"]
    lines = [f"Templates of several faces (thresholds from {t['thresholds_from']}); "
             "same-person level between two selfies: "
             + ("n/a" if same is None else f"{same['level']:.3f} (pair FMR {same['pair_fmr']:g}"
                f", refuses {_number(same['same_person_refused'])} of one person's pairs)"),
             "  curve         faces  templates  people  comparisons  window       raised by"]
    for c in t["tails"]:
        tail = c["tail"]
        lines.append(f"  {c['kind']:<12}  {c['faces']:>5}  {c['templates']:>9}  "
                     f"{c['people']:>6}  {c['impostor_comparisons']:>11,}  "
                     f"{tail['fit_from']:.3f}-{tail['fit_to']:.3f}  "
                     f"{c['validation']['raised_by']:g}")
    lines += [f"  not fitted: {why}" for why in t["not_fitted"]]
    lines.append("  faces in index  selfies  default  recall   6-40 photos  with expansion")
    for r in t["recall"]:
        grown = r["expanded"]
        lines.append(f"  {r['faces']:>14,}  {r['selfies']:>7}  {r['default']:.3f}    "
                     f"{_number(r['recall'], 3)}    {_number(r['recall_6_40'], 3)}        "
                     + ("n/a" if grown is None else
                        f"{_number(grown['recall'], 3)} / {_number(grown['recall_6_40'], 3)}"))
    return lines
