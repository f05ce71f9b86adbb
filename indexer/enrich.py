"""Enrichment: fill the provenance a dataset does not give from a metadata table joined on
the photo id (YFCC100M for every Flickr-derived dataset). What the dataset itself gives is
never overwritten; an image is joined once, and later builds keep what was joined."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from faceaudit.indexer.store import IMAGE_SCHEMA

log = logging.getLogger(__name__)

ENRICHMENTS = ("yfcc100m",)


def enrich_images(images: pa.Table, enrich: Mapping[str, Path]) -> tuple[pa.Table, dict[str, Any]]:
    """``images`` with the null provenance fields of not-yet-enriched rows filled from each
    enrichment, and per enrichment a summary of the join."""
    from faceaudit.indexer.readers.yfcc100m import join_yfcc100m

    stats: dict[str, Any] = {}
    for name, path in enrich.items():
        rows = images.to_pylist()
        needed = {r["photo_id"] for r in rows if r["photo_id"] and r["enriched"] != name}
        if not needed:
            stats[name] = {"path": str(path), "needed": 0, "note": "nothing new to join"}
            continue
        log.info("joining %d photo ids with %s", len(needed), path)
        join = join_yfcc100m(path, needed)
        for row in rows:
            if row["photo_id"] not in needed:
                continue
            row["enriched"] = name
            for key, value in join.rows.get(row["photo_id"], {}).items():
                if row.get(key) is None and value is not None:
                    row[key] = value
        images = pa.Table.from_pylist(rows, schema=IMAGE_SCHEMA)
        stats[name] = {"path": str(path), "needed": len(needed), **join.as_dict()}
    return images, stats
