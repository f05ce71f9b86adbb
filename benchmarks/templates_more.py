"""Sections 4-6 of ``benchmarks/templates.py``: the same-person check between selfies,
automatic expansion of a template by its strong matches, per-query normalisation."""

from __future__ import annotations

from itertools import product
from typing import Any

import numpy as np
import templates_lib as tl

from faceaudit.models.calibration import Calibration
from faceaudit.research.metrics.verification import average_ranks

SIZES = (10**4, 10**6, 10**8)
PAIR_FMRS = (1e-2, 1e-3, 1e-4)
STRONG_ISSUE = 0.001
MIXED_PAIRS = 2000


def _n(size: int) -> str:
    return f"10^{len(str(size)) - 1}"


def _level(impostor: np.ndarray, fmr: float) -> float:
    allowed = int(np.floor(fmr * len(impostor) + 1e-9))
    return float(np.partition(impostor, len(impostor) - 1 - allowed)[len(impostor) - 1 - allowed])


def same_person(out: Any, data: tl.Data, kept: dict[int, tuple[tl.Scored, Calibration]]
                ) -> None:
    out("## 4. Same-person check between selfies (pairs of one-face photos, as selfies)")
    photos = np.flatnonzero(data.one_face >= 0)
    vectors = data.faces.mirror[data.one_face[photos]]
    person = data.faces.identity_of_photo[photos]
    scores = vectors @ vectors.T
    upper = np.triu(np.ones_like(scores, bool), 1)
    same = person[:, None] == person[None, :]
    alias = data.aliases[person][:, person]
    genuine, impostor = scores[upper & same], scores[upper & ~same & ~alias]
    pair_person = np.broadcast_to(person[:, None], scores.shape)[upper & same]
    out(f"{len(genuine):,} same-person pairs ({len(set(pair_person.tolist()))} people), "
        f"{len(impostor):,} different-person pairs; genuine p0.1/p1/p5/p50: "
        + "/".join(f"{v:.3f}" for v in np.percentile(genuine, [0.1, 1, 5, 50]))
        + "; impostor p50/p99.9/max: "
        + "/".join(f"{v:.3f}" for v in (*np.percentile(impostor, [50, 99.9]), impostor.max())))
    rng = np.random.default_rng(4)
    rows = []
    for fmr in PAIR_FMRS:
        level = _level(impostor, fmr)
        refused = genuine <= level
        by_person = [float(refused[pair_person == p].mean()) for p in np.unique(pair_person)]
        row: list[object] = [fmr, level, float(refused.mean()), float(np.mean(by_person))]
        for k in (2, 3, 5):
            selfies = kept[k][0].templates.selfies
            v = data.faces.mirror[data.one_face[selfies]]
            pair = np.einsum("tkd,tjd->tkj", v, v)
            iu = np.triu_indices(k, 1)
            row.append(float((pair[:, iu[0], iu[1]] <= level).any(axis=1).mean()))
        # an intruder: two selfies of one person and one of someone else
        base = kept[2][0].templates
        other = rng.integers(0, len(photos), len(base))
        keep = ~data.aliases[base.person, person[other]] & (base.person != person[other])
        trio = np.concatenate([base.selfies[keep], photos[other[keep], None]], axis=1)
        v = data.faces.mirror[data.one_face[trio]]
        pair = np.einsum("tkd,tjd->tkj", v, v)
        caught = (pair[:, [0, 0, 1], [1, 2, 2]] <= level).any(axis=1)
        pair[:, np.arange(3), np.arange(3)] = np.nan
        named = np.nanargmin(np.nanmean(pair, axis=2), axis=1) == 2
        row += [float(caught.mean()), float((caught & named).sum() / max(1, caught.sum()))]
        rows.append(row)
    out.table(["pair FMR", "level", "gen refused", "by person", "K=2 sets refused",
               "K=3", "K=5", "intruder caught", "named right"], rows)
    _lookalikes(out, data, kept, photos, person, scores, upper & ~same & ~alias,
                _level(impostor, 1e-3), rng)
    out()


