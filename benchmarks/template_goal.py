"""Issue 15's goal, checked as an outside evaluator would: only through the real commands.

LFW people with 6-40 photos; K photos of each in which the index found exactly one face are
the selfies (a folder named by the participant, or for K=1 an image file named by them); the
person's other photos are what should be found. For each index size N and K, the threshold is
the default `faceaudit thresholds --faces N --selfies K --json` prints, and `faceaudit cohort`
searches the whole dataset's index at that threshold. Recall: the share of a person's other
photos found (a photo is found when any row of the cohort's results is that photo), averaged
over people and pooled; strangers: photos of another LFW identity returned, per search.

Selfies are picked from the index's own face table (`FaceIndex.faces` / `small_faces`): one
embedded face and no face too small to embed. The ground truth (a person's photos) is read from
the dataset's folders, so a photo where the index found no face counts as missed.

    nice -n 19 .venv/bin/python benchmarks/template_goal.py
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FACEAUDIT = Path(sys.executable).parent / "faceaudit"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MIN_PHOTOS, MAX_PHOTOS = 6, 40
# Issue 15: (selfies, faces) -> the recall the goal asks for; and what one selfie found before.
GOALS = {(3, 10**6): 0.97, (3, 10**8): 0.90}
ISSUE_ONE_SELFIE = {10**6: 0.920, 10**8: 0.655}


@dataclass
class Person:
    name: str
    photos: list[str]  # refs relative to the dataset root: "Name/Name_0001.jpg"
    one_face: list[str]  # those where the index found exactly one face (sorted)

    def selfies(self, seed: int, count: int) -> list[str]:
        """The first ``count`` of the one-face photos in the order of ``seed``: a draw's
        selfies of 1 are the first of its selfies of 3."""
        order = list(self.one_face)
        random.Random(f"{seed}:{self.name}").shuffle(order)
        return order[:count]


@dataclass
class Outcome:
    seed: int
    faces: int
    selfies: int
    threshold: float
    local_floor: float
    people: int
    searched: int
    errors: dict[str, int]
    recalls: dict[str, float]  # participant searched -> recall
    pooled: float
    strangers: list[tuple[str, str, float]]  # (participant, photo, score)
    capped: int
    seconds: float
    rc: int
    stderr: str


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def thresholds(faces: int, selfies: int) -> dict[str, Any]:
    done = run([str(FACEAUDIT), "thresholds", "--faces", str(faces), "--selfies", str(selfies),
                "--json"])
    if done.returncode != 0:
        sys.exit(f"faceaudit thresholds failed: {done.stderr.strip()}")
    return dict(json.loads(done.stdout))


def build_index(dataset: Path, index: Path, state: Path) -> str:
    """Index the dataset once; an index already published in the work folder is reused."""
    if (index / "manifest.json").exists():
        return f"reused {index.name}/ of the work folder"
    started = time.monotonic()
    done = subprocess.run([str(FACEAUDIT), "index", str(dataset), "--out", str(index),
                           "--dataset", "lfw-dev", "--state-dir", str(state)], check=False)
    if done.returncode != 0:
        sys.exit(f"faceaudit index failed ({done.returncode})")
    return f"built {index.name}/ of the work folder in {time.monotonic() - started:.0f} s"


def people(dataset: Path, index: Path) -> tuple[list[Person], dict[str, int], int]:
    """LFW people with 6-40 photos, each with their one-face photos; the faces the index found
    in each photo; and the index's face count."""
    from faceaudit.indexer.search import FaceIndex

    face_index = FaceIndex(index)
    refs = face_index.images.column("ref")
    faces = Counter(face_index.faces.image_id.tolist())
    small = Counter(face_index.small_faces.image_id.tolist())
    one_face = {ref for image_id, ref in enumerate(refs)
                if faces[image_id] == 1 and small[image_id] == 0}
    chosen = []
    for folder in sorted(path for path in dataset.iterdir() if path.is_dir()):
        photos = sorted(f"{folder.name}/{p.name}" for p in folder.iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES)
        if not MIN_PHOTOS <= len(photos) <= MAX_PHOTOS:
            continue
        chosen.append(Person(folder.name, photos, [p for p in photos if p in one_face]))
    per_photo = {ref: faces[image_id] + small[image_id] for image_id, ref in enumerate(refs)}
    return chosen, per_photo, face_index.size


