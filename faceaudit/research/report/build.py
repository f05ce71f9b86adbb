"""``make_report``: the figures of one or several indexes, small counts withheld, as the
JSON-ready tree that ``report.json`` and ``index.html`` are written from."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit import __version__
from faceaudit.errors import FaceAuditError
from faceaudit.research.clustering.cluster import Clustering
from faceaudit.research.clustering.graph import Progress
from faceaudit.research.report import across, people
from faceaudit.research.report.figures import (
    BYSTANDER_EDGE_SHARE,
    BYSTANDER_SIZE_RATIO,
    DatasetFigures,
    combine,
    dataset_figures,
)
from faceaudit.research.report.identities import identities_error, identities_of
from faceaudit.research.report.index_files import IndexFiles
from faceaudit.research.report.publish import (
    Section,
    add_shares,
    relate_sections,
    section_tree,
    withhold,
)
from faceaudit.research.report.suppression import (
    Cells,
    Histogram,
    code_histograms,
    merge_rare,
    pointer,
)

DEFAULT_K = 5
SUPPRESSION_RULE = (
    "No published count is between 1 and k-1 (shown as \"<k\"; null in report.json, its JSON "
    "Pointer listed under \"suppressed\"); zero is shown. Histograms first merge their "
    "highest bins (and, for face sizes and scores, their lowest) into one open-ended bin "
    "holding at least k. Wherever published counts add up (a total and its parts: images = "
    "with faces + without + failed, a histogram and what it counts, all datasets and each "
    "one), either none or at least two of them are withheld: where only one would be, the "
    "smallest other non-zero one is withheld too, so no withheld count is the difference of "
    "published ones; such a count may be k or more, and is shown as \"withheld\" (its JSON "
    "Pointer also listed under \"suppressed_secondary\"). Reasons (why photos failed or were "
    "not downloaded) under k anywhere are merged into \"other reasons\". Uploader names and "
    "ids, and people, are never listed: only counts.")
BYSTANDER_RULE = (
    f"A detected face (embedded or too small to embed) is a bystander when its photo has a "
    f"larger face (a longer shorter-side) and it is small (shorter side under "
    f"{BYSTANDER_SIZE_RATIO:.0%} of the photo's largest face's) or off-centre (the centre of "
    f"its box within {BYSTANDER_EDGE_SHARE:.0%} of the photo's width from its left or right "
    f"edge, or of its height from its top or bottom). The largest face of a photo is never "
    f"one.")
UPLOADER_RULE = (
    "Uploaders are told apart by the uploader id the dataset gives, or by the uploader's name "
    "where it gives no id; photos with neither count as 'uploader not stated' and are never "
    "taken as another uploader's.")
PHOTOGRAPHED_BY_OTHERS_RULE = (
    "People photographed by others: estimated identities with faces in photos of two or more "
    "different uploaders. At most one of those uploaders can be the person themself: the "
    "others photographed them.")

Cluster = Callable[[IndexFiles], Clustering]


class _Clock:
    """Seconds per stage, added up when a stage comes back (clustering, once per index)."""

    def __init__(self, stages: dict[str, float]) -> None:
        self.stages, self.last = stages, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self.last
        self.last = now


@dataclass
class _Dataset:
    index: IndexFiles
    figures: DatasetFigures
    clustering: Clustering
    identities_from: str
    identity: NDArray[np.int64]  # dense identity per face


def make_report(folders: Sequence[Path], k: int = DEFAULT_K, *, cluster: Cluster | None = None,
                progress: Progress | None = None) -> dict[str, Any]:
    """The report of the indexes at ``folders``: figures over all of them (the top level),
    and with several, each one's (``datasets``) and what they share (``across_datasets``).
    ``cluster`` groups an index's faces by identity (default: the identities `faceaudit
    cluster` saved beside the index if they are of it, else ``cluster_index``, calling
    ``progress(done, total)`` as it goes)."""
    if k < 1:
        raise FaceAuditError(f"--k {k}: the smallest count to publish must be at least 1.")
    stages: dict[str, float] = {}
    clock = _Clock(stages)
    indexes = [IndexFiles.open(folder) for folder in folders]
    clock.lap("open")
    names = [index.dataset for index in indexes]
    if len(set(names)) < len(names):
        raise FaceAuditError(
            f"Two of the indexes have the same dataset name ({', '.join(names)}): a report "
            "compares different datasets. Build them with different --dataset names.")
    packs = {json.dumps(index.manifest["model_pack"].get("files"), sort_keys=True)
             for index in indexes}
    if len(packs) > 1:
        raise FaceAuditError(
            "The indexes were built with different model packs, whose embeddings cannot be "
            "compared: people cannot be matched across them. Report them one at a time, or "
            "rebuild them with the same --models.")
    datasets = []
    for index in indexes:
        clustering, source = (identities_of(index, progress) if cluster is None
                              else (cluster(index), "given"))
        if len(clustering.labels) != index.size:
            raise FaceAuditError(f"the clustering of {index.folder} labels "
                                 f"{len(clustering.labels)} faces of {index.size}")
        clock.lap("clustering")
        datasets.append(_Dataset(index, dataset_figures(index), clustering, source,
                                 people.dense_labels(clustering.labels)))
        clock.lap("figures")
    keys = [people.uploader_keys(d.index) for d in datasets]
    codes, _ = people.uploader_codes(keys)
    per_dataset = [Section(d.figures, people.uploader_figures(c),
                           people.identity_figures(d.identity, d.index.faces.image_id, c), {})
                   for d, c in zip(datasets, codes, strict=True)]
    clock.lap("people")
    if len(datasets) == 1:
        union, linked, shared = per_dataset[0], None, None
    else:
        union, linked, shared = _union(datasets, codes, per_dataset)
        clock.lap("across datasets")
    sections = [union, *per_dataset] if len(datasets) > 1 else [union]
    for name, low_end in (("faces_per_image", False), ("face_sizes", True),
                          ("detection_scores", True), ("photos_per_uploader", False),
                          ("photos_per_identity", False)):
        coded = code_histograms([_histogram(s, name) for s in sections], k, low_end=low_end)
        for section, histogram in zip(sections, coded, strict=True):
            section.histograms[name] = histogram
    merge_rare([s.figures.failures_by_reason for s in sections], k)
    merge_rare([s.figures.coverage["not_downloaded"] for s in sections], k)

    cells = Cells()
    tree, union_keys = section_tree(cells, (), union)
    if len(datasets) > 1:
        tree["datasets"] = []
        parts = []
        for i, (d, section) in enumerate(zip(datasets, per_dataset, strict=True)):
            subtree, subkeys = section_tree(cells, ("datasets", i), section)
            tree["datasets"].append({"dataset": d.index.dataset, **subtree,
                                     "clustering": _clustering(d)})
            parts.append(subkeys)
        relate_sections(cells, union_keys, parts)
        assert linked is not None and shared is not None
        tree["across_datasets"] = _across(cells, names, linked, shared)
        # Photos counted in each dataset = distinct photos + their extra copies (two datasets).
        cells.relate_if_exact(union_keys["images"], [
            pointer("across_datasets", "distinct_photos"),
            pointer("across_datasets", "photos_in_several_datasets")])
    hidden = cells.suppress(k)
    secondary = {where for where in hidden if not 0 < cells.values[where] < k}
    withhold(tree, hidden)
    add_shares(tree)
    for subtree in tree.get("datasets", []):
        add_shares(subtree)
    clock.lap("suppression")
    return _with_header(tree, datasets, k, hidden, secondary, stages)


def _histogram(section: Section, name: str) -> Histogram:
    if name == "photos_per_uploader":
        return section.uploaders.photos_per_uploader
    if name == "photos_per_identity" and section.people is not None:
        return section.people.photos_per_identity
    histogram = getattr(section.figures, name)
    assert isinstance(histogram, Histogram)
    return histogram


def _union(datasets: list[_Dataset], codes: list[NDArray[np.int64]], per_dataset: list[Section]
           ) -> tuple[Section, across.LinkedIdentities, across.SharedPhotos]:
    """The all-together section: additive figures summed, uploaders counted once across
    datasets, identities linked across them."""
    threshold = max(d.clustering.threshold for d in datasets)
    sets = [across.centroids(d.index.vectors, d.identity, int(d.identity.max(initial=-1)) + 1)
            for d in datasets]
    linked = across.link_identities(sets, threshold)
    shared = across.shared_photos([across.image_digests(d.index) for d in datasets])
    offsets = np.cumsum([0] + [d.figures.images for d in datasets])
    identity = np.concatenate([g[d.identity] for g, d in zip(linked.group, datasets,
                                                              strict=True)])
    image = np.concatenate([np.asarray(d.index.faces.image_id, np.int64) + offsets[i]
                            for i, d in enumerate(datasets)])
    # The same photo in two datasets is one photo of the person.
    photo = np.concatenate([numbers[np.asarray(d.index.faces.image_id)] for numbers, d
                            in zip(shared.numbers, datasets, strict=True)])
    all_codes = np.concatenate(codes)
    union = Section(combine([s.figures for s in per_dataset]),
                    people.uploader_figures(all_codes),
                    people.identity_figures(identity, image, all_codes, photo), {})
    return union, linked, shared


def _across(cells: Cells, names: list[str], linked: across.LinkedIdentities,
            shared: across.SharedPhotos) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "distinct_photos": cells.add(pointer("across_datasets", "distinct_photos"),
                                     shared.distinct),
        "photos_in_several_datasets": cells.add(
            pointer("across_datasets", "photos_in_several_datasets"), shared.in_several),
        "identities_in_several_datasets": cells.add(
            pointer("across_datasets", "identities_in_several_datasets"), linked.in_several),
        "pairs": [],
        "photos_rule": "the same SHA-256 of the image bytes in two or more datasets",
        "identities_rule": across.IDENTITIES_RULE,
    }
    for n, ((i, j), photos) in enumerate(sorted(shared.pairs.items())):
        tree["pairs"].append({
            "datasets": [names[i], names[j]],
            "photos_in_both": cells.add(pointer("across_datasets", "pairs", n,
                                                "photos_in_both"), photos),
            "identities_in_both": cells.add(pointer("across_datasets", "pairs", n,
                                                    "identities_in_both"),
                                            linked.pairs[(i, j)])})
    return tree


def _clustering(dataset: _Dataset) -> dict[str, Any]:
    clustering = dataset.clustering
    return {"method": clustering.method, "threshold": clustering.threshold, "k": clustering.k,
            "min_link": clustering.min_link, "identities_from": dataset.identities_from,
            "seconds": round(clustering.seconds, 2)}


def _with_header(tree: dict[str, Any], datasets: list[_Dataset], k: int, hidden: set[str],
                 secondary: set[str], stages: dict[str, float]) -> dict[str, Any]:
    """The tree, after what it is: its datasets, the rules, the clustering and its error."""
    header: dict[str, Any] = {
        "report": {
            "faceaudit_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(sum(stages.values()), 2),
            "stage_seconds": {name: round(value, 3) for name, value in stages.items()},
            "indexes": [{"dataset": d.index.dataset, "kind": d.index.manifest["dataset"]
                         .get("kind"), "built": d.index.manifest.get("created"),
                         "model_pack": d.index.model_pack} for d in datasets],
        },
        "suppression": {"k": k, "rule": SUPPRESSION_RULE},
        "suppressed": sorted(hidden),
        "suppressed_secondary": sorted(secondary),
        "definitions": {"bystander_faces": BYSTANDER_RULE, "uploaders": UPLOADER_RULE,
                        "people_photographed_by_others": PHOTOGRAPHED_BY_OTHERS_RULE},
        "clustering": {**_clustering(datasets[0]),
                       "thresholds": [d.clustering.threshold for d in datasets]},
        "identities_estimated_error": identities_error(
            max(d.clustering.threshold for d in datasets)),
    }
    return {**header, **tree}
