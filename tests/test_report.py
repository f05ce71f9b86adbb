"""`faceaudit report`: its figures checked against the index they describe (read another way:
record by record), small-count suppression, and an HTML page that needs no network."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter, defaultdict
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from faceaudit.cli import app
from faceaudit.indexer.build import build_index
from faceaudit.indexer.search import FaceIndex
from faceaudit.models.engine import FaceEngine
from faceaudit.research.clustering.cluster import cluster_index
from faceaudit.research.clustering.identities_file import identities_path, write_identities
from faceaudit.research.report import identities
from faceaudit.research.report.figures import bystanders
from faceaudit.research.report.licences import (
    ABSENT,
    ALL_RIGHTS_RESERVED,
    COMMERCIAL_REUSE,
    NON_COMMERCIAL,
    PUBLIC_DOMAIN,
    UNRECOGNISED,
    licence_category,
)
from faceaudit.research.report.suppression import Cells, code_histograms, integer_histogram

CONTRACT = ("images", "faces", "identities_estimated", "uploaders", "licences",
            "non_commercial_photos", "people_photographed_by_others")
# The "other" dataset: the demo's photos under made-up Flickr-like provenance.
UPLOADERS = {  # photo -> (uploader id, uploader name)
    "portraits/astronaut.png": ("11111111@N01", "Ada Uploaderson"),
    "portraits/hanks.jpg": ("22222222@N02", "Bob Camerawright"),
    "portraits/yao_bright_small.jpg": ("33333333@N03", "Cy Shutterby"),
    "portraits/yao_flipped.jpg": ("44444444@N04", "Dee Lensford"),
    "street/gdp.jpg": ("33333333@N03", "Cy Shutterby"),
    "street/group.jpg": ("55555555@N05", "Eve Flashley"),
    "street/group_with_yao_behind.jpg": ("66666666@N06", "Fay Tripodson"),
    "street/no_face_rocket.jpg": ("33333333@N03", "Cy Shutterby"),
    "team/players.jpg": ("44444444@N04", "Dee Lensford"),
}
NC_SA = "Attribution-NonCommercial-ShareAlike License"
LICENCES = {  # photo -> (licence name, licence url)
    "portraits/astronaut.png": (NC_SA, ""),
    "portraits/hanks.jpg": (NC_SA, ""),
    "portraits/yao_bright_small.jpg": (NC_SA, ""),
    "portraits/yao_flipped.jpg": (NC_SA, ""),
    "street/gdp.jpg": (NC_SA, ""),
    "street/group.jpg": ("CC BY-NC 4.0", ""),
    "street/group_with_yao_behind.jpg": ("All Rights Reserved", ""),
    "street/no_face_rocket.jpg": ("All Rights Reserved", ""),
    "street/sky.png": ("", ""),
    "team/players.jpg": ("Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
}


@pytest.fixture(scope="module")
def other_index(collection: tuple[Path, Path], engine: FaceEngine,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's photos as a second dataset, "other", with uploader ids and licences."""
    root = tmp_path_factory.mktemp("other")
    photos = root / "photos"
    shutil.copytree(collection[0], photos)
    with open(photos / "other.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["file", "owner", "author", "license", "license_url"])
        for name, licence in sorted(LICENCES.items()):
            writer.writerow([name, *UPLOADERS.get(name, ("", "")), *licence])
    out = root / "other-index"
    build_index(photos / "other.csv", out, engine, dataset="other")
    return out


def _report(*args: str) -> tuple[dict[str, Any], Path]:
    out = Path(args[args.index("--out") + 1])
    result = CliRunner().invoke(app, ["report", *args])
    assert result.exit_code == 0, result.output
    assert "report: " in result.output
    return json.loads((out / "report.json").read_text(encoding="utf-8")), out


def _uploader(record: Any) -> str | None:
    return (f"id:{record.uploader_id}" if record.uploader_id else
            f"name:{record.uploader_name}" if record.uploader_name else None)


def _expected(folder: Path) -> dict[str, Any]:
    """The contract's figures counted record by record, the slow way."""
    index = FaceIndex(folder)
    records = list(index.images)
    labels = cluster_index(index).labels
    by_person: dict[int, set[str]] = defaultdict(set)
    for face, label in enumerate(labels.tolist()):
        uploader = _uploader(records[int(index.faces.image_id[face])])
        if uploader:
            by_person[label].add(uploader)
    return {
        "images": len(records),
        "faces": index.manifest["counts"]["faces"],
        "images_with_faces": index.manifest["counts"]["images_with_faces"],
        "identities_estimated": len(set(labels.tolist())),
        "uploaders": len({_uploader(r) for r in records} - {None}),
        "licences": Counter(r.licence_name or r.licence_url or "(not stated)"
                            for r in records),
        "non_commercial_photos": sum(licence_category(r.licence_name, r.licence_url)
                                     == NON_COMMERCIAL for r in records),
        "people_photographed_by_others": sum(len(u) >= 2 for u in by_person.values()),
    }


def test_the_figures_are_the_index_s(built_index: Path, other_index: Path,
                                     tmp_path: Path) -> None:
    for folder in (built_index, other_index):
        report, _ = _report(str(folder), "--out", str(tmp_path / folder.name), "--k", "1")
        expected = _expected(folder)
        assert set(CONTRACT) <= set(report)
        assert report["suppressed"] == []
        for key, value in expected.items():
            assert report[key] == value, key
        assert report["faces"] == sum(b["count"] for b in report["face_sizes"]["bins"])
        assert report["identities_estimated"] == sum(
            b["count"] for b in report["photos_per_identity"]["bins"])
        assert report["images"] == (report["images_with_faces"] + report["images_without_faces"]
                                    + report["failed_images"])
        assert report["coverage"]["rows"] == FaceIndex(folder).manifest["coverage"]["rows"]
    # The "other" dataset: six NC photos (five NC-SA, one CC BY-NC), six uploaders of whom
    # Cy has three photos, Yao in photos of three uploaders.
    assert report["non_commercial_photos"] == 6
    assert report["licence_categories"][NON_COMMERCIAL] == 6
    assert report["licence_categories"][COMMERCIAL_REUSE] == 1
    assert report["licence_categories"][ALL_RIGHTS_RESERVED] == 2
    assert report["licence_categories"][ABSENT] == 1
    assert report["uploaders"] == 6
    assert report["photos_without_uploader"] == 1
    assert report["people_photographed_by_others"] >= 1


def test_small_counts_are_withheld_and_uploaders_never_named(
        other_index: Path, tmp_path: Path) -> None:
    report, out = _report(str(other_index), "--out", str(tmp_path / "r"))  # k = 5
    assert report["suppression"]["k"] == 5
    # A licence of 2 photos is withheld; NC-SA's 5 too, or 6 NC photos - 5 would give away
    # CC BY-NC's one.
    assert report["licences"]["All Rights Reserved"] is None
    assert "/licences/All Rights Reserved" in report["suppressed"]
    assert report["licences"]["CC BY-NC 4.0"] is None
    assert report["non_commercial_photos"] == 6
    assert report["licences"][NC_SA] is None
    assert report["licence_shares"]["All Rights Reserved"] is None
    # Every suppressed pointer is null, and no published count is between 1 and k - 1.
    for where in report["suppressed"]:
        node: Any = report
        for part in where.split("/")[1:]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert node is None, where
    for path, value in _counts(report):
        assert value is None or value == 0 or value >= 5, (path, value)
    # A total and its parts never have exactly one withheld (it would be their difference).
    parts = [report["images_with_faces"], report["images_without_faces"],
             report["failed_images"], report["images"]]
    assert sum(p is None for p in parts) != 1
    licences = [*report["licences"].values(), report["images"]]
    assert sum(p is None for p in licences) != 1
    # No uploader id or name anywhere in what is written.
    html = (out / "index.html").read_text(encoding="utf-8")
    text = (out / "report.json").read_text(encoding="utf-8") + html
    for uid, name in UPLOADERS.values():
        for secret in (uid, uid.split("@")[0], name, *name.split()[1:]):
            assert secret not in text, secret
    assert ">&lt;5</td>" in html and "All Rights Reserved" in html


def test_the_page_says_which_counts_are_withheld_and_why(
        other_index: Path, tmp_path: Path) -> None:
    """A count withheld only to protect a small one (NC-SA's 5 photos) is not shown as "<5"
    on a page that says counts under 5 are: it is "withheld", and the page lists it apart."""
    report, out = _report(str(other_index), "--out", str(tmp_path / "r"))
    raw, _ = _report(str(other_index), "--out", str(tmp_path / "raw"), "--k", "1")
    html = (out / "index.html").read_text(encoding="utf-8")
    # Each withheld count outside the histograms (whose bins k changes), by its true value.
    for where in report["suppressed"]:
        if "/bins/" in where:
            continue
        value: Any = raw
        for part in where.split("/")[1:]:
            value = value[int(part)] if isinstance(value, list) else value[part]
        assert (where in report["suppressed_secondary"]) == (not 0 < value < 5), where
    assert set(report["suppressed_secondary"]) <= set(report["suppressed"])
    nc_sa = f"/licences/{NC_SA}"
    assert raw["licences"][NC_SA] == 5 and nc_sa in report["suppressed_secondary"]
    assert "/licences/All Rights Reserved" not in report["suppressed_secondary"]
    row = re.search(rf"<tr><td>{re.escape(NC_SA)}</td><td class=\"n\">([^<]*)</td>", html)
    assert row and row.group(1) == "withheld", row
    assert ("<tr><td>All Rights Reserved</td><td class=\"n\">&lt;5</td>" in html)
    assert "Counts from 1 to\n  4 are shown as “&lt;5”" in html
    assert (f"<tr><td><code>{nc_sa}</code></td><td>would give away a count under 5 (it may be "
            "5 or more)</td></tr>") in html
    assert ("<tr><td><code>/licences/All Rights Reserved</code></td><td>from 1 to 4</td></tr>"
            in html)
    # A manifest of local files: nothing was downloaded, and the page does not say so.
    assert "Rows the source lists" in html and "downloaded (bytes present)" not in html


def _counts(tree: Any, path: str = "") -> list[tuple[str, int | None]]:
    """Every count of a report's tree: the values under its figures, not its settings."""
    skip = {"report", "suppression", "suppressed", "clustering", "definitions",
            "identities_estimated_error", "low", "high", "licence_shares"}
    found: list[tuple[str, int | None]] = []
    items = (enumerate(tree) if isinstance(tree, list) else tree.items()
             if isinstance(tree, dict) else [])
    for key, value in items:
        if key in skip:
            continue
        if isinstance(value, (dict, list)):
            found += _counts(value, f"{path}/{key}")
        elif isinstance(value, int) and not isinstance(value, bool) or value is None:
            found.append((f"{path}/{key}", value))
    return found


class _Resources(HTMLParser):
    """Every URL the page would load (src, href of <link>, <script>, url() in styles)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.tags: Counter[str] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for name, value in attrs:
            if name in ("src", "srcset", "xlink:href", "data", "poster") or (
                    name == "href" and tag in ("link", "image", "use", "script", "base")):
                self.loads.append(f"<{tag} {name}={value}>")


def test_the_page_needs_no_network(built_index: Path, other_index: Path,
                                   tmp_path: Path) -> None:
    report, out = _report(str(built_index), str(other_index), "--out", str(tmp_path / "r"))
    html = (out / "index.html").read_text(encoding="utf-8")
    parser = _Resources()
    parser.feed(html)
    assert parser.loads == []
    assert parser.tags["script"] == 0 and parser.tags["link"] == 0 and parser.tags["img"] == 0
    assert "url(" not in html and "@import" not in html
    # Charts are inline SVG with a title and a description for assistive technology, and a
    # table of the same counts.
    assert parser.tags["svg"] >= 7 and parser.tags["svg"] == parser.tags["desc"]
    assert html.count('role="img"') == parser.tags["svg"]
    assert parser.tags["details"] >= parser.tags["svg"]
    assert "its error" in html and "withheld" in html


def test_several_datasets(built_index: Path, other_index: Path, tmp_path: Path) -> None:
    report, _ = _report(str(built_index), str(other_index), "--out", str(tmp_path / "r"),
                        "--k", "1")
    demo, other = report["datasets"]
    assert (demo["dataset"], other["dataset"]) == ("faceaudit-demo", "other")
    assert report["images"] == demo["images"] + other["images"] == 20
    assert report["faces"] == demo["faces"] + other["faces"]
    assert report["licences"]["All Rights Reserved"] == 2
    assert report["licences"]["(not stated)"] == demo["licences"]["(not stated)"] + 1
    # Demo uploaders are told apart by name (the source gives no ids), the other's by id.
    assert report["uploaders"] == demo["uploaders"] + other["uploaders"]
    # The same photos (bytes) in both, so the same faces: every person is in both.
    across = report["across_datasets"]
    assert across["photos_in_several_datasets"] == 10
    assert across["distinct_photos"] == 10
    # The same photo in both datasets is one photo of the person.
    assert report["photos_per_identity"] == demo["photos_per_identity"]
    assert across["identities_in_several_datasets"] == demo["identities_estimated"]
    assert across["pairs"] == [{"datasets": ["faceaudit-demo", "other"], "photos_in_both": 10,
                                "identities_in_both": demo["identities_estimated"]}]
    assert report["identities_estimated"] == demo["identities_estimated"] \
        == other["identities_estimated"]
    # Yao: three uploaders in "other", none stated by id in the demo but named.
    assert report["people_photographed_by_others"] >= other["people_photographed_by_others"]


def test_the_identities_faceaudit_cluster_saved_are_used(other_index: Path,
                                                         tmp_path: Path) -> None:
    saved = identities_path(other_index)
    result = CliRunner().invoke(app, ["cluster", str(other_index)])
    assert result.exit_code == 0, result.output
    try:
        report, _ = _report(str(other_index), "--out", str(tmp_path / "a"), "--k", "1")
        assert report["clustering"]["identities_from"].startswith("saved by `faceaudit cluster`")
        assert report["identities_estimated"] == _expected(other_index)["identities_estimated"]
        # Saved identities of this index are used as they are: all its faces one person.
        index = FaceIndex(other_index)
        one = cluster_index(index)
        write_identities(replace(one, labels=np.zeros(index.size, np.int64)), index, saved)
        report, _ = _report(str(other_index), "--out", str(tmp_path / "b"), "--k", "1")
        assert report["identities_estimated"] == 1
        # Identities of another build (other face ids) are not: the index is clustered again.
        table = pq.read_table(saved)
        stale = table.set_column(0, "face_id", pa.array(
            np.asarray(index.faces.face_id)[::-1].copy(), pa.int64()))
        pq.write_table(stale.replace_schema_metadata(table.schema.metadata), saved)
        report, _ = _report(str(other_index), "--out", str(tmp_path / "c"), "--k", "1")
        assert report["clustering"]["identities_from"] == "clustered for this report"
        assert report["identities_estimated"] == one.identities
    finally:
        saved.unlink(missing_ok=True)


def test_the_clustering_s_measured_error_is_quoted(built_index: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    report, out = _report(str(built_index), "--out", str(tmp_path / "a"))
    quoted = report["identities_estimated_error"]
    assert quoted["measured"] is True and quoted["dataset"] == "lfw-dev"
    assert quoted["threshold"] <= report["clustering"]["threshold"] + 1e-9
    assert "lfw-dev" in (out / "index.html").read_text(encoding="utf-8")
    monkeypatch.setattr(identities, "CLUSTERING_ERRORS", ())
    report, out = _report(str(built_index), "--out", str(tmp_path / "n"))
    assert report["identities_estimated_error"]["measured"] is False
    assert "has not been measured yet" in (out / "index.html").read_text(encoding="utf-8")
    measured = {"dataset": "lfw-dev", "threshold": 0.3, "identities_error": 0.031,
                "bcubed_precision": 0.987, "bcubed_recall": 0.954,
                "source": "faceaudit eval lfw-dev"}
    monkeypatch.setattr(identities, "CLUSTERING_ERRORS", (measured,))
    report, out = _report(str(built_index), "--out", str(tmp_path / "b"))
    assert report["identities_estimated_error"] == {"measured": True, **measured}
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "measured on lfw-dev: the count was off by +3.1%" in html
    assert "BCubed precision 0.987, recall 0.954" in html


def test_a_missing_index_and_a_bad_k_are_errors(built_index: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing"), "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "not a faceaudit index" in missing.output
    bad = runner.invoke(app, ["report", str(built_index), "--out", str(tmp_path), "--k", "0"])
    assert bad.exit_code == 2 and "at least 1" in bad.output
    twice = runner.invoke(app, ["report", str(built_index), str(built_index), "--out",
                                str(tmp_path)])
    assert twice.exit_code == 2 and "same dataset name" in twice.output
    # Embeddings of another model pack cannot be matched to these.
    elsewhere = tmp_path / "other-pack"
    shutil.copytree(built_index, elsewhere)
    manifest = json.loads((elsewhere / "manifest.json").read_text())
    manifest["dataset"]["name"] = "elsewhere"
    for file in manifest["model_pack"]["files"].values():
        file["sha256"] = "0" * 64
    (elsewhere / "manifest.json").write_text(json.dumps(manifest))
    mixed = runner.invoke(app, ["report", str(built_index), str(elsewhere), "--out",
                                str(tmp_path)])
    assert mixed.exit_code == 2 and "different model packs" in mixed.output


@pytest.mark.parametrize(("name", "url", "category"), [
    ("Attribution-NonCommercial-NoDerivs License", None, NON_COMMERCIAL),
    ("CC BY-NC-SA 2.0", None, NON_COMMERCIAL),
    (None, "http://creativecommons.org/licenses/by-nc/2.0/", NON_COMMERCIAL),
    ("Attribution License", "http://creativecommons.org/licenses/by/2.0/", COMMERCIAL_REUSE),
    ("CC BY-SA 4.0", None, COMMERCIAL_REUSE),
    ("Public Domain Dedication (CC0)", None, PUBLIC_DOMAIN),
    ("No known copyright restrictions", None, PUBLIC_DOMAIN),
    ("All Rights Reserved", None, ALL_RIGHTS_RESERVED),
    ("see the photographer", None, UNRECOGNISED),
    (None, None, ABSENT),
])
def test_licence_categories(name: str | None, url: str | None, category: str) -> None:
    assert licence_category(name, url) == category


def test_secondary_suppression_follows_relations() -> None:
    cells = Cells()
    for path, value in (("/all", 30), ("/a", 20), ("/b", 7), ("/c", 3), ("/x", 7), ("/y", 0)):
        cells.add(path, value)
    cells.relate("/all", ["/a", "/b", "/c"])
    cells.relate("/b", ["/x", "/y"])  # hiding /b exposes /x = /b - /y
    assert cells.suppress(5) == {"/c", "/b", "/x"}
    assert cells.suppress(1) == set()
    with pytest.raises(ValueError):
        cells.relate("/all", ["/a"])


def test_histograms_are_top_coded_alike() -> None:
    # One: a single person in 60 photos, 4 in 7; two: 6 people in 12 photos. The top bin
    # must hold 5 in each: "≥ 5" for one, which two must share.
    values = np.array([1] * 9 + [2] * 6 + [7] * 4 + [60])
    one = integer_histogram(values, (1, 2, 3, 5, 10, 50), "photos", "people")
    two = integer_histogram(np.array([1] * 3 + [3] * 8 + [12] * 6), (1, 2, 3, 5, 10, 50),
                            "photos", "people")
    total = integer_histogram(np.concatenate([values, [1] * 3 + [3] * 8 + [12] * 6]),
                              (1, 2, 3, 5, 10, 50), "photos", "people")
    coded = code_histograms([total, one, two], 5)
    assert [b.label for b in coded[0].bins] == [b.label for b in coded[1].bins] \
        == ["1", "2", "3–4", "≥ 5"]
    assert [b.count for b in coded[1].bins] == [9, 6, 0, 5]
    assert [b.count for b in coded[2].bins] == [3, 0, 8, 6]
    assert sum(b.count for b in coded[0].bins) == len(values) + 17


def test_bystanders() -> None:
    # Photo 0 (1000 x 800): a 200 px face in the middle, a 60 px one (small), a 150 px one
    # at the left edge (off-centre), a 150 px one near the middle (not a bystander).
    # Photo 1: two equal faces at the edges: neither is smaller, so neither is a bystander.
    boxes = np.array([[400, 300, 600, 500], [450, 550, 510, 610], [10, 300, 160, 450],
                      [300, 300, 450, 450], [0, 0, 100, 100], [900, 700, 1000, 800]],
                     np.float32)
    image = np.array([0, 0, 0, 0, 1, 1])
    sizes = np.array([[1000, 800], [1000, 800]], np.float64)
    assert bystanders(image, boxes, sizes) == (2, 1)
