"""Seconds a build spends in each stage of the pipeline, summed over its threads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StageTimes:
    """Seconds spent per stage (decode runs in worker threads, so it overlaps the others)."""

    read_decode: float = 0.0
    detect: float = 0.0
    embed: float = 0.0
    write: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}
