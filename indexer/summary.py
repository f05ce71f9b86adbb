"""What a build did: counts for people and for the manifest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from faceaudit.indexer.pipeline import StageTimes
from faceaudit.indexer.store import STATUS_FAILED, STATUS_NO_FACE

# The failures a summary lists one by one; all are counted by reason.
MAX_LISTED_FAILURES = 1000


@dataclass
class BuildSummary:
    images: int = 0
    images_with_faces: int = 0
    no_face: int = 0
    failed: int = 0
    faces: int = 0
    small_faces: int = 0  # found but too small to embed; kept to be blurred
    processed: int = 0  # images read, decoded and run through the models in this run
    reused_images: int = 0  # unchanged since the previous index or an interrupted build
    removed_images: int = 0  # in the previous index, gone from the source
    removed_faces: int = 0  # left out because their removal was requested
    duplicates: int = 0  # items whose key another item of the source already had
    seconds: float = 0.0
    stages: StageTimes = field(default_factory=StageTimes)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (ref, reason), first ones
    failure_reasons: Counter[str] = field(default_factory=Counter)
    coverage: dict[str, Any] = field(default_factory=dict)
    enrichment: dict[str, Any] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)  # distributed builds: done, resumed
    startup_seconds: float = 0.0  # distributed builds: until every worker had its models

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def count_images(self, images: pa.Table) -> None:
        """Set the image counts and failures from the new index's images table."""
        status = images.column("status")
        self.images = images.num_rows
        self.images_with_faces = int(pc.sum(pc.greater(images.column("faces"), 0)).as_py() or 0)
        self.no_face = int(pc.sum(pc.equal(status, STATUS_NO_FACE)).as_py() or 0)
        failed = images.filter(pc.equal(status, STATUS_FAILED)).select(["ref", "error"])
        self.failed = failed.num_rows
        refs, errors = failed.column("ref").to_pylist(), failed.column("error").to_pylist()
        self.failures = list(zip(refs, errors, strict=True))[:MAX_LISTED_FAILURES]
        # Reasons name their file; without the name, they can be counted.
        self.failure_reasons = Counter((e or "").replace(r, "the image")[:160]
                                       for r, e in zip(refs, errors, strict=True))
