"""What a build did: counts for people and for the manifest, and the words that say them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from faceaudit.indexer.stage_times import StageTimes
from faceaudit.indexer.store import STATUS_FAILED, STATUS_NO_FACE
from faceaudit.words import counted

# The failures a summary lists one by one; all are counted by reason.
MAX_LISTED_FAILURES = 1000
# Sources whose rows were downloaded from URLs (img2dataset): only they have "downloaded" rows.
DOWNLOADED_KINDS = frozenset({"webdataset", "img2dataset-files"})


@dataclass
class BuildSummary:
    images: int = 0  # = images_with_faces + no_face + failed + all_faces_removed
    images_with_faces: int = 0
    no_face: int = 0
    failed: int = 0
    all_faces_removed: int = 0  # images with faces, every one of them removed on request
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
    source_kind: str = ""  # the reader's kind: "folder", "manifest", "webdataset", ...

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
        self.all_faces_removed = (self.images - self.images_with_faces - self.no_face
                                  - self.failed)
        refs, errors = failed.column("ref").to_pylist(), failed.column("error").to_pylist()
        self.failures = list(zip(refs, errors, strict=True))[:MAX_LISTED_FAILURES]
        # Reasons name their file; without the name, they can be counted.
        self.failure_reasons = Counter((e or "").replace(r, "the image")[:160]
                                       for r, e in zip(refs, errors, strict=True))


def format_build_summary(summary: BuildSummary, out: Path, run: str = "this run") -> str:
    """What a build did, for people: failures first, then what the source held, what the index
    holds (its images add up: with faces, without a face, failed) and what ``run`` (this run,
    or the scan a `build-index` published) did."""
    lines = [f"skipped {ref}: {reason}" for ref, reason in summary.failures[:20]]
    if summary.failed > 20:
        lines.append(f"... and {summary.failed - 20:,} more; by reason:")
        lines += [f"  {count:>8}  {reason}" for reason, count in
                  summary.failure_reasons.most_common(10)]
    coverage = summary.coverage
    not_downloaded = coverage.get("not_downloaded") or {}
    if summary.source_kind in DOWNLOADED_KINDS:
        source = [counted(coverage.get("rows", 0), "row"),
                  f"{coverage.get('downloaded', 0):,} downloaded"]
        if not_downloaded:
            source.append(f"{sum(not_downloaded.values()):,} not downloaded")
    else:
        source = [counted(coverage.get("rows", 0),
                         "file" if summary.source_kind == "folder" else "row")]
    if coverage.get("malformed"):
        source.append(f"{counted(coverage['malformed'], 'malformed row')} skipped")
    if summary.duplicates:
        source.append(f"{counted(summary.duplicates, 'duplicate')} skipped")
    lines.append("source: " + ", ".join(source))
    for reason, count in sorted(not_downloaded.items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"  not downloaded {count:>8}  {reason}")
    for name, joined in summary.enrichment.items():
        if joined.get("needed"):
            lines.append(f"{name}: {joined.get('matched', 0)} of {joined['needed']} photo ids "
                         f"found ({joined.get('lines', 0)} lines read, "
                         f"{joined.get('malformed', 0)} malformed)")
    if summary.units:
        lines.append(f"ray: {summary.units['units']} units, {summary.units['processed']} "
                     f"processed, {summary.units['resumed']} finished by an earlier run")
    faces = counted(summary.faces, "face")
    if summary.removed_faces:
        faces += f"; {summary.removed_faces:,} more left out, their removal was requested"
    parts = [f"{summary.images_with_faces:,} with faces ({faces})",
             f"{summary.no_face:,} without a face", f"{summary.failed:,} failed"]
    if summary.all_faces_removed:
        parts.append(f"{summary.all_faces_removed:,} whose faces were all removed on request")
    lines.append(f"{counted(summary.images, 'image')}: " + ", ".join(parts))
    done = [f"{summary.processed:,} processed"]
    if summary.reused_images:
        done.append(f"{summary.reused_images:,} unchanged since the last build")
    if summary.removed_images:
        done.append(f"{summary.removed_images:,} gone from the source")
    speed = (f"; {summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s"
             if summary.seconds > 0 else "")
    lines.append(f"{run}: {', '.join(done)}{speed} -> {out}")
    return "\n".join(lines)
