"""The indexes being served, and newly published ones loaded in the background and swapped in.

Each index folder given to the service is a slot (its position in ``settings.index``). What a
slot serves is one ``Published`` (the index and the thumbnail links issued for it), replaced as
one: a request takes a snapshot of every slot at its start, so it never mixes two versions of
an index. A watcher task notices a newly published index at a slot's folder, loads it in a
worker thread while requests go on with the old one, then swaps it in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.search import FaceIndex
from faceaudit.indexer.store import MANIFEST
from faceaudit.models.engine import FaceEngine
from faceaudit.service.thumbnails import ThumbnailTokens

log = logging.getLogger(__name__)


def manifest_stamp(folder: Path) -> tuple[int, int] | None:
    """Identity of the index published at ``folder`` (its manifest's inode and mtime): it
    changes when `faceaudit index` publishes a new index there."""
    try:
        stat = (folder / MANIFEST).stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)


@dataclass(frozen=True)
class Published:
    """The index served at a slot and the links issued for it, replaced as one when a new
    index is published: links issued for the old index stop working (new secret) instead of
    pointing at other photos."""

    index: FaceIndex
    tokens: ThumbnailTokens
    stamp: tuple[int, int] | None


def load_published(folder: Path, slot: int, engine: FaceEngine, ttl_s: int) -> Published:
    """The index at ``folder``, checked against ``engine``'s model pack (IncompatibleIndex
    otherwise). Nothing is read whole: vectors and face table are memory-mapped, image records
    read a row group at a time when asked for."""
    stamp = manifest_stamp(folder)  # read first: a publish during the load is seen next time
    index = FaceIndex(folder)
    index.check_engine(engine)
    return Published(index, ThumbnailTokens(ttl_s, slot=slot), stamp)


class ServedIndex:
    """One slot: an index folder, where its photos are, and what is published there now."""

    def __init__(self, slot: int, folder: Path, photos: Path | None,
                 published: Published) -> None:
        self.slot = slot
        self.folder = folder
        self.photos = photos  # where the photos are now, if not where they were indexed
        self.published = published

    def photos_root(self, published: Published) -> Path:
        return self.photos or published.index.dataset_root


@dataclass(frozen=True)
class IndexGroup:
    """What one search searches: a snapshot of every slot. Its size is the sum of theirs,
    and the thresholds of a search follow it, so a search of several indexes is held to the
    same expected number of strangers as a search of one index that size."""

    published: tuple[Published, ...]

    @property
    def indexes(self) -> list[FaceIndex]:
        return [p.index for p in self.published]

    @property
    def size(self) -> int:
        return sum(index.size for index in self.indexes)

    @property
    def images(self) -> range:
        # Only its length is read (the response's index_images); records come from each index.
        return range(sum(len(index.images) for index in self.indexes))

    @property
    def model_pack(self) -> str:
        return self.indexes[0].model_pack  # every index was checked against the one engine

    @property
    def dataset(self) -> str:
        return ", ".join(dict.fromkeys(index.dataset for index in self.indexes))

    def summary(self) -> list[dict[str, object]]:
        """Per index: its dataset, faces and photos, in slot order."""
        return [{"dataset": index.dataset, "index_size": index.size,
                 "index_images": len(index.images)} for index in self.indexes]


class Catalog:
    """The slots served. ``engine`` is the one new indexes are checked against."""

    def __init__(self, served: Sequence[ServedIndex], engine: FaceEngine, ttl_s: int) -> None:
        self.served = tuple(served)
        self.engine = engine
        self.ttl_s = ttl_s

    @classmethod
    def load(cls, folders: Sequence[Path], photos: Sequence[Path], engine: FaceEngine,
             ttl_s: int) -> Catalog:
        """Every folder loaded (IndexNotFound / IncompatibleIndex for one that cannot be)."""
        roots: list[Path | None] = list(photos) or [None] * len(folders)
        served = [ServedIndex(slot, folder, root, load_published(folder, slot, engine, ttl_s))
                  for slot, (folder, root) in enumerate(zip(folders, roots, strict=True))]
        return cls(served, engine, ttl_s)

    def group(self) -> IndexGroup:
        return IndexGroup(tuple(served.published for served in self.served))

    def slot(self, number: int) -> ServedIndex | None:
        return self.served[number] if 0 <= number < len(self.served) else None

    async def reload(self, served: ServedIndex) -> bool:
        """Load the index newly published at ``served``'s folder, if there is one, in a worker
        thread, and swap it in; whether it was. Requests go on with the old index meanwhile. An
        index that cannot be loaded (or was built with another model pack) is logged, the old
        one kept, and not tried again until another is published there."""
        stamp = manifest_stamp(served.folder)
        if stamp is None or stamp == served.published.stamp:
            return False
        try:
            published = await anyio.to_thread.run_sync(
                load_published, served.folder, served.slot, self.engine, self.ttl_s,
                abandon_on_cancel=True)
        except (FaceAuditError, OSError, RuntimeError, ValueError) as error:
            log.error("not serving the index newly published at %s: %s", served.folder, error)
            served.published = replace(served.published, stamp=stamp)  # don't retry it
            return False
        served.published = published
        index = published.index
        log.info("now serving the index published at %s: %d faces in %d photos",
                 served.folder, index.size, len(index.images))
        return True

    async def watch(self, interval_s: float) -> None:
        """Check every ``interval_s`` seconds for newly published indexes, one slot after the
        other, until cancelled."""
        while True:
            await anyio.sleep(interval_s)
            for served in self.served:
                await self.reload(served)