def _lookalikes(out: Any, data: tl.Data, kept: dict[int, tuple[tl.Scored, Calibration]],
                photos: np.ndarray, person: np.ndarray, scores: np.ndarray,
                different: np.ndarray, level: float, rng: np.random.Generator) -> None:
    """Two different people who pass the check, fused: their template's tail, and how much
    of the second person it shows."""
    rows, columns = np.nonzero(different & (scores > level))
    pick = rng.choice(len(rows), min(MIXED_PAIRS, len(rows)), replace=False)
    a, b = photos[rows[pick]], photos[columns[pick]]
    selfies = np.stack([a, b], axis=1)
    owner, second = person[rows[pick]], person[columns[pick]]
    mixed = tl.score(data, tl.Templates(owner, selfies, tl.fuse(data, selfies, "mean")))
    column_person = data.faces.identity_of_photo
    mixed.impostor[(second[:, None] == column_person[None, :])
                   | data.aliases[second][:, column_person]] = np.nan
    values = mixed.impostor_scores()
    cal2, cal1 = kept[2][1], kept[1][1]
    single = kept[1][0]
    index_of = {int(s): i for i, s in enumerate(single.templates.selfies[:, 0])}
    parts = [f"{len(rows):,} different-person pairs pass the 1e-3 level; {len(pick)} fused into "
             f"2-selfie templates: third-party FMR measured / K=2 tail at"]
    for t in (0.35, 0.40):
        parts.append(f" {t}: {float((values > t).mean()):.2e} / {cal2.false_match_rate(t):.2e}")
    out(";".join(parts))
    for size in (10**6, 10**8):
        d2, d1 = cal2.operating_threshold(size), cal1.operating_threshold(size)
        shown_mixed, shown_single = [], []
        for t, (p, s) in enumerate(zip(second.tolist(), b.tolist(), strict=True)):
            others = np.setdiff1d(data.photos_of[p], [s])
            if len(others):
                shown_mixed.append(float((mixed.best[t, others] > d2).mean()))
                shown_single.append(float((single.best[index_of[int(a[t])], others]
                                           > d1).mean()))
        out(f"  at {_n(size)}: the second person's other photos shown by the fused template "
            f"(K=2 default {d2}) {np.mean(shown_mixed):.3f}, by the first person's selfie "
            f"alone (K=1 default {d1}) {np.mean(shown_single):.3f}")


def _joined(face_scores: np.ndarray, candidates: np.ndarray, most: int | None) -> np.ndarray:
    """The candidate faces that join each template: all, or its ``most`` best."""
    if most is None:
        return candidates
    keep = np.zeros_like(candidates)
    if most <= 0:
        return keep
    ranked = np.where(candidates, face_scores, -np.inf)
    best = np.argpartition(-ranked, most - 1, axis=1)[:, :most]
    np.put_along_axis(keep, best, True, axis=1)
    return keep & candidates


def expansion(out: Any, data: tl.Data, kept: dict[int, tuple[tl.Scored, Calibration]],
              splits: int) -> None:
    out("## 5. Automatic expansion: faces above 'strong' (< 0.001 strangers expected at N) join "
        "the template (plain mean of the selfies and them), searched again")
    out("final answer: second pass at the expanded templates' own default (their tail fitted "
        "on the templates that grew), plus the first pass's strong matches; templates that "
        "joined nothing keep the K default. cap: template faces at most (selfies + joined)")
    six_to_forty = tl.group(data, 6, 40)
    rows, checks = [], []
    for k in (1, 3):
        scored, cal = kept[k]
        templates = scored.templates
        selfie_sum = data.faces.mirror[data.one_face[templates.selfies]].sum(axis=1)
        face_scores = templates.vectors @ data.faces.plain.T
        own_photo = np.zeros(face_scores.shape, bool)
        for t, selfies in enumerate(templates.selfies):
            own_photo[t, np.isin(data.faces.photo, selfies)] = True
        identity_match = (data.identity[None, :] == templates.person[:, None]) \
            & data.faces.labelled[None, :]
        for mode, cap, size in product(("strong", "confirmed"), (None, 5), SIZES):
            strong = cal.threshold_for(size, STRONG_ISSUE)
            default = cal.operating_threshold(size)
            if mode == "strong":
                candidates = (face_scores > strong) & ~own_photo
            else:  # a person confirms their own photos found at the default, nothing else
                candidates = (face_scores > default) & ~own_photo & identity_match
            joined = _joined(face_scores, candidates, None if cap is None else cap - k)
            row, check = _expanded(data, scored, joined, selfie_sum,
                                   strong if mode == "strong" else default, default, size,
                                   six_to_forty, splits)
            rows.append([k, mode, "-" if cap is None else cap, _n(size), *row])
            if check is not None:
                checks.append((k, mode, cap, size, check))
    out.table(["K", "joins", "cap", "N", "join above", "grew", "joined med", "other id",
               "(labelled)", "K default", "exp default", "exp@K def", "rest@K def", "rec 6-40",
               "expanded", "rec >=K+1", "expanded", "6-40 max"], rows)
    out("joins: 'strong' = every face above strong; 'confirmed' = the person's own labelled "
        "faces found above the K default (a perfect 'this is me'), strangers never. other id: "
        "faces joined whose photo is labelled with someone else (labelled: that label's face "
        "itself; else a background face, often the person). exp@K def: strangers expected if "
        "expanded templates kept the K default; rest@K def: the templates that joined nothing, "
        "under their own fitted tail, at the K default. 6-40 max: expanded searches at "
        "max(exp default, K default), never below the K default")
    out("held-out people, expanded templates' tails (threshold:predicted/measured pairs):")
    for k, mode, cap, size, check in checks:
        ratios = " ".join(f"{t}:{p:.0f}/{m}" for t, p, m in
                          zip(check.thresholds, check.predicted, check.measured, strict=True))
        out(f"  K={k} {mode} cap={cap or '-'} N={_n(size)} ({check.fits} fits): {ratios}")
    out()


