"""Source readers: one module per kind of dataset, one protocol (``base.Source``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from faceaudit.indexer.readers.base import Source, SourceError

MANIFEST_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".parquet")


def open_source(path: Path, field_map: Mapping[str, str] | None = None) -> Source:
    """The reader for ``path``: a manifest file (CSV, TSV, JSONL, Parquet, optionally .gz or
    .bz2), an img2dataset download (webdataset shards or its ``files`` layout), or a folder
    of images."""
    if path.is_file():
        name = path.name.lower()
        for compression in (".gz", ".bz2"):
            name = name.removesuffix(compression)
        if name.endswith(MANIFEST_SUFFIXES):
            from faceaudit.indexer.readers.manifest import ManifestSource

            return ManifestSource(path, field_map)
        raise SourceError(
            f"{path} is a file faceaudit does not read as a dataset: give a folder of images, "
            "an img2dataset output folder, or a manifest (.csv, .tsv, .jsonl or .parquet, "
            "optionally .gz or .bz2).")
    if not path.is_dir():
        raise SourceError(f"{path} does not exist: give a folder of images, an img2dataset "
                          "output folder or a manifest file.")
    from faceaudit.indexer.readers.img2dataset import detect_img2dataset
    from faceaudit.indexer.readers.img2dataset_files import Img2DatasetFilesSource
    from faceaudit.indexer.readers.webdataset import WebDatasetSource

    layout = detect_img2dataset(path)
    if layout == "webdataset":
        return WebDatasetSource(path, field_map)
    if layout == "files":
        return Img2DatasetFilesSource(path, field_map)
    from faceaudit.indexer.readers.folder import FolderSource

    return FolderSource(path, field_map)
