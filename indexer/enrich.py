"""Enrichment: fill the provenance a dataset does not give from a metadata table joined on
the photo id (YFCC100M for every Flickr-derived dataset). What the dataset itself gives is
never overwritten; an image is joined once, and later builds keep what was joined."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from faceaudit.indexer.store import IMAGE_SCHEMA

log = logging.getLogger(__name__)

ENRICHMENTS = ("yfcc100m",)


@dataclass
class Join:
    """One enrichment's rows, ready to fill tables with: the photo ids it was asked for (the
    not-yet-enriched ones) and the fields found for them."""

    name: str
    needed: pa.Array
    found: pa.Table


def plan_enrichment(images: pa.Table, enrich: Mapping[str, Path]
                    ) -> tuple[list[Join], dict[str, Any]]:
    """Read each enrichment's rows for the photo ids of ``images`` (its ``photo_id`` and
    ``enriched`` columns) not joined with it yet; and per enrichment a summary of the join."""
    from faceaudit.indexer.readers.yfcc100m import join_yfcc100m

    joins: list[Join] = []
    stats: dict[str, Any] = {}
    for name, path in enrich.items():
        photo_id = images.column("photo_id")
        not_yet = pc.fill_null(pc.not_equal(images.column("enriched"), name), True)
        asked = pc.and_(pc.and_(pc.is_valid(photo_id), pc.not_equal(photo_id, "")), not_yet)
        needed = pc.unique(photo_id.filter(asked))
        if not len(needed):
            stats[name] = {"path": str(path), "needed": 0, "note": "nothing new to join"}
            continue
        log.info("joining %d photo ids with %s", len(needed), path)
        join = join_yfcc100m(path, needed.to_pylist())
        found = pa.Table.from_pylist([{"photo_id": key, **fields}
                                      for key, fields in join.rows.items()])
        joins.append(Join(name, needed, found))
        stats[name] = {"path": str(path), "needed": len(needed), **join.as_dict()}
    return joins, stats


def apply_enrichment(images: pa.Table, joins: list[Join]) -> pa.Table:
    """``images`` (any rows) with the null provenance fields of the rows of each join's photo
    ids filled from it, and marked as enriched."""
    for join in joins:
        photo_id = images.column("photo_id")
        rows = pc.is_in(photo_id, value_set=join.needed)  # every row of a needed photo id
        if len(join.found):
            at = pc.index_in(photo_id, value_set=join.found.column("photo_id").combine_chunks())
            for column in join.found.column_names:
                if column == "photo_id" or column not in IMAGE_SCHEMA.names:
                    continue
                kind = IMAGE_SCHEMA.field(column)
                joined = join.found.column(column).cast(kind.type).take(at)
                current = images.column(column)
                images = images.set_column(images.schema.get_field_index(column), kind,
                                           pc.if_else(rows, pc.coalesce(current, joined),
                                                      current))
        images = images.set_column(
            images.schema.get_field_index("enriched"), IMAGE_SCHEMA.field("enriched"),
            pc.if_else(rows, pa.scalar(join.name), images.column("enriched")))
    return images


def enrich_images(images: pa.Table, enrich: Mapping[str, Path]) -> tuple[pa.Table, dict[str, Any]]:
    """``images`` with the null provenance fields of not-yet-enriched rows filled from each
    enrichment, and per enrichment a summary of the join. Column-wise (Arrow), so that an index
    of 10^7 images never becomes 10^7 Python rows."""
    joins, stats = plan_enrichment(images, enrich)
    return apply_enrichment(images, joins), stats
