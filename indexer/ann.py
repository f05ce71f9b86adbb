"""The searchable vector index: which FAISS structure holds the faces' embeddings, how it is
built from the index's vector store, and range search over it.

Every index keeps its embeddings in ``vectors.npy`` (float16, row i = face i, memory-mapped):
it is the exact record the searchable structure is built from, what a rebuild reuses, and what
clustering reads. ``faces.faiss`` is the searchable structure, of one of ``INDEX_TYPES``; the
manifest's ``index`` section says which (``info``), and how it was measured.

A face search is a range search at a low similarity (a person's other photos score about 0.5
against a selfie), not a nearest-neighbour search: the types are judged by *kept share*, the
share of the faces exact search returns above the threshold that the type returns too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

FAISS_FILE = "faces.faiss"
VECTOR_STORE = "vectors.npy"
INDEX_TYPES = ("auto", "flat")
# Vectors converted to float32 and added to FAISS this many at a time (bounded memory).
ADD_CHUNK = 65_536


def choose_index_type(faces: int) -> str:
    """The type ``auto`` means for an index of ``faces`` faces."""
    return "flat"


def build_search_index(vectors: NDArray[np.floating], index_type: str = "auto"
                       ) -> tuple[faiss.Index, dict[str, Any]]:
    """The searchable structure of ``vectors`` (N x d, L2-normalised; a memory map is read a
    chunk at a time) and the manifest's ``index`` section describing it."""
    count, dimension = vectors.shape
    if index_type == "auto":
        index_type = choose_index_type(count)
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}: use one of {', '.join(INDEX_TYPES)}")
    index = faiss.IndexFlatIP(dimension)
    for start in range(0, count, ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start:start + ADD_CHUNK], dtype=np.float32))
    info = {"type": "flat", "faiss": "IndexFlatIP", "file": FAISS_FILE,
            "vectors": VECTOR_STORE, "exact": True, "kept_share": 1.0}
    return index, info


class VectorSearch:
    """A published index's searchable structure and vector store, ready to search.
    Thread-safe: FAISS searches of a read-only index may run concurrently."""

    def __init__(self, index: faiss.Index, vectors: NDArray[np.floating],
                 info: dict[str, Any]) -> None:
        if len(vectors) != index.ntotal:
            raise ValueError(f"{len(vectors)} stored vectors for {index.ntotal} searchable ones")
        self.index, self.vectors, self.info = index, vectors, info

    @classmethod
    def load(cls, folder: Path, info: dict[str, Any]) -> VectorSearch:
        """The structure described by the manifest's ``info`` in ``folder``."""
        return cls(faiss.read_index(str(folder / info.get("file", FAISS_FILE))),
                   np.load(folder / info.get("vectors", VECTOR_STORE), mmap_mode="r"), info)

    @classmethod
    def in_memory(cls, vectors: NDArray[np.floating], index_type: str = "flat"
                  ) -> VectorSearch:
        """A structure over ``vectors`` that is never written (evaluation, tests)."""
        index, info = build_search_index(vectors, index_type)
        return cls(index, vectors, info)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def range_search(self, query: NDArray[np.float32], threshold: float
                     ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(scores, rows) of every face scoring strictly above ``threshold``, unordered."""
        if self.ntotal == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        matrix = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        _, scores, rows = self.index.range_search(matrix, float(threshold))
        return scores, rows.astype(np.int64, copy=False)


def write_vector_store(path: Path, vectors: NDArray[np.floating]) -> None:
    """``vectors`` as the float16 store (chunked, so a memory map is never read whole)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=vectors.shape)
    for start in range(0, len(vectors), ADD_CHUNK):
        out[start:start + ADD_CHUNK] = vectors[start:start + ADD_CHUNK]
    out.flush()
    del out