def _expanded(data: tl.Data, scored: tl.Scored, joined: np.ndarray, selfie_sum: np.ndarray,
              strong: float, default: float, size: int, six_to_forty: list[int], splits: int
              ) -> tuple[list[object], tl.HeldOut | None]:
    templates = scored.templates
    count = joined.sum(axis=1)
    vectors = tl.unit(selfie_sum + joined.astype(np.float32) @ data.faces.plain)
    face_identity = data.identity
    wrong = joined & (face_identity[None, :] != templates.person[:, None]) \
        & ~data.aliases[templates.person][:, face_identity]
    expanded = tl.score(data, templates, vectors)
    grew = count > 0
    subset = tl.Scored(tl.Templates(templates.person[grew], templates.selfies[grew],
                                    vectors[grew]), expanded.best[grew], expanded.impostor[grew])
    try:
        cal_exp: Calibration | None = tl.calibration(subset.impostor_scores(), "expanded")
    except ValueError:
        cal_exp = None
    d_exp = cal_exp.operating_threshold(size) if cal_exp else float("nan")
    try:
        rest = tl.calibration(tl.Scored(scored.templates, scored.best[~grew],
                                        scored.impostor[~grew]).impostor_scores(), "rest")
        rest_expected = float(rest.expected_false_matches(default, size) or 0.0)
    except ValueError:
        rest_expected = float("nan")
    limits = np.where(grew, d_exp, default)
    first_strong = scored.best > np.float32(strong)
    row: list[object] = [strong, float(grew.mean()),
                         float(np.median(count[grew])) if grew.any() else 0.0,
                         int(wrong.sum()), int((wrong & data.faces.labelled).sum()),
                         default, d_exp,
                         cal_exp.expected_false_matches(default, size) if cal_exp
                         else float("nan"), rest_expected]
    never_lower = np.where(grew, max(d_exp, default), default)
    for people in (six_to_forty, tl.group(data, scored.templates.selfies.shape[1] + 1)):
        row += [tl.recall(data, scored, default, people)[0],
                tl.recall(data, expanded, limits, people, found_before=first_strong)[0]]
    row.append(tl.recall(data, expanded, never_lower, six_to_forty,
                         found_before=first_strong)[0])
    check = None
    if cal_exp is not None and cal_exp.tail is not None:
        thresholds = tl.validation_thresholds(cal_exp.tail)
        check = tl.held_out(data, subset, thresholds, thresholds[2], splits)
    return row, check


