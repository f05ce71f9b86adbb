"""The threshold rules: how many strangers a search may show, how many photos it returns,
when a match is strong, and the step every threshold is rounded to."""

from __future__ import annotations

import math
from collections.abc import Callable

# Used only for a pack nobody has calibrated: a conservative cosine threshold for ArcFace
# models; results then carry no expected-false-match figure. It is also the lowest threshold
# such a pack may be searched at (nothing says how many strangers a lower one would show).
UNCALIBRATED_THRESHOLD = 0.40

# The most selfies one search takes, and the most faces its template holds (selfies and the
# person's confirmed photos together): template curves are measured up to this size.
MAX_SELFIES = 5
MAX_TEMPLATE_FACES = 5
# A template searched on a pack without template curves: its one-photo curve is read this much
# lower (an uncalibrated pack's fixed threshold is raised by it). On buffalo_s a template of 5
# faces needs 0.05-0.08 more than one photo for the same strangers at 10^6-10^8 faces.
TEMPLATE_STANDIN_SHIFT = 0.08
# A pack without template calibration: every pair of one person's selfies must score above
# this (on buffalo_s, different people's photos exceed it at a rate under 1e-4).
UNCALIBRATED_SAME_PERSON = 0.30

# The default threshold keeps the expected faces of strangers per search at or under this...
TARGET_EXPECTED_STRANGERS = 0.1
# ...and no search may run where more than this many are expected (no browsing).
MAX_EXPECTED_STRANGERS = 1.0
# The most photos one search returns. A person is rarely in more than a few dozen photos of a
# dataset (12 of LFW's 5,749 people have 50 or more), and whoever has more can ask for these
# to be removed and search again (removed photos are not shown again), while a search for
# someone else (their photo, a crowd) gets no more than this.
MAX_RESULTS = 50

STRONG = "strong"
POSSIBLE = "possible"
# A match is "strong" when fewer than this many strangers in the whole index are expected to
# score as high: the chance that it is someone else is then about 1 %.
STRONG_EXPECTED_FALSE_MATCHES = 0.01
# Automatic expansion: with one selfie, the faces found where fewer than this many strangers
# are expected in the whole index ("very likely you") join the template for a second pass.
# It gained recall at the same stranger rate only for one selfie (benchmarks/results/
# templates.txt), so it runs only then.
EXPAND_JOIN_EXPECTED = 0.001
MEANING = {STRONG: "This is very likely you", POSSIBLE: "Possibly you: check the photo"}

# Thresholds are rounded up to this step, so that what is shown is what is used.
THRESHOLD_STEP = 0.001


def lowest_threshold(holds: Callable[[float], bool], low: float, high: float) -> float:
    """The lowest multiple of THRESHOLD_STEP in [low, high] where ``holds`` (monotone: false
    then true) is true; ``high`` when it is nowhere true below it."""
    steps_low = math.ceil(low / THRESHOLD_STEP - 1e-9)
    steps_high = math.floor(high / THRESHOLD_STEP + 1e-9)
    if holds(steps_low * THRESHOLD_STEP):
        return round(steps_low * THRESHOLD_STEP, 6)
    while steps_high - steps_low > 1:  # holds(high) or high is the answer anyway
        middle = (steps_low + steps_high) // 2
        if holds(middle * THRESHOLD_STEP):
            steps_high = middle
        else:
            steps_low = middle
    return round(steps_high * THRESHOLD_STEP, 6)
