"""An img2dataset shard's coverage, from its parquet: what was listed, fetched, and why not."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from faceaudit.indexer.readers.base import Coverage, clean_value

# Each shard has a sibling ``00000.parquet`` holding every row of the input, failed downloads
# included: it gives the coverage, while the tar or folder gives the images and their metadata.
_URL = re.compile(r"\b[a-zA-Z][\w+.-]*://\S+")
_HTTP_ERROR = re.compile(r"HTTP Error (\d{3})\b")
_LONG_NUMBER = re.compile(r"\d{4,}")


def failure_reason(status: Any, message: Any) -> str:
    """A failed row's reason, normalised so that rows failing the same way group together:
    ``failed_to_download: HTTP 404``."""
    reason = clean_value(status) or "unknown status"
    text = clean_value(message)
    if text is None:
        return reason
    http = _HTTP_ERROR.search(text)
    if http:
        text = f"HTTP {http.group(1)}"
    text = " ".join(_LONG_NUMBER.sub("N", _URL.sub("<url>", text)).split())
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{reason}: {text}"


def parquet_counts(path: Path) -> tuple[int, int, Counter[str]]:
    """(rows, successful rows, reason -> failed rows) of a shard's parquet, read in batches."""
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if "status" not in names:
        raise ValueError("it has no status column")
    columns = ["status", "error_message"] if "error_message" in names else ["status"]
    pairs: Counter[tuple[Any, Any]] = Counter()
    for batch in parquet.iter_batches(columns=columns, batch_size=65536):
        statuses = batch.column(0).to_pylist()
        messages = batch.column(1).to_pylist() if len(columns) == 2 else [None] * len(statuses)
        pairs.update(zip(statuses, messages, strict=True))
    rows = downloaded = 0
    failed: Counter[str] = Counter()
    for (status, message), count in pairs.items():
        rows += count
        if status == "success":
            downloaded += count
        else:
            failed[failure_reason(status, message)] += count
    return rows, downloaded, failed


def add_shard_coverage(coverage: Coverage, parquet: Path, seen: Coverage) -> None:
    """Add one shard's counts to ``coverage``: from its parquet (every row, failed downloads
    included) when it has a readable one, else ``seen`` (what the shard itself held)."""
    if parquet.is_file():
        try:
            rows, downloaded, failed = parquet_counts(parquet)
        except (OSError, ValueError, pa.ArrowException) as error:
            coverage.add_malformed(parquet.name, f"unreadable parquet: {error}")
        else:
            coverage.rows += rows
            coverage.downloaded += downloaded
            coverage.not_downloaded.update(failed)
            return
    coverage.rows += seen.rows
    coverage.downloaded += seen.downloaded
    coverage.not_downloaded.update(seen.not_downloaded)