def per_query(out: Any, data: tl.Data, single: tuple[tl.Scored, Calibration], seed: int = 100
              ) -> None:
    """Does a selfie's score distribution against a background predict its own tail?"""
    out("## 6. Per-query normalisation (K=1): deciles of queries by a statistic of their "
        "scores against half of the people; tails measured on the other half (both ways). "
        "Baselines: deciles at random, per query and per person (the spread from noise and "
        "from people alone)")
    scored, cal1 = single
    person = scored.templates.person
    half = np.random.default_rng(seed).permutation(data.people) < data.people // 2
    column_half = half[data.faces.identity_of_photo]
    rng = np.random.default_rng(seed + 1)
    per_person_random = rng.random(data.people)
    stats: dict[str, list[np.ndarray]] = {k: [] for k in (
        "mean", "std", "top10", "top100", "random query", "random person")}
    tests: list[np.ndarray] = []
    for background in (column_half, ~column_half):
        bg = scored.impostor[:, background]
        filled = np.where(np.isnan(bg), -np.inf, bg)
        top = -np.sort(-filled, axis=1)[:, :100]
        stats["mean"].append(np.nanmean(bg, axis=1))
        stats["std"].append(np.nanstd(bg, axis=1))
        stats["top10"].append(top[:, :10].mean(axis=1))
        stats["top100"].append(top.mean(axis=1))
        stats["random query"].append(rng.random(len(person)))
        stats["random person"].append(per_person_random[person])
        tests.append(scored.impostor[:, ~background])
    defaults = {n: cal1.operating_threshold(n) for n in (10**6, 10**8)}
    overall = np.concatenate([t[~np.isnan(t)] for t in tests])
    test_count = np.concatenate([(np.nan_to_num(t, nan=-1.0) > 0.25).sum(axis=1)
                                 for t in tests])
    out(f"{len(person)} selfies x 2 directions; global K=1 defaults "
        + ", ".join(f"{_n(n)}: {t}" for n, t in defaults.items())
        + f"; all queries: FMR>0.25 {float((overall > 0.25).mean()):.2e}, "
        f">0.30 {float((overall > 0.30).mean()):.2e}")
    summary = []
    for name, values in stats.items():
        predictor = np.concatenate(values)
        rows = _deciles(values, tests, overall, defaults)
        if name == "top100":
            out("by top100 (mean of the query's 100 best background scores):")
            out.table(["decile", "range", "rate>.25 / all", "rate>.30 / all",
                       "exp@def 1e6", "exp@def 1e8", "own def 1e6"], rows)
        spread = [float(r[2]) for r in rows]
        expected = [float(r[4]) for r in rows]
        summary.append([name, _spearman(predictor, test_count), min(spread), max(spread),
                        min(expected), max(expected), float(rows[-1][4]),
                        float(rows[-1][5]), sum(e > 0.1 for e in expected)])
    out("per predictor: Spearman with the query's held-out count above 0.25; deciles' "
        "rate>.25 / all and expected strangers at the global 10^6 default (min-max); the "
        "top decile's at 10^6 / 10^8; deciles over 0.1 at 10^6")
    out.table(["predictor", "spearman", "rate min", "rate max", "exp1e6 min", "exp1e6 max",
               "top 1e6", "top 1e8", "deciles>0.1"], summary)
    out()


def _deciles(values: list[np.ndarray], tests: list[np.ndarray], overall: np.ndarray,
             defaults: dict[int, float]) -> list[list[Any]]:
    edges = np.quantile(np.concatenate(values), np.linspace(0, 1, 11))
    deciles = [np.clip(np.searchsorted(edges, v, side="right") - 1, 0, 9) for v in values]
    rows: list[list[Any]] = []
    for d in range(10):
        blocks = [t[decile == d] for t, decile in zip(tests, deciles, strict=True)]
        v = np.concatenate([b[~np.isnan(b)] for b in blocks])
        try:
            cal = tl.calibration(v, f"decile {d}")
            expected = [float(cal.expected_false_matches(t, n) or 0.0)
                        for n, t in defaults.items()]
            needed = cal.operating_threshold(10**6)
        except ValueError:
            expected, needed = [float("nan")] * 2, float("nan")
        rows.append([d + 1, f"{edges[d]:.3f}-{edges[d + 1]:.3f}",
                     float((v > 0.25).mean() / (overall > 0.25).mean()),
                     float((v > 0.30).mean() / (overall > 0.30).mean()), *expected, needed])
    return rows


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = average_ranks(x), average_ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])
