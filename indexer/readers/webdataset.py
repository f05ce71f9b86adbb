"""img2dataset's webdataset layout: the images of ``00000.tar`` shards, streamed from the tars."""

from __future__ import annotations

import stat
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from faceaudit.indexer.readers.base import (
    MAX_IMAGE_BYTES,
    ByteLocation,
    Coverage,
    SourceError,
    SourceItem,
    describe_mode,
)
from faceaudit.indexer.readers.img2dataset import (
    IMAGE_EXTENSIONS,
    MAX_JSON_BYTES,
    Img2DatasetSource,
    is_tar_name,
    split_key,
)
from faceaudit.indexer.readers.img2dataset_coverage import add_shard_coverage

# The tars are read with the standard library's ``tarfile``, not the ``webdataset`` package: no
# dependency, each member's offset is known (items can point at their bytes), and a corrupt
# member or a truncated shard is recorded and skipped instead of ending the whole read.


@dataclass
class _Sample:
    """Consecutive tar members sharing one key."""

    key: str
    image: tarfile.TarInfo | None = None
    data: bytes | None = None
    error: str | None = None
    meta: bytes | None = None
    meta_error: str | None = None

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo, extension: str) -> None:
        extension = extension.lower()
        if extension in IMAGE_EXTENSIONS and self.image is None:
            if member.size > MAX_IMAGE_BYTES:
                self.error = f"{member.size:,} bytes, more than the limit of {MAX_IMAGE_BYTES:,}"
            elif member.size == 0:
                self.error = "an empty (zero-byte) file"
            else:
                self.data = _read_member(tar, member)
            self.image = member  # only once its bytes are read: a truncated member is no image
        elif extension == "json" and self.meta is None and self.meta_error is None:
            if member.size > MAX_JSON_BYTES:
                self.meta_error = f"{member.size:,} bytes, too large for metadata"
            else:
                self.meta = _read_member(tar, member)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise tarfile.ReadError(f"{member.name} cannot be read")
    with handle:
        return handle.read()


def _ends_cleanly(tar: tarfile.TarFile) -> bool:
    """Whether the archive goes on to its end-of-archive block: tarfile stops silently at a
    header cut short, which is how a truncated shard usually ends."""
    assert tar.fileobj is not None
    tar.fileobj.seek(tar.offset)
    return tar.fileobj.read(tarfile.BLOCKSIZE) == tarfile.NUL * tarfile.BLOCKSIZE


class WebDatasetSource(Img2DatasetSource):
    """The images of img2dataset's ``--output_format webdataset`` shards, streamed from the
    tars (never unpacked); coverage from each shard's parquet."""

    kind = "webdataset"

    def __init__(self, folder: Path, field_map: Mapping[str, str] | None = None) -> None:
        super().__init__(folder, field_map)
        self.shards = sorted((path for path in self.root.iterdir() if is_tar_name(path.name)),
                             key=lambda path: path.name)
        if not self.shards:
            raise SourceError(f"{folder} holds no .tar shards.")

    def items(self) -> Iterator[SourceItem]:
        for path in self.shards:
            yield from self.shard_items(path)

    def shard_items(self, path: Path) -> Iterator[SourceItem]:
        """The items of one tar (a unit of a distributed build), its coverage added."""
        shard = path.name
        seen = Coverage()
        for sample in self._samples(path):
            seen.rows += 1
            if sample.image is None:
                seen.not_downloaded["no image in the sample"] += 1
                continue
            seen.downloaded += 1
            image, where = sample.image, f"{shard}/{sample.key}.json"
            if sample.meta_error:
                self.coverage.add_malformed(where, sample.meta_error)
            yield SourceItem(
                ref=f"{shard}/{image.name}",
                location=ByteLocation(shard, offset=image.offset_data, size=image.size),
                fields=self._fields(sample.meta, where),
                source_record=f"{shard}/{sample.key}", data=sample.data, error=sample.error)
        add_shard_coverage(self.coverage, path.with_suffix(".parquet"), seen)

    def _samples(self, path: Path) -> Iterator[_Sample]:
        """The samples of one tar, in order. A shard that cannot be read to its end is
        recorded as malformed; the samples read before the fault are kept."""
        shard = path.name
        try:
            mode = path.stat().st_mode
        except OSError as error:
            self.coverage.add_malformed(shard, f"cannot be examined: {error.strerror}")
            return
        if not stat.S_ISREG(mode):  # a FIFO would block the read forever
            self.coverage.add_malformed(shard, f"{describe_mode(mode)}, not a tar file")
            return
        current: _Sample | None = None
        try:
            with tarfile.open(path, mode="r:") as tar:
                while (member := tar.next()) is not None:
                    parts = split_key(member.name)
                    # Sparse members' stored bytes are not the file: no offset can point at them.
                    if parts is None or not member.isfile() or member.issparse():
                        continue
                    key, extension = parts
                    if current is None or current.key != key:
                        if current is not None:
                            yield current
                        current = _Sample(key)
                    current.add(tar, member, extension)
                if not _ends_cleanly(tar):
                    self.coverage.add_malformed(shard, "truncated: the tar ends before its "
                                                       "end-of-archive marker")
        except (tarfile.TarError, OSError, EOFError) as error:
            self.coverage.add_malformed(shard, f"corrupt or truncated tar: {error}")
        if current is not None:
            yield current

