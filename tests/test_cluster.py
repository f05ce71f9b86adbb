"""Identity clustering: planted synthetic identities, the chaining guard, the clustering
metrics on hand-computed examples, the demo index, `faceaudit cluster`, and its part in
`faceaudit eval`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from faceaudit.cli import app as cli
from faceaudit.imaging import decode_image
from faceaudit.indexer.ann import VectorSearch
from faceaudit.indexer.search import FaceIndex, search_selfie
from faceaudit.models.engine import FaceEngine
from faceaudit.research.clustering.agglomeration import DEFAULT_MIN_LINK, agglomerate
from faceaudit.research.clustering.cluster import cluster_index, cluster_vectors
from faceaudit.research.clustering.graph import Graph, knn_graph, neighbour_search
from faceaudit.research.clustering.identities_file import IDENTITIES_METADATA
from faceaudit.research.clustering.threshold import default_threshold
from faceaudit.research.eval_report import format_report
from faceaudit.research.evaluation.cluster_quality import cluster_quality
from faceaudit.research.evaluation.dataset import Dataset, ExtractedFaces
from faceaudit.research.evaluation.protocol import EvalRun, run_eval
from faceaudit.research.metrics.clustering import cluster_scores

runner = CliRunner()


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def planted(sizes: list[int], dimension: int = 64, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, identity per vector): each identity a random centre, each of its faces the
    centre plus noise (about 0.6-0.8 similar to each other, about 0 to anyone else)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(len(sizes), dimension)))
    owner = np.repeat(np.arange(len(sizes)), sizes)
    noise = _unit(rng.normal(size=(len(owner), dimension)))
    weight = rng.uniform(0.8, 0.9, size=(len(owner), 1))
    vectors = _unit(weight * centres[owner] + np.sqrt(1 - weight**2) * noise)
    order = rng.permutation(len(owner))  # identities not in contiguous rows
    return vectors[order], owner[order]


def test_planted_identities_are_recovered() -> None:
    sizes = [30, 12, 7, 5, 3, 2] + [1] * 40
    vectors, owner = planted(sizes)
    labels = cluster_vectors(vectors, threshold=0.4, k=8)

    scores = cluster_scores(owner, labels)
    assert scores.predicted_identities == len(sizes)
    assert scores.bcubed_f1 == 1.0 and scores.pairwise_f1 == 1.0
    # Identities are numbered by size: the 30 faces of the first are identity 0.
    assert set(labels[owner == 0]) == {0}
    assert np.bincount(labels).tolist() == sizes


def _bridge(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Two people (8 faces each, around orthogonal directions) and ``steps - 1`` faces on
    the arc between them, each step 90/steps degrees: above 0.97 only with its neighbours on
    the arc (and the first and last with the people at its ends)."""
    rng = np.random.default_rng(3)
    basis = np.linalg.qr(rng.normal(size=(32, 32)))[0].T
    a, b, *others = basis

    def person(centre: np.ndarray, first: int) -> list[np.ndarray]:
        tilt = np.radians(4)
        return [np.cos(tilt) * centre + np.sin(tilt) * others[first + i] for i in range(8)]

    angles = np.radians(np.linspace(0, 90, steps + 1)[1:-1])
    arc = [np.cos(t) * a + np.sin(t) * b for t in angles]
    vectors = np.array(person(a, 0) + person(b, 8) + arc, np.float32)
    owner = np.array([0] * 8 + [1] * 8 + list(range(2, 2 + len(arc))))
    return vectors, owner


def test_the_chaining_guard_keeps_a_bridge_of_faces_from_joining_two_people() -> None:
    vectors, owner = _bridge(steps=10)  # 9 degrees a step: cos 9° 0.988, cos 18° 0.951
    search = neighbour_search(VectorSearch.in_memory(vectors))
    graph = knn_graph(vectors, 8, 0.97, search)

    chained = agglomerate(graph, min_link=0.0)  # connected components
    assert len(set(chained)) == 1  # the bridge joins everyone into one "person"

    guarded = agglomerate(graph, min_link=DEFAULT_MIN_LINK)
    first, second = set(guarded[owner == 0]), set(guarded[owner == 1])
    assert len(first) == 1 and len(second) == 1 and first != second


def test_a_stranger_above_the_threshold_does_not_merge_two_people() -> None:
    vectors, owner = planted([6, 6], dimension=32, seed=5)
    graph = knn_graph(vectors, 8, 0.4, neighbour_search(VectorSearch.in_memory(vectors)))
    assert graph.score.min() > 0.45  # each person's own photos
    # A false match just above the threshold, as strangers' usually are.
    one, two = np.flatnonzero(owner == 0)[0], np.flatnonzero(owner == 1)[0]
    bridged = Graph(graph.faces, np.append(graph.left, min(one, two)).astype(np.int32),
                    np.append(graph.right, max(one, two)).astype(np.int32),
                    np.append(graph.score, 0.41).astype(np.float32))
    assert len(set(agglomerate(bridged, min_link=0.0))) == 1
    labels = agglomerate(bridged)
    assert cluster_scores(owner, labels).bcubed_f1 == 1.0


