"""Write img2dataset output shards as img2dataset itself does, for tests.

``write_webdataset_shard`` makes ``NNNNN.tar`` (``{key}.jpg``, ``{key}.json``, ``{key}.txt``
per successful sample, in webdataset's TarWriter order), ``NNNNN.parquet`` with every row,
failed downloads included, and ``NNNNN_stats.json``; ``write_files_shard`` the same for
``--output_format files`` (a ``NNNNN/`` folder instead of the tar).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

# img2dataset's defaults: 10,000 samples per shard (10**4) and 5-digit shard names.
OOM_SAMPLE_PER_SHARD = 4
OOM_SHARD_COUNT = 5
STANDARD_TYPES = {
    "url": pa.string(), "key": pa.string(), "status": pa.string(),
    "error_message": pa.string(), "width": pa.int32(), "height": pa.int32(),
    "original_width": pa.int32(), "original_height": pa.int32(), "exif": pa.string(),
    "sha256": pa.string(),
}


def compute_key(index: int, shard: int) -> str:
    """The sample key img2dataset gives row ``index`` of ``shard`` (downloader.compute_key):
    shard 1, index 5 -> ``000010005``."""
    return str(10**OOM_SAMPLE_PER_SHARD * shard + index).zfill(
        OOM_SAMPLE_PER_SHARD + OOM_SHARD_COUNT)


def jpeg_bytes(size: tuple[int, int] = (32, 32), color: tuple[int, int, int] = (90, 120, 150),
               ) -> bytes:
    """A small real JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def _size(data: bytes) -> tuple[int | None, int | None]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None, None


def _rows(shard: int, samples: Sequence[tuple[str, bytes, dict[str, Any]]],
          failed: Sequence[tuple[str, str]]) -> list[tuple[dict[str, Any], bytes | None]]:
    """(metadata, image bytes or None) of every input row, keys as img2dataset numbers them
    (the successful samples first, then the failed rows)."""
    rows: list[tuple[dict[str, Any], bytes | None]] = []
    for index, (url, data, extra) in enumerate(samples):
        width, height = _size(data)
        meta = {k: v for k, v in extra.items() if k != "caption" and k not in STANDARD_TYPES}
        if "caption" in extra:
            meta["caption"] = extra["caption"]
        meta.update(url=url, key=compute_key(index, shard), status="success",
                    error_message=None, width=width, height=height, original_width=width,
                    original_height=height, exif=extra.get("exif", "{}"),
                    sha256=hashlib.sha256(data).hexdigest())
        rows.append((meta, data))
    for index, (url, message) in enumerate(failed, start=len(samples)):
        rows.append(({"url": url, "key": compute_key(index, shard),
                      "status": "failed_to_download", "error_message": message,
                      "width": None, "height": None, "original_width": None,
                      "original_height": None, "exif": None, "sha256": None}, None))
    return rows


def _write_parquet_and_stats(folder: Path, name: str,
                             rows: list[tuple[dict[str, Any], bytes | None]]) -> None:
    columns: list[str] = []
    for meta, _ in rows:
        columns += [column for column in meta if column not in columns]
    table = pa.table({column: pa.array([meta.get(column) for meta, _ in rows],
                                       type=STANDARD_TYPES.get(column))
                      for column in columns})
    pq.write_table(table, folder / f"{name}.parquet")
    statuses = Counter(meta["status"] if meta["status"] == "success" else meta["error_message"]
                       for meta, _ in rows)
    now = time.time()
    stats = {"count": len(rows), "successes": statuses.get("success", 0),
             "failed_to_download": sum(1 for meta, _ in rows
                                       if meta["status"] == "failed_to_download"),
             "failed_to_resize": 0, "duration": 0.0, "start_time": now, "end_time": now,
             "status_dict": dict(statuses)}
    (folder / f"{name}_stats.json").write_text(json.dumps(stats, indent=4))


def _sample_files(meta: dict[str, Any], data: bytes) -> dict[str, bytes]:
    """extension -> bytes of one successful sample, as img2dataset's writers make them."""
    return {"jpg": data, "json": json.dumps(meta, indent=4).encode(),
            "txt": str(meta.get("caption", "")).encode()}


def write_webdataset_shard(folder: Path, shard: int,
                           samples: Sequence[tuple[str, bytes, dict[str, Any]]],
                           failed: Sequence[tuple[str, str]] = ()) -> Path:
    """Write shard ``shard`` of an img2dataset ``--output_format webdataset`` download into
    ``folder``. ``samples``: (url, image bytes, extra columns) of the successful downloads;
    ``failed``: (url, error message) of the failed ones. Returns the tar's path."""
    folder.mkdir(parents=True, exist_ok=True)
    name = str(shard).zfill(OOM_SHARD_COUNT)
    rows = _rows(shard, samples, failed)
    path = folder / f"{name}.tar"
    with tarfile.open(path, mode="w|") as tar:
        for meta, data in rows:
            if data is None:
                continue  # img2dataset writes only successful samples to the tar
            files = _sample_files(meta, data)
            for extension in sorted(files):  # webdataset's TarWriter writes them sorted
                info = tarfile.TarInfo(f"{meta['key']}.{extension}")
                info.size, info.mtime, info.mode = len(files[extension]), time.time(), 0o444
                info.uname = info.gname = "bigdata"
                tar.addfile(info, io.BytesIO(files[extension]))
    _write_parquet_and_stats(folder, name, rows)
    return path


def write_files_shard(folder: Path, shard: int,
                      samples: Sequence[tuple[str, bytes, dict[str, Any]]],
                      failed: Sequence[tuple[str, str]] = ()) -> Path:
    """Write shard ``shard`` of an img2dataset ``--output_format files`` download into
    ``folder`` (arguments as write_webdataset_shard). Returns the shard folder."""
    name = str(shard).zfill(OOM_SHARD_COUNT)
    shard_folder = folder / name
    shard_folder.mkdir(parents=True, exist_ok=True)
    rows = _rows(shard, samples, failed)
    for meta, data in rows:
        if data is not None:
            for extension, content in _sample_files(meta, data).items():
                (shard_folder / f"{meta['key']}.{extension}").write_bytes(content)
    _write_parquet_and_stats(folder, name, rows)
    return shard_folder
