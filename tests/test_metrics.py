"""Evaluation metrics on small fixtures with hand-computed answers, and the protocol end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from faceaudit.demo import astronaut, insightface_image, vectron_image
from faceaudit.models.engine import FaceEngine
from faceaudit.research.eval_report import format_report
from faceaudit.research.evaluation.dataset import (
    Dataset,
    ExtractedFaces,
    extract_with_engine,
    load_dataset,
)
from faceaudit.research.evaluation.protocol import EvalRun, run_eval
from faceaudit.research.metrics.identification import fmr_curve
from faceaudit.research.metrics.pairs import parse_pairs
from faceaudit.research.metrics.verification import (
    balanced_accuracy,
    best_threshold,
    kfold_verification,
    roc_auc,
    tar_at_far,
)

PAIRS = "A\t1\t2\nA\t1\tB\t1\nC 1 3\nC 2 D 4\n"


def test_parse_pairs_with_a_header_takes_its_folds() -> None:
    pairs = parse_pairs("2\t1\n" + PAIRS)
    assert pairs.left == ("A/A_0001.jpg", "A/A_0001.jpg", "C/C_0001.jpg", "C/C_0002.jpg")
    assert pairs.right == ("A/A_0002.jpg", "B/B_0001.jpg", "C/C_0003.jpg", "D/D_0004.jpg")
    assert pairs.same.tolist() == [True, False, True, False]
    assert pairs.fold.tolist() == [0, 0, 1, 1]
    assert (pairs.folds, pairs.fold_source) == (2, "header")


def test_parse_pairs_without_a_header_finds_lfw_blocks_or_splits_contiguously() -> None:
    pairs = parse_pairs(PAIRS)  # same, different, same, different: two LFW folds
    assert pairs.same.tolist() == [True, False, True, False]
    assert (pairs.fold.tolist(), pairs.fold_source) == ([0, 0, 1, 1], "blocks")
    # One block (all same, then all different): no fold structure, contiguous splits.
    flat = parse_pairs("A 1 2\nB 1 2\nC 1 2\nA 1 B 1\nA 2 C 1\nB 2 C 2\n",
                       default_folds=3)
    assert (flat.fold.tolist(), flat.fold_source) == ([0, 0, 1, 1, 2, 2], "contiguous")
    assert parse_pairs("1100\nA 1 2\nA 1 B 1\n").fold_source == "contiguous"
    with pytest.raises(ValueError, match="line 2"):
        parse_pairs("A 1 2\nA 1 B\n")


def test_kfold_on_separable_scores_is_perfect() -> None:
    scores = np.array([0.9, 0.8, 0.1, 0.2])
    same = np.array([True, True, False, False])
    assert best_threshold(scores, same) == pytest.approx(0.5)
    result = kfold_verification(scores, same, np.array([0, 1, 0, 1]))
    assert result.fold_scores.tolist() == [1.0, 1.0]
    assert result.thresholds.tolist() == pytest.approx([0.5, 0.5])


def test_kfold_on_overlapping_scores_chooses_on_the_other_fold() -> None:
    # Fold 0: same 0.9, 0.6; different 0.3, 0.65.  Fold 1: same 0.8, 0.35; different 0.2, 0.4.
    scores = np.array([0.9, 0.6, 0.3, 0.65, 0.8, 0.35, 0.2, 0.4])
    same = np.array([True, True, False, False, True, True, False, False])
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    result = kfold_verification(scores, same, fold)
    # Fold 1 alone: cuts at 0.275 and 0.6 both get 3 of 4 right; the lower wins. On fold 0
    # it accepts both different pairs: 2/4. Fold 0 alone: 0.45 (3 of 4, lowest); on fold 1
    # it rejects the 0.35 same pair only: 3/4.
    assert result.thresholds.tolist() == pytest.approx([0.275, 0.45])
    assert result.fold_scores.tolist() == [0.5, 0.75]
    assert result.fold_scores.mean() == 0.625 and result.fold_scores.std() == 0.125
    assert result.predicted.tolist() == [True, True, True, True, True, False, False, False]


def test_balanced_accuracy_and_its_threshold() -> None:
    predicted = np.array([True, True, True, False, True])
    same = np.array([True, True, True, True, False])
    assert balanced_accuracy(predicted, same) == pytest.approx((3 / 4 + 0) / 2)
    # Four same pairs, two different: plain accuracy prefers accepting everything but 0.1
    # (5/6 right, balanced 0.75); balanced accuracy rejects 0.65 as well (balanced 0.875).
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.65, 0.1])
    same = np.array([True, True, True, True, False, False])
    assert best_threshold(scores, same) == pytest.approx(0.35)
    assert best_threshold(scores, same, balanced=True) == pytest.approx(0.675)


def test_auc_counts_ties_as_half() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    same = np.array([True, True, True, False, False])
    # Of the 3 x 2 (same, different) pairs, 5 are ordered and 2 tied: (4 + 2 * 0.5) / 6.
    assert roc_auc(scores, same) == pytest.approx(5 / 6)
    assert roc_auc(np.array([0.2, 0.8]), np.array([True, False])) == 0.0


def test_tar_at_far_allows_floor_far_times_n_impostors() -> None:
    impostor = np.arange(100) / 100  # 0.00 .. 0.99
    genuine = np.array([0.985, 0.995, 0.5, 0.999])
    assert tar_at_far(genuine, impostor, 1e-2) == (0.75, 0.98)  # 0.99 accepted
    assert tar_at_far(genuine, impostor, 1e-3) == (0.5, 0.99)  # none accepted


def test_fmr_counts_scores_strictly_above_like_range_search() -> None:
    impostor = np.array([0.1, 0.2, 0.3, 0.4])
    assert fmr_curve(impostor, np.array([0.0, 0.25, 0.4])).tolist() == [1.0, 0.5, 0.0]


def _face(vector: np.ndarray, box: tuple[float, float, float, float] = (40, 40, 60, 60),
          *others: tuple[np.ndarray, tuple[float, float, float, float]]) -> ExtractedFaces:
    """A 100x100 image with a centred face of ``vector`` (listed after ``others``)."""
    vectors = [v for v, _ in others] + [vector]
    boxes = [b for _, b in others] + [box]
    return ExtractedFaces(np.array(boxes, np.float32), np.array(vectors, np.float32), 100, 100)


def test_self_search_sweep_on_a_synthetic_gallery() -> None:
    basis = np.linalg.qr(np.random.default_rng(7).normal(size=(16, 16)))[0].T  # orthonormal
    e_a, e_b, e_c, e_e, *u = basis
    a2, a3, a4 = (0.8 * e_a + 0.6 * u[0], 0.6 * e_a + 0.8 * u[1],
                  0.4 * e_a + np.sqrt(0.84) * u[2])
    e2 = 0.75 * e_e + 0.35 * e_a + np.sqrt(1 - 0.75**2 - 0.35**2) * u[3]  # a bit like A
    d1 = 0.55 * a2 + np.sqrt(1 - 0.55**2) * u[4]  # a non-mated look-alike of A_0002
    b2_centre = 0.2 * e_b + np.sqrt(0.96) * u[5]  # B, hard to recognise
    c_behind = 0.9 * e_c + np.sqrt(0.19) * u[6]  # C, planted in B's photo, off centre
    extracted = {
        "A/A_0001.jpg": _face(e_a), "A/A_0002.jpg": _face(a2), "A/A_0003.jpg": _face(a3),
        "A/A_0004.jpg": _face(a4),
        "B/B_0001.jpg": _face(e_b),
        "B/B_0002.jpg": _face(b2_centre, (40, 40, 60, 60), (c_behind, (0, 0, 20, 20))),
        "C/C_0001.jpg": _face(e_c),
        "D/D_0001.jpg": _face(d1),
        "E/E_0001.jpg": _face(e_e), "E/E_0002.jpg": _face(e2),
    }
    identities: dict[str, list[str]] = {}
    for path in extracted:
        identities.setdefault(path.split("/")[0], []).append(path)
    dataset = Dataset(Path("."), {k: tuple(v) for k, v in identities.items()})
    sweep = [0.1, 0.3, 0.5, 0.7, 0.95]
    report = run_eval(dataset, extracted, threshold=0.5, thresholds=sweep)

    search = report.search
    assert (search.searches, search.nonmated_searches) == (3, 2)  # A, B, E; C, D
    assert (search.gallery_images, search.gallery_faces) == (5, 6)
    rows = [(p.threshold, p.recall, p.fnir, p.fpir, p.false_matches_per_search,
             p.non_centre_hits, p.fpir_labelled_only) for p in search.sweep]
    expected = [
        # A finds 0.8, 0.6, 0.4 of its own and E_0002 at 0.35; B its own at 0.2; E its own at
        # 0.75. C (non-mated) hits B_0002 at 0.9 through the face behind; D hits A_0002 at
        # 0.55 through its labelled face.
        (0.1, 1.0, 0.0, 1.0, 1 / 3, 1, 0.5),
        (0.3, 2 / 3, 1 / 3, 1.0, 1 / 3, 1, 0.5),
        (0.5, 5 / 9, 1 / 3, 1.0, 0.0, 1, 0.5),
        (0.7, 4 / 9, 1 / 3, 0.5, 0.0, 1, 0.0),
        (0.95, 0.0, 1.0, 0.0, 0.0, 0, 0.0),
    ]
    for row, want in zip(rows, expected, strict=True):
        assert row == pytest.approx(want)
    assert (search.threshold, search.recall, search.fpir) == pytest.approx((0.5, 5 / 9, 1.0))
    assert search.recall_at_fpir_1pct == {"threshold": 0.95, "recall": 0.0, "fpir": 0.0}
    assert [(e["selfie"], e["photo"], e["labelled_face"])
            for e in search.false_match_examples] == [
        ("C/C_0001.jpg", "B/B_0002.jpg", False), ("D/D_0001.jpg", "A/A_0002.jpg", True)]

    # 37 cross-identity pairs of the 10 labelled faces; above 0.1: D with A_0001..4 (0.44,
    # 0.55, 0.264, 0.176) and E_0002 (0.154), E_0002 with A_0001..4 (0.35, 0.28, 0.21, 0.14).
    impostor = report.impostor
    assert (impostor.faces, impostor.comparisons) == (10, 37)
    assert [row["fmr"] for row in impostor.fmr] == pytest.approx(
        [9 / 37, 3 / 37, 1 / 37, 0.0, 0.0])
    assert impostor.max_score == pytest.approx(0.55)


def _lfw_folder(root: Path) -> Path:
    """A tiny LFW-layout dataset from package photos: A (3 images of one man), B (2 of
    another), C (one portrait, so a non-mated search) and D (one image without a face)."""
    yao = Image.open(vectron_image("yaoming.jpg")).convert("RGB")
    hanks = Image.open(insightface_image("Tom_Hanks_54745.png")).convert("RGB")
    gradient = np.tile(np.linspace(0, 255, 250, dtype=np.uint8), (250, 1))
    images = {
        "A/A_0001.jpg": yao,
        "A/A_0002.jpg": ImageOps.mirror(yao),
        "A/A_0003.jpg": ImageEnhance.Brightness(yao.resize((170, 209))).enhance(1.35),
        "B/B_0001.jpg": hanks,
        "B/B_0002.jpg": hanks.resize((224, 224), Image.Resampling.BICUBIC),
        "C/C_0001.jpg": astronaut(),
        "D/D_0001.jpg": Image.fromarray(np.stack([gradient] * 3, axis=-1)),
    }
    for path, image in images.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / path, quality=92)
    return root


def test_run_eval_end_to_end_with_the_real_engine(engine: FaceEngine, tmp_path: Path) -> None:
    dataset = load_dataset(_lfw_folder(tmp_path / "lfw"))
    extracted = extract_with_engine(engine, dataset)
    pairs = parse_pairs("A 1 2\nB 1 2\nA 1 B 1\nA 3 D 1\n")
    report = run_eval(dataset, extracted, pairs)

    assert (report.images, report.identities, report.no_face_images) == (7, 4, 1)
    assert report.no_face_examples == ["D/D_0001.jpg"]
    search = report.search
    assert (search.searches, search.nonmated_searches, search.gallery_images) == (2, 1, 3)
    assert search.nonmated_selfies_without_face == 1  # D: nothing to search with
    assert (search.threshold, search.recall, search.fnir) == (0.4, 1.0, 0.0)
    assert (search.fpir, search.false_matches_per_search) == (0.0, 0.0)
    verification = report.verification
    assert verification is not None
    assert verification.pairs_with_missing_face == 1
    assert verification.auc == 1.0
    assert report.impostor.comparisons == 11  # 6 labelled faces: 15 pairs, 4 of one person

    run = EvalRun(report, engine.pack.name, engine.sha256, engine.detection.as_dict(), 2.0, {})
    result = json.loads(json.dumps(run.as_dict(), allow_nan=False))
    assert result["verification"]["tar_at_far"].keys() == {"0.01", "0.001"}
    assert result["images_per_second"] == 3.5
    assert "1:N self-search" in format_report(result)


def test_eval_command_prints_json_and_writes_a_calibration(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from faceaudit.cli import app
    from faceaudit.models.calibration import Calibration

    root = _lfw_folder(tmp_path / "lfw")
    (tmp_path / "pairs.txt").write_text("A 1 2\nB 1 2\nA 1 B 1\nA 3 D 1\n")
    out = tmp_path / "faceaudit-calibration.json"
    result = CliRunner().invoke(app, [
        "eval", str(root), "--pairs", str(tmp_path / "pairs.txt"), "--json", "--device", "cpu",
        "--calibrate", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["no_face_images"] == 1 and report["verification"]["accuracy"] is not None
    assert {"threshold", "recall", "fnir", "fpir", "false_matches_per_search", "sweep"} <= set(
        report["search"])
    calibration = Calibration.from_file(out)
    assert calibration.pack == "buffalo_s" and calibration.calibrated
    assert calibration.measured["fpir"] <= 0.01
    assert calibration.impostor_comparisons == 11
    templates = report["templates"]  # 7 photos: recall measured, too few pairs for a curve
    assert set(templates) == {"fitted", "same_person", "tails", "recall", "thresholds_from",
                              "not_fitted"}
    assert templates["tails"] == [] and len(templates["not_fitted"]) == 9
    assert {(r["faces"], r["selfies"]) for r in templates["recall"]} >= {
        (10**4, 1), (10**6, 1), (10**8, 1)}
    assert calibration.templates is None  # nothing fitted: templates read the stand-in