def test_cluster_scores_on_hand_computed_examples() -> None:
    # True: A A A B B C; predicted: {0,1} {2,3,4} {5}.
    true = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([7, 7, 8, 8, 8, 9])
    s = cluster_scores(true, predicted)
    # Pairs together: 1 + 3 = 4, of which same person: (0,1), (3,4) = 2. Same-person pairs:
    # 3 (A) + 1 (B) = 4, of which together: 2.
    assert (s.pairwise_precision, s.pairwise_recall, s.pairwise_f1) == (0.5, 0.5, 0.5)
    # BCubed precision per item: 1, 1, 1/3, 2/3, 2/3, 1; recall: 2/3, 2/3, 1/3, 1, 1, 1.
    assert s.bcubed_precision == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3 + 1) / 6)
    assert s.bcubed_recall == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1 + 1) / 6)
    p, r = 14 / 18, 14 / 18
    assert s.bcubed_f1 == pytest.approx(2 * p * r / (p + r))
    assert (s.true_identities, s.predicted_identities, s.identities_error) == (3, 3, 0.0)

    alone = cluster_scores(true, np.arange(6))  # every item alone
    assert np.isnan(alone.pairwise_precision) and alone.pairwise_recall == 0.0
    assert (alone.bcubed_precision, alone.bcubed_recall) == (1.0, pytest.approx(0.5))
    assert alone.identities_error == 1.0
    together = cluster_scores(true, np.zeros(6))  # one cluster
    assert together.pairwise_precision == pytest.approx(4 / 15)
    assert together.pairwise_recall == 1.0 and together.bcubed_recall == 1.0
    assert together.bcubed_precision == pytest.approx((3 * 3 / 6 + 2 * 2 / 6 + 1 / 6) / 6)


def test_eval_scores_the_clustering_of_labelled_faces() -> None:
    vectors, owner = planted([4, 3, 2, 1], dimension=32, seed=9)
    stranger = planted([1], dimension=32, seed=11)[0][0]
    extracted, identities = {}, {}
    for number, (vector, person) in enumerate(zip(vectors, owner, strict=True)):
        path = f"P{person}/P{person}_{number:04d}.jpg"
        boxes = [(40, 40, 60, 60)]
        rows = [vector]
        if number == 0:  # an unlabelled stranger behind, clustered but not scored
            boxes.append((0, 0, 10, 10))
            rows.append(stranger)
        extracted[path] = ExtractedFaces(np.array(boxes, np.float32),
                                         np.array(rows, np.float32), 100, 100)
        identities.setdefault(f"P{person}", []).append(path)
    dataset = Dataset(Path("."), {k: tuple(sorted(v)) for k, v in identities.items()})

    report = cluster_quality(dataset, extracted, threshold=0.4, thresholds=[0.3, 0.95])
    assert (report.faces, report.scored_faces) == (11, 10)
    assert report.scores["bcubed_f1"] == 1.0 and report.scores["identities_error"] == 0.0
    assert report.scores["predicted_identities"] == 4
    too_strict = next(row for row in report.sweep if row["threshold"] == 0.95)
    assert too_strict["predicted_identities"] == 10  # nobody is joined above 0.95

    result = EvalRun(run_eval(dataset, extracted, threshold=0.4, cluster_threshold=0.4),
                     "test", {}, {}, 1.0, {}).as_dict()
    assert result["clustering"]["scores"]["pairwise_precision"] == 1.0
    assert "Identity clustering" in format_report(result)


def test_the_demo_index_groups_yao_into_one_identity(built_index: Path, engine: FaceEngine,
                                                       collection: tuple[Path, Path]) -> None:
    index = FaceIndex(built_index)
    clustering = cluster_index(index)
    assert clustering.threshold == default_threshold(engine.calibration, index.size)
    yao = search_selfie(engine, index, decode_image(collection[1] / "yaoming.jpg"))
    assert len(yao) == 4
    labels = {int(clustering.labels[match.face]) for match in yao}
    assert len(labels) == 1  # his four photos: one person
    (label,) = labels
    assert clustering.sizes[label] == 4  # and nobody else in it
    assert len(clustering.labels) == index.size
    assert clustering.identities == len(np.unique(clustering.labels))
    assert clustering.sizes.sum() == index.size


def test_cluster_command_writes_identities_beside_the_index(built_index: Path,
                                                             tmp_path: Path) -> None:
    copy = tmp_path / "demo-index"
    shutil.copytree(built_index, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))

    result = runner.invoke(cli, ["cluster", str(copy), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    written = tmp_path / "demo-index.identities.parquet"
    assert summary["out"] == str(written)
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before  # index untouched
    table = pq.read_table(written)
    assert table.column_names == ["face_id", "identity"]
    index = FaceIndex(copy)
    assert table.column("face_id").to_pylist() == np.asarray(index.faces.face_id).tolist()
    identities = table.column("identity").to_numpy()
    assert summary["identities"] == len(set(identities.tolist()))
    assert summary["faces"] == index.size
    assert summary["largest"][0] == int(np.bincount(identities).max())
    assert summary["singletons"] == int((np.bincount(identities) == 1).sum())
    made = json.loads(table.schema.metadata[IDENTITIES_METADATA])
    assert made["threshold"] == summary["threshold"] and made["dataset"] == index.dataset

    text = runner.invoke(cli, ["cluster", str(copy), "--out", str(tmp_path / "ids.parquet"),
                               "--threshold", "0.5"])
    assert text.exit_code == 0, text.output
    assert "identities" in text.stdout and "threshold 0.5" in text.stdout
    # Counts only: no photo or face is named.
    assert "jpg" not in text.stdout and "png" not in text.stdout

    inside = runner.invoke(cli, ["cluster", str(copy), "--out", str(copy / "ids.parquet")])
    assert inside.exit_code == 2 and "inside the index folder" in inside.output
    assert not (copy / "ids.parquet").exists()
