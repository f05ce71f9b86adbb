"""The searchable structures (faceaudit.indexer.ann) against exact search, on seeded synthetic
unit vectors with planted near-duplicates (a person's other photos)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from numpy.typing import NDArray
from typer.testing import CliRunner

from faceaudit.cli import app
from faceaudit.indexer import ann, exact, rescoring
from faceaudit.indexer.search import FaceIndex
from faceaudit.indexer.store import (
    STATUS_OK,
    BoxTable,
    FaceTable,
    ImageRecord,
    records_to_table,
    stable_face_id,
    write_index_files,
)

DIMENSION = 256
FACES = 20_000
PEOPLE = 40
MATES = 4  # each planted person: an anchor and MATES other faces, at 0.55-0.9 from it


def _unit(rows: NDArray[np.float64]) -> NDArray[np.float32]:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _planted(count: int, people: int, mates: int, seed: int = 11
             ) -> tuple[NDArray[np.float16], NDArray[np.int64]]:
    """Random unit vectors (float16, as the store holds them); the first ``people`` rows are
    anchors, each followed later by ``mates`` rows at a known similarity to it. Returns the
    vectors and, per anchor, the rows of its mates (people x mates)."""
    rng = np.random.default_rng(seed)
    vectors = _unit(rng.standard_normal((count, DIMENSION)))
    mate_rows = people + np.arange(people * mates).reshape(people, mates)
    for person in range(people):
        for number, row in enumerate(mate_rows[person]):
            similarity = 0.55 + 0.1 * number
            other = rng.standard_normal(DIMENSION)
            other -= other @ vectors[person] * vectors[person]
            other /= np.linalg.norm(other)
            vectors[row] = similarity * vectors[person] + np.sqrt(1 - similarity**2) * other
    return vectors.astype(np.float16), mate_rows


@pytest.fixture(scope="module")
def planted() -> tuple[NDArray[np.float16], NDArray[np.int64]]:
    return _planted(FACES, PEOPLE, MATES)


@pytest.fixture(scope="module")
def flat(planted: tuple[NDArray[np.float16], NDArray[np.int64]]) -> ann.VectorSearch:
    return ann.VectorSearch.in_memory(planted[0], "flat")


@pytest.fixture(scope="module")
def pq(planted: tuple[NDArray[np.float16], NDArray[np.int64]]) -> ann.VectorSearch:
    return ann.VectorSearch.in_memory(planted[0], "pq-rerank")


def _store_scores(vectors: NDArray[np.float16], query: NDArray[np.float32],
                  rows: NDArray[np.int64]) -> NDArray[np.float32]:
    return vectors[rows].astype(np.float32) @ query


def test_pq_rerank_returns_the_rows_flat_returns_with_exact_scores(
        planted: tuple[NDArray[np.float16], NDArray[np.int64]], flat: ann.VectorSearch,
        pq: ann.VectorSearch) -> None:
    vectors, mates = planted
    assert pq.info["faiss"] == "PQ32x4fs" and pq.info["resident_bytes_per_face"] == 16
    for person in range(PEOPLE):
        query = vectors[person].astype(np.float32)
        flat_scores, flat_rows = flat.range_search(query, 0.5)
        scores, rows = pq.range_search(query, 0.5)
        assert set(flat_rows.tolist()) == {person, *mates[person].tolist()}
        assert set(rows.tolist()) == set(flat_rows.tolist())
        np.testing.assert_allclose(scores, _store_scores(vectors, query, rows), atol=1e-5)
        np.testing.assert_allclose(np.sort(scores), np.sort(flat_scores), atol=1e-5)


@pytest.mark.parametrize("index_type", ["flat", "pq-rerank"])
def test_range_search_is_strictly_above_the_threshold(
        planted: tuple[NDArray[np.float16], NDArray[np.int64]], flat: ann.VectorSearch,
        pq: ann.VectorSearch, index_type: str) -> None:
    vectors, mates = planted
    search = flat if index_type == "flat" else pq
    query = vectors[0].astype(np.float32)
    scores, rows = search.range_search(query, 0.5)
    lowest = float(scores.min())
    at_lowest = rows[scores == lowest]
    above, above_rows = search.range_search(query, lowest)
    assert not set(at_lowest.tolist()) & set(above_rows.tolist())
    assert len(above_rows) == len(rows) - len(at_lowest) and np.all(above > lowest)
    _, below_rows = search.range_search(query, np.nextafter(lowest, -1, dtype=np.float32))
    assert set(at_lowest.tolist()) <= set(below_rows.tolist())


def test_knn_agrees_with_flat(planted: tuple[NDArray[np.float16], NDArray[np.int64]],
                              flat: ann.VectorSearch, pq: ann.VectorSearch) -> None:
    vectors, mates = planted
    queries = vectors[:PEOPLE].astype(np.float32)
    flat_scores, flat_rows = flat.knn(queries, MATES + 1)
    scores, rows = pq.knn(queries, MATES + 1)
    assert rows.shape == scores.shape == (PEOPLE, MATES + 1) and rows.dtype == np.int64
    assert np.array_equal(rows, flat_rows)  # the anchor, then its mates, best first
    assert np.array_equal(np.sort(rows[:, 1:], axis=1), mates)
    np.testing.assert_allclose(scores, flat_scores, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize("index_type", ["flat", "pq-rerank"])
def test_knn_pads_past_the_index_and_an_empty_index_finds_nothing(index_type: str) -> None:
    vectors, _ = _planted(5, 1, 2)
    small = ann.VectorSearch.in_memory(vectors, index_type)
    scores, rows = small.knn(vectors[:2].astype(np.float32), 8)
    assert np.array_equal(np.sort(rows[:, :5], axis=1), np.tile(np.arange(5), (2, 1)))
    assert np.all(rows[:, 5:] == -1) and np.all(np.isneginf(scores[:, 5:]))
    assert rows[0, 0] == 0 and rows[1, 0] == 1
    empty = ann.VectorSearch.in_memory(np.empty((0, DIMENSION), np.float16), index_type)
    found_scores, found_rows = empty.range_search(vectors[0].astype(np.float32), 0.1)
    assert len(found_scores) == len(found_rows) == 0
    assert np.all(empty.knn(vectors[:3].astype(np.float32), 4)[1] == -1)


def test_a_query_with_more_faces_above_the_threshold_than_the_depth_gets_them_all(
        monkeypatch: pytest.MonkeyPatch) -> None:
    vectors, _ = _planted(4_000, 2, 0, seed=5)
    rng = np.random.default_rng(2)
    for person in range(2):  # 150 near-duplicates of each anchor, at about 0.85
        noise = rng.standard_normal((150, DIMENSION)) * 0.6 / np.sqrt(DIMENSION)
        rows = np.arange(2 + 150 * person, 2 + 150 * (person + 1))
        vectors[rows] = _unit(vectors[person].astype(np.float64) + noise)
    monkeypatch.setattr(ann, "MIN_DEPTH", 16)
    search = ann.VectorSearch.in_memory(vectors, "pq-rerank")
    assert search.depth == 16
    flat = ann.VectorSearch.in_memory(vectors, "flat")
    for person in range(2):
        query = vectors[person].astype(np.float32)
        expected = set(flat.range_search(query, 0.5)[1].tolist())
        assert len(expected) > 100
        found = search.range_search(query, 0.5)[1].tolist()
        # widened past its first scan (16 -> 64: scanned again for 256, then 256 from that
        # scan), and what the first scan's candidates already gave is not returned twice
        assert set(found) == expected and len(found) == len(expected)


def test_the_measured_kept_share_can_show_a_loss(
        planted: tuple[NDArray[np.float16], NDArray[np.int64]], pq: ann.VectorSearch) -> None:
    vectors, mates = planted
    crippled = ann.VectorSearch(pq.index, vectors, {**pq.info, "rerank_depth": 1,
                                                    "rerank_margin": -1.0})
    queries = vectors[:PEOPLE].astype(np.float32)
    truth = exact.exact_range_search(vectors, queries, 0.5, chunk=3_000)
    assert [set(rows.tolist()) for _, rows in truth] == [
        {person, *mates[person].tolist()} for person in range(PEOPLE)]
    kept = sum(len(set(rows.tolist()) & set(crippled.range_search(q, 0.5)[1].tolist()))
               for q, (_, rows) in zip(queries, truth, strict=True))
    assert kept <= PEOPLE  # at most the best candidate each: the measure sees the loss
    assert exact.measure_kept_share(pq, 0.3)["kept_share"] in (None, 1.0)


def test_auto_is_flat_while_exact_is_cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ann.choose_index_type(0) == ann.choose_index_type(ann.FLAT_MAX_FACES) == "flat"
    assert ann.choose_index_type(ann.FLAT_MAX_FACES + 1) == "pq-rerank"
    assert ann.rerank_depth(10_000_000) > ann.rerank_depth(1_000_000) >= ann.MIN_DEPTH
    vectors, _ = _planted(2_000, 10, 4)
    assert ann.build_search_index(vectors)[1]["type"] == "flat"
    monkeypatch.setattr(ann, "FLAT_MAX_FACES", 1_000)
    index, info = ann.build_search_index(vectors)
    assert info["type"] == "pq-rerank" and isinstance(index, faiss.IndexPQFastScan)
    with pytest.raises(ValueError, match="unknown index type"):
        ann.build_search_index(vectors, "hnsw")


def test_searches_from_many_threads_agree(
        planted: tuple[NDArray[np.float16], NDArray[np.int64]], pq: ann.VectorSearch) -> None:
    vectors, _ = planted
    queries = [vectors[i].astype(np.float32) for i in range(PEOPLE)]
    alone = [set(pq.range_search(q, 0.5)[1].tolist()) for q in queries]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda q: set(pq.range_search(q, 0.5)[1].tolist()), queries))
    assert together == alone


def _fake_knn_gpu(resources: object, queries: NDArray[np.float32], block: NDArray[Any],
                  k: int, metric: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    assert metric == faiss.METRIC_INNER_PRODUCT and block.dtype == np.float16
    scores = queries @ block.astype(np.float32).T
    rows = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


def test_gpu_selection_uses_an_exact_chunked_knn_only_where_faiss_has_a_gpu(
        planted: tuple[NDArray[np.float16], NDArray[np.int64]], flat: ann.VectorSearch,
        monkeypatch: pytest.MonkeyPatch) -> None:
    vectors, _ = planted
    assert not exact.gpu_available()  # this CPU build of FAISS
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    if not hasattr(faiss, "StandardGpuResources"):
        assert not exact.gpu_available()  # a device but no GPU build: the CPU path
        monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "knn_gpu", _fake_knn_gpu)
    monkeypatch.setattr(exact, "GPU_CHUNK", 3_000)  # results merged across chunks of the store
    assert exact.gpu_available()
    search = ann.VectorSearch(flat.index, vectors, flat.info)
    queries = vectors[:PEOPLE].astype(np.float32)
    scores, rows = search.knn(queries, 7)
    flat_scores, flat_rows = flat.knn(queries, 7)
    assert np.array_equal(rows, flat_rows)
    np.testing.assert_allclose(scores, flat_scores, atol=1e-5)


def _tiny_index(folder: Path, vectors: NDArray[np.float16], index_type: str) -> None:
    """An index of one photo per face, written as the benchmarks write theirs."""
    count = len(vectors)
    records = [ImageRecord(key=f"synthetic:{i:06d}", ref=f"{i:06d}.jpg", path=f"{i:06d}.jpg",
                           status=STATUS_OK, faces=1, width=100, height=100,
                           dataset="synthetic") for i in range(count)]
    faces = FaceTable(np.arange(count, dtype=np.int32),
                      np.array([stable_face_id(r.key, 0) for r in records], np.int64),
                      np.tile(np.array([10, 10, 60, 60], np.float32), (count, 1)),
                      np.zeros((count, 5, 2), np.float32), np.ones(count, np.float32))
    manifest = {"format": "faceaudit-index", "format_version": 3,
                "model_pack": {"name": "synthetic", "files": {}},
                "embedding": {"dimension": DIMENSION, "metric": "cosine"},
                "dataset": {"name": "synthetic", "root": str(folder)}}
    folder.mkdir()
    write_index_files(folder, vectors=vectors, faces=faces, small_faces=BoxTable.empty(),
                      images=records_to_table(records), manifest=manifest,
                      index_type=index_type)


def test_the_manifest_records_the_type_and_its_measured_kept_share(tmp_path: Path) -> None:
    vectors, mates = _planted(3_000, 300, 4)  # half the faces planted: the sample finds mates
    _tiny_index(tmp_path / "index", vectors, "pq-rerank")
    info = json.loads((tmp_path / "index" / "manifest.json").read_text())["index"]
    assert info["type"] == "pq-rerank" and info["faiss"] == "PQ32x4fs"
    assert info["rerank_depth"] == ann.rerank_depth(3_000) and info["exact"] is False
    assert info["kept_share_found"] > 0 and info["kept_share"] == 1.0
    assert info["kept_share_threshold"] == exact.default_threshold(3_000) == 0.375
    index = FaceIndex(tmp_path / "index")
    assert index.manifest["index"] == info and index.vectors.dtype == np.float16
    assert isinstance(index.vector_search.index, faiss.IndexPQFastScan)
    matches = index.search(vectors[7].astype(np.float32), 0.5)
    assert {m.image_id for m in matches} == {7, *mates[7].tolist()}
    assert matches[0].image_id == 7 and matches[0].score == pytest.approx(1.0, abs=1e-3)
    _tiny_index(tmp_path / "flat", vectors, "auto")
    assert FaceIndex(tmp_path / "flat").manifest["index"]["kept_share"] == 1.0


def test_index_refuses_an_unknown_index_type(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["index", str(tmp_path), "--out", str(tmp_path / "ix"),
                                      "--index-type", "hnsw"])
    assert result.exit_code == 2 and "auto, flat, pq-rerank" in result.output
    assert not (tmp_path / "ix").exists()


@pytest.mark.parametrize("dtype,first_best,kept_rows", [
    (np.float16, 256, 16_384), (np.float16, 3, 16_384), (np.float16, 256, 100),
    (np.float32, 256, 16_384)])
def test_rescoring_gives_the_stores_exact_scores_strictly_above_the_threshold(
        planted: tuple[NDArray[np.float16], NDArray[np.int64]], dtype: type, first_best: int,
        kept_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rescoring, "FIRST_BEST", first_best)  # 3: kept best grown 3, 12, 48
    monkeypatch.setattr(rescoring, "KEPT_ROWS", kept_rows)  # 100: buffers of its own
    vectors = planted[0][:2_000].astype(dtype)
    query = vectors[0].astype(np.float32)
    rows = np.random.default_rng(3).permutation(len(vectors))[:500]
    rows = np.concatenate([rows, [0]])  # the query itself: score 1
    expected = vectors[rows].astype(np.float32) @ query
    ordered = np.sort(expected)
    threshold = float(ordered[-20] + ordered[-21]) / 2  # 20 above, none within rounding
    scores, positions = rescoring.scores_above(vectors, query, rows, threshold)
    assert sorted(positions.tolist()) == np.flatnonzero(expected > threshold).tolist()
    np.testing.assert_allclose(scores, expected[positions], atol=1e-5)
    assert len(rescoring.scores_above(vectors, query, rows[:0], 0.0)[0]) == 0
