"""Which photos a search over HTTP found. Its results name a photo by its ``image_key`` only
(a path can name the person pictured), so tests read each key's path from the index."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from faceaudit.indexer.search import FaceIndex


def photo_refs(*indexes: Path) -> dict[str, str]:
    """image_key -> the photo's path in its dataset, over the indexes published at these
    folders now."""
    return {record.key: record.ref for folder in indexes for record in FaceIndex(folder).images}


def photos_of(matches: Iterable[Mapping[str, Any]], *indexes: Path) -> list[str]:
    """The paths of the photos of ``matches`` (API results), in their order."""
    refs = photo_refs(*indexes)
    return [refs[match["image_key"]] for match in matches]
