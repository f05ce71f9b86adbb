"""Words for counts in what the CLI prints."""

from __future__ import annotations


def counted(number: int, one: str, many: str | None = None) -> str:
    """``1 dataset``, ``2 datasets``, ``1,024 photos``: the number and the word it takes."""
    return f"{number:,} {one if number == 1 else many or one + 's'}"
