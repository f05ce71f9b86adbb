"""Rows of ``.npy`` files read with ``pread`` and written sequentially, never memory-mapped.

A build gathers every face's vector from thousands of shards into one store, in a new order.
Through memory maps, every page touched would stay resident in the building process (file-
backed pages count in its RSS) until the kernel needs them back; reading just the rows asked
for into a buffer and appending the store chunk by chunk keeps the build's memory to its
buffers, whatever the index's size. The data stays in the page cache either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np
from numpy.typing import DTypeLike, NDArray

# Rows gathered per output chunk: 128 MiB of float16 vectors of 512 dimensions.
GATHER_ROWS = 131_072
# Read-ahead windows of all the source files together.
WINDOW_BYTES = 512 * 2**20


class NpyFile:
    """A ``.npy`` file (C order) whose rows (along the first axis) are read by number."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"{path}: .npy format {version} is not supported")
            self.offset = stream.tell()
        if fortran or not shape:
            raise ValueError(f"{path}: expected a C-order array of rows, found shape {shape}")
        self.shape: tuple[int, ...] = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def read_rows(self, rows: NDArray[np.integer]) -> NDArray:
        """The rows numbered ``rows`` (increasing), one ``pread`` per run of consecutive rows."""
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        if not len(rows):
            return out
        if rows[0] < 0 or rows[-1] >= self.shape[0] or (np.diff(rows) <= 0).any():
            raise ValueError(f"{self.path}: rows must increase within 0..{self.shape[0] - 1}")
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(rows)]])
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
                _pread_exactly(fd, out[start:end].data.cast("B"),
                               self.offset + int(rows[start]) * self.row_bytes, self.path)
        finally:
            os.close(fd)
        return out

    def read_into(self, out: NDArray) -> None:
        """The whole array into ``out`` (same shape), converted to its dtype if need be: no
        allocation when the dtypes match."""
        if out.shape != self.shape:
            raise ValueError(f"{self.path}: shape {self.shape}, not {out.shape}")
        if out.dtype == self.dtype and out.flags.c_contiguous:
            target = out
        else:
            target = np.empty(self.shape, self.dtype)
        if len(target):
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                _pread_exactly(fd, target.data.cast("B"), self.offset, self.path)
            finally:
                os.close(fd)
        if target is not out:
            out[...] = target


def _pread_exactly(fd: int, buffer: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(buffer):
        read = os.preadv(fd, [buffer[done:]], offset + done)
        if read == 0:
            raise ValueError(f"{path} is shorter than its header says (truncated?)")
        done += read


class NpyWriter:
    """Writes a 2-D ``.npy`` file of a known shape, appending rows in order."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype: DTypeLike) -> None:
        self.path = path
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._stream = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": shape}
        np.lib.format.write_array_header_1_0(self._stream, header)

    def append(self, rows: NDArray) -> None:
        rows = np.ascontiguousarray(rows, self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.shape[1]:
            raise ValueError(f"rows of shape {rows.shape} for a store of {self.shape}")
        if self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"more than the {self.shape[0]} rows announced in {self.path}")
        self._stream.write(rows.data.cast("B"))
        self.rows += len(rows)

    def close(self) -> None:
        self._stream.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} rows written of {self.shape[0]}")

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self._stream.close()


class _Window:
    """Rows of one file read through a window of consecutive rows (a view of a buffer shared
    by all windows, allocated once): requests that move forward through the file (a shard's
    rows and the index's, both sorted by key) are served by one large read per window."""

    def __init__(self, npy: NpyFile, buffer: NDArray) -> None:
        self.npy, self.buffer = npy, buffer
        self.start, self.count = 0, 0

    def _fill(self, first: int) -> None:
        self.start = first
        self.count = min(len(self.buffer), len(self.npy) - first)
        fd = os.open(self.npy.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            _pread_exactly(fd, self.buffer[:self.count].data.cast("B"),
                           self.npy.offset + first * self.npy.row_bytes, self.npy.path)
        finally:
            os.close(fd)

    def take_into(self, wanted: NDArray[np.int64], out: NDArray,
                  positions: NDArray[np.int64]) -> None:
        """out[positions[i]] = row wanted[i] of the file (``wanted`` increasing)."""
        done = 0
        while done < len(wanted):
            first = int(wanted[done])
            if not self.start <= first < self.start + self.count:
                self._fill(first)
            end = done + int(np.searchsorted(wanted[done:], self.start + self.count))
            out[positions[done:end]] = self.buffer[wanted[done:end] - self.start]
            done = end


def gather_rows(files: list[NpyFile], file_of: NDArray[np.integer],
                row_of: NDArray[np.integer], out: NpyWriter,
                chunk_rows: int = GATHER_ROWS, window_bytes: int = WINDOW_BYTES) -> None:
    """Append to ``out`` row ``row_of[i]`` of ``files[file_of[i]]`` for every i, in order,
    converted to ``out``'s dtype; a chunk of ``chunk_rows`` rows in memory at a time, and a
    window of each file: ``window_bytes`` (an eighth of the data at most) shared in proportion
    to their sizes, at least 64 KiB each (a large previous index gets long reads, thousands of
    shards a short one each)."""
    total = max(1, sum(len(f) for f in files))
    # An eighth of the data at most: a small index needs no large windows.
    window_bytes = min(window_bytes, max(1, sum(len(f) * f.row_bytes for f in files) // 8))
    least = min(64 * 1024, window_bytes)
    sizes = [max(1, min(len(f), max(least, window_bytes * len(f) // total)
                        // max(1, f.row_bytes))) for f in files]
    windows: dict[int, _Window] = {}
    for dtype in {f.dtype for f in files}:  # a buffer per dtype (float32: older shards)
        mine = [i for i, f in enumerate(files) if f.dtype == dtype]
        buffer = np.empty((sum(sizes[i] for i in mine), *files[mine[0]].shape[1:]), dtype)
        offset = 0
        for i in mine:
            windows[i] = _Window(files[i], buffer[offset:offset + sizes[i]])
            offset += sizes[i]
    for start in range(0, len(file_of), chunk_rows):
        which = np.asarray(file_of[start:start + chunk_rows])
        rows = np.asarray(row_of[start:start + chunk_rows], np.int64)
        chunk = np.empty((len(which), *out.shape[1:]), out.dtype)
        order = np.lexsort((rows, which))  # by file, then row: each file read forwards
        sorted_files = which[order]
        bounds = np.flatnonzero(np.diff(sorted_files)) + 1
        for first, last in zip(np.concatenate([[0], bounds]).tolist(),
                               np.concatenate([bounds, [len(order)]]).tolist(), strict=True):
            if first == last:
                continue
            positions = order[first:last]
            windows[int(sorted_files[first])].take_into(rows[positions], chunk, positions)
        out.append(chunk)
