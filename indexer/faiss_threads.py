"""FAISS's OpenMP threads, set for one block of the calling thread.

OpenMP keeps the setting per thread, so other threads' searches are not affected. A search of
one query gains nothing from a team of threads, and the idle ones spin beside the service's
other searches (FAISS's fp16 scoring of one query took 1.7 times its wall time in CPU on two
cores).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import faiss


@contextmanager
def omp_threads(count: int) -> Iterator[None]:
    """FAISS's OpenMP threads for the calling thread, within the block (OpenMP keeps the
    setting per thread: other threads' searches are not affected)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
