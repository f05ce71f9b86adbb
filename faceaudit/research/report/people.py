"""Uploaders and the people photographed: who uploaded how much, how many distinct people
(identities from clustering) the faces belong to, and how many of them appear in photos of
two or more different uploaders. Counts only: no uploader or person is ever named.

Everything is numpy over integer codes: an uploader code per image, an identity label per
face, an image number per face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from faceaudit.indexer.store import IMAGES_FILE
from faceaudit.research.report.index_files import IndexFiles
from faceaudit.research.report.suppression import Histogram, integer_histogram

PHOTOS_PER_UPLOADER_EDGES = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 10_000)
PHOTOS_PER_IDENTITY_EDGES = (1, 2, 3, 5, 10, 20, 50, 100, 1000)
MANY_PHOTOS = 10  # "identities in many photos": seen in at least this many


def uploader_keys(index: IndexFiles) -> pa.Array:
    """Per image, who uploaded it: ``id:`` and the uploader id the source gives, else
    ``name:`` and the uploader's name (a source without ids), else null (not stated). The
    report only ever counts these."""
    table = pq.read_table(index.folder / IMAGES_FILE, columns=["uploader_id", "uploader_name"])
    by_id = pc.binary_join_element_wise("id:", table.column("uploader_id"), "")
    by_name = pc.binary_join_element_wise("name:", table.column("uploader_name"), "")
    return pc.coalesce(by_id, by_name).combine_chunks()


def uploader_codes(keys: list[pa.Array]) -> tuple[list[NDArray[np.int64]], int]:
    """One code per distinct uploader over all ``keys`` (one array per index, as from
    ``uploader_keys``), -1 where not stated; and the number of distinct uploaders. The same
    uploader id in two datasets is the same code."""
    if not keys:
        return [], 0
    distinct = pc.unique(pa.chunked_array(keys, pa.string()).combine_chunks()).drop_null()
    codes = [np.asarray(pc.index_in(k, value_set=distinct).fill_null(-1)
                        .to_numpy(zero_copy_only=False), dtype=np.int64) for k in keys]
    return codes, len(distinct)


@dataclass(frozen=True)
class UploaderFigures:
    uploaders: int  # distinct uploaders of the photos
    photos_without_uploader: int
    photos_per_uploader: Histogram


def uploader_figures(codes: NDArray[np.integer]) -> UploaderFigures:
    stated = codes[codes >= 0]
    per_uploader = np.bincount(stated)
    per_uploader = per_uploader[per_uploader > 0]
    return UploaderFigures(
        uploaders=len(per_uploader), photos_without_uploader=int(len(codes) - len(stated)),
        photos_per_uploader=integer_histogram(per_uploader, PHOTOS_PER_UPLOADER_EDGES,
                                              "photos the uploader has in the dataset",
                                              "uploaders"))


@dataclass(frozen=True)
class IdentityFigures:
    identities: int  # distinct people, as estimated by clustering
    photographed_by_others: int  # identities in photos of >= 2 different uploaders
    in_many_photos: int  # identities in >= MANY_PHOTOS photos
    photos_per_identity: Histogram


def dense_labels(labels: NDArray[np.integer]) -> NDArray[np.int64]:
    """``labels`` renumbered 0..n-1; a negative label (a face a clustering left unassigned)
    becomes an identity of its own."""
    labels = np.asarray(labels, dtype=np.int64)
    unassigned = labels < 0
    if unassigned.any():
        labels = labels.copy()
        labels[unassigned] = labels.max(initial=-1) + 1 + np.arange(int(unassigned.sum()))
    return np.unique(labels, return_inverse=True)[1].astype(np.int64).reshape(-1)


def _distinct(values: NDArray[np.int64]) -> NDArray[np.int64]:
    """The distinct values, sorted (a sort and a mask: numpy's unique is many times slower on
    10^7 int64 here)."""
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) \
        else ordered


def identity_figures(identity_of_face: NDArray[np.integer], image_of_face: NDArray[np.integer],
                     uploader_of_image: NDArray[np.integer],
                     photo_of_face: NDArray[np.integer] | None = None) -> IdentityFigures:
    """People figures from one identity per face (0..n-1, ``dense_labels``), the image of
    each face, and the uploader code of each image (-1: not stated). ``photo_of_face``: the
    photo each face is in when one photo can be several images (the same bytes in two
    datasets); default the image."""
    identity = np.asarray(identity_of_face, dtype=np.int64)
    image = np.asarray(image_of_face, dtype=np.int64)
    photo = image if photo_of_face is None else np.asarray(photo_of_face, dtype=np.int64)
    count = int(identity.max()) + 1 if len(identity) else 0
    # Distinct (identity, photo) pairs: a person twice in one photo (a mirror) is one photo.
    photos_total = int(photo.max(initial=0)) + 1
    photo_identity = _distinct(identity * photos_total + photo) // photos_total
    photos = np.bincount(photo_identity, minlength=count)

    uploader = np.asarray(uploader_of_image, dtype=np.int64)[image]
    stated = uploader >= 0
    uploaders = int(uploader.max(initial=0)) + 1
    seen_by = _distinct(identity[stated] * uploaders + uploader[stated]) // uploaders
    per_identity = np.bincount(seen_by, minlength=count)
    return IdentityFigures(
        identities=count, photographed_by_others=int(np.count_nonzero(per_identity >= 2)),
        in_many_photos=int(np.count_nonzero(photos >= MANY_PHOTOS)),
        photos_per_identity=integer_histogram(photos, PHOTOS_PER_IDENTITY_EDGES,
                                              "photos the person appears in", "people"))
