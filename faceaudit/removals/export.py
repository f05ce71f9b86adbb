"""The opt-out list: removal requests' photos as CSV, JSON or Parquet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

from faceaudit.errors import FaceAuditError
from faceaudit.removals.records import EXPORT_FORMATS, OPT_OUT_COLUMNS

# --- the opt-out list ------------------------------------------------------------------------

def rows_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_export(rows: list[dict[str, Any]], fmt: str, out: BinaryIO) -> None:
    """The opt-out list as CSV, a JSON array or Parquet (all columns strings)."""
    columns = (*OPT_OUT_COLUMNS, "requested")
    if fmt == "csv":
        out.write(rows_csv(rows, columns).encode("utf-8"))
    elif fmt == "json":
        out.write((json.dumps(rows, indent=1) + "\n").encode("utf-8"))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(name, pa.string()) for name in columns])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    else:
        raise FaceAuditError(f"Unknown export format {fmt!r}: use {', '.join(EXPORT_FORMATS)}.")