def write_selfies(dataset: Path, folder: Path, cohort: list[Person], selfies: int, seed: int
                  ) -> None:
    """K=1: NAME.jpg; K>1: NAME/1.jpg ... NAME/K.jpg."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for person in cohort:
        if selfies == 1:
            shutil.copyfile(dataset / person.selfies(seed, 1)[0], folder / f"{person.name}.jpg")
            continue
        (folder / person.name).mkdir()
        for number, photo in enumerate(person.selfies(seed, selfies), start=1):
            shutil.copyfile(dataset / photo, folder / person.name / f"{number}.jpg")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def measure(cohort: list[Person], seed: int, selfies: int, faces: int, threshold: float,
            local_floor: float, work: Path, index: Path, state: Path, dataset: Path
            ) -> Outcome:
    folder = work / "selfies" / f"s{seed}_k{selfies}"
    write_selfies(dataset, folder, cohort, selfies, seed)
    out = work / "runs" / f"s{seed}_n{faces}_k{selfies}" / "results.csv"
    started = time.monotonic()
    # --no-expand: expansion joins faces above the "very likely" level of the index's real
    # size (4,435 faces here), not of the N simulated by --threshold; eval's templates section
    # measures expansion at each N.
    done = run([str(FACEAUDIT), "cohort", str(folder), "--index", str(index), "--out", str(out),
                "--threshold", str(threshold), "--state-dir", str(state), "--json",
                "--no-expand"])
    seconds = time.monotonic() - started
    if done.returncode != 0:
        return Outcome(seed, faces, selfies, threshold, local_floor, len(cohort), 0, {}, {},
                       0.0, [], 0, seconds, done.returncode, done.stderr.strip())
    rows = read_csv(out)
    summary = {row["participant"]: row for row in read_csv(out.with_name("results.summary.csv"))}
    found: dict[str, set[str]] = {}
    strangers = []
    for row in rows:
        found.setdefault(row["participant"], set()).add(row["image"])
        if row["image"].split("/")[0] != row["participant"]:
            strangers.append((row["participant"], row["image"], float(row["score"])))
        if abs(float(row["threshold"]) - threshold) > 1e-9:
            sys.exit(f"cohort searched {row['participant']} at {row['threshold']}, "
                     f"not the --threshold {threshold}")
    recalls: dict[str, float] = {}
    hits, total = 0, 0
    errors: Counter[str] = Counter()
    for person in cohort:
        status = summary[person.name]
        if status["status"] != "ok":
            errors[status["status"]] += 1
            continue
        if int(status["selfies"]) != selfies:
            sys.exit(f"{person.name}: cohort searched {status['selfies']} selfies, not {selfies}")
        others = set(person.photos) - set(person.selfies(seed, selfies))
        got = len(others & found.get(person.name, set()))
        recalls[person.name] = got / len(others)
        hits, total = hits + got, total + len(others)
    capped = sum(1 for row in summary.values() if row["capped_in"])
    return Outcome(seed, faces, selfies, threshold, local_floor, len(cohort), len(recalls),
                   dict(errors), recalls, hits / total if total else 0.0, strangers, capped,
                   seconds, 0, "")


def row(label: str, o: Outcome, recalls: list[float], pooled: float, strangers: int,
        searched: int, people: int, capped: int, seconds: float) -> str:
    se = statistics.stdev(recalls) / len(recalls) ** 0.5
    counted = f"{searched}/{people}"
    return (f"{o.faces:>7.0e} {o.selfies:>2} {label:>5} {o.threshold:>7.3f} "
            f"{o.local_floor:>9.3f} {counted:>8} {statistics.fmean(recalls):>7.3f} {se:>6.3f} "
            f"{pooled:>7.3f} {strangers / searched:>8.3f} {capped:>6} {seconds:>5.0f}")


def report(outcomes: list[Outcome], header: list[str], photo_faces: dict[str, int]
           ) -> list[str]:
    lines = [*header, "",
             f"{'N':>7} {'K':>2} {'seed':>5} {'thresh':>7} {'floor@idx':>9} {'people':>8} "
             f"{'recall':>7} {'+-se':>6} {'pooled':>7} {'str/srch':>8} {'capped':>6} {'sec':>5}"]
    runs: dict[tuple[int, int], list[Outcome]] = {}
    for o in outcomes:
        if o.rc or o.searched < 2:
            lines.append(f"{o.faces:>7.0e} {o.selfies:>2} {o.seed:>5} {o.threshold:>7.3f} "
                         f"cohort exited {o.rc}, searched {o.searched}: {o.stderr} {o.errors}")
            continue
        runs.setdefault((o.selfies, o.faces), []).append(o)
        lines.append(row(str(o.seed), o, list(o.recalls.values()), o.pooled,
                         len(o.strangers), o.searched, o.people, o.capped, o.seconds))
    means: dict[tuple[int, int], tuple[float, float, list[float], float]] = {}
    for key, draws in runs.items():
        per_draw = [statistics.fmean(o.recalls.values()) for o in draws]
        # se over people of each one's mean over the draws that searched them.
        names = {name for o in draws for name in o.recalls}
        per_person = [statistics.fmean(o.recalls[n] for o in draws if n in o.recalls)
                      for n in sorted(names)]
        pooled = statistics.fmean(o.pooled for o in draws)
        # A participant cohort refused (e.g. different_people) found nothing: recall 0.
        refused_zero = statistics.fmean(sum(o.recalls.values()) / o.people for o in draws)
        means[key] = (statistics.fmean(per_draw), pooled, per_draw, refused_zero)
        if len(draws) > 1:
            lines.append(row("all", draws[0], per_person, pooled,
                             sum(len(o.strangers) for o in draws),
                             sum(o.searched for o in draws), sum(o.people for o in draws),
                             sum(o.capped for o in draws), sum(o.seconds for o in draws)))
    lines += ["", "seed: the draw of selfies (all: the draws together; its +-se over people of "
              "each person's mean over draws); recall: mean over people of the share of their "
              "other photos found (+-se: standard error over people); pooled: all people's "
              "photos together; str/srch: photos of another LFW identity returned per search; "
              "floor@idx: the floor `thresholds` gives for this index's own size and K (the "
              "threshold searched must be above it, so no --allow-low-threshold); capped: "
              "participants whose search hit cohort's --top cap (50)", ""]
    for (selfies, faces), goal in GOALS.items():
        if (selfies, faces) not in means:
            lines.append(f"goal K={selfies} at {faces:.0e} faces: recall >= {goal}: NOT RUN")
            continue
        mean, pooled, per_draw, zero = means[(selfies, faces)]
        threshold = runs[(selfies, faces)][0].threshold
        lines.append(f"goal K={selfies} at {faces:.0e} faces (default {threshold}): recall "
                     f">= {goal}: {mean:.3f} (pooled {pooled:.3f}; draws "
                     f"{min(per_draw):.3f}-{max(per_draw):.3f}; refused counted as 0: "
                     f"{zero:.3f}) {'PASS' if mean >= goal else 'FAIL'}")
    for faces, before in ISSUE_ONE_SELFIE.items():
        if (1, faces) in means:
            mean, pooled, per_draw, _ = means[(1, faces)]
            lines.append(f"K=1 at {faces:.0e} faces (default {runs[(1, faces)][0].threshold}): "
                         f"{mean:.3f} (pooled {pooled:.3f}; draws {min(per_draw):.3f}-"
                         f"{max(per_draw):.3f}); issue 15 measured {before} before templates")
    lines += ["", "photos of another LFW identity returned (the faces the index found in that "
              "photo: LFW labels only its centre face)"]
    strangers = Counter((o.faces, o.selfies, participant, photo)
                        for o in outcomes for participant, photo, _ in o.strangers)
    for (faces, selfies, participant, photo), times in sorted(strangers.items()):
        lines.append(f"  N={faces:.0e} K={selfies}: {participant} -> {photo} "
                     f"({photo_faces.get(photo, 0)} faces; in {times} of the draws)")
    for o in outcomes:
        if o.errors:
            lines.append(f"N={o.faces:.0e} K={o.selfies} seed {o.seed}: not searched: "
                         f"{o.errors}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=REPO / ".." / "shared/data/lfw-dev")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks/.cache/template_goal")
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks/results/template_goal.txt")
    parser.add_argument("--selfies", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e8])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=1,
                        help="draws of selfies: seeds SEED .. SEED+DRAWS-1")
    args = parser.parse_args()
    started = time.monotonic()
    dataset, work = args.dataset.resolve(), args.work.resolve()
    state, index = work / "state", work / "index"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    built = build_index(dataset, index, state)
    everyone, photo_faces, index_faces = people(dataset, index)
    cohort = [p for p in everyone if len(p.one_face) >= max(args.selfies)]
    outcomes = []
    for faces in (int(size) for size in args.sizes):
        for selfies in args.selfies:
            chosen = thresholds(faces, selfies)
            floor = thresholds(index_faces, selfies)["floor"]
            for seed in range(args.seed, args.seed + args.draws):
                outcomes.append(measure(cohort, seed, selfies, faces, chosen["default"], floor,
                                        work, index, state, dataset))
                print(f"N={faces:.0e} K={selfies} seed {seed}: done", file=sys.stderr,
                      flush=True)
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    header = [
        f"$ {command}",
        f"# Issue 15's goal through `faceaudit thresholds` and `faceaudit cohort`; dataset "
        f"{dataset.name} ({index_faces} faces indexed; {built}); selfies: photos where the "
        "index found one face and no other",
        f"# people with {MIN_PHOTOS}-{MAX_PHOTOS} photos: {len(everyone)}; with at least "
        f"{max(args.selfies)} one-face photos (the cohort, same people for every K): "
        f"{len(cohort)}",
        "# NOTE: lfw-dev is the data buffalo_s's calibration (and its template tails) was fitted "
        "on: these are in-sample numbers, not the held-out check the issue asks for.",
    ]
    lines = report(outcomes, header, photo_faces)
    lines.append(f"\nwall time {time.monotonic() - started:.0f} s")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
