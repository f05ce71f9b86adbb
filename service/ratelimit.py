"""Per-client limits on searches (per minute and per day), so the service cannot be used to
scan many faces quickly, nor slowly one day after another."""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from faceaudit.errors import FaceAuditError


class RateLimited(FaceAuditError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SearchRateLimit:
    """``spec`` in `limits` syntax, e.g. ``30/minute``; counted per client key, in memory
    (one process). Behind a reverse proxy every client has the proxy's address: run uvicorn
    with ``--proxy-headers`` and the proxy's address in ``--forwarded-allow-ips``."""

    def __init__(self, spec: str) -> None:
        self.item = parse(spec)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, client: str) -> None:
        if self._limiter.hit(self.item, "search", client):
            return
        reset = self._limiter.get_window_stats(self.item, "search", client).reset_time
        retry_after = max(1, math.ceil(reset - time.time()))
        raise RateLimited(
            f"Too many searches from your address (the limit is {self.item}): try again in "
            f"{_wait(retry_after)}.",
            retry_after=retry_after,
        )


def _wait(seconds: int) -> str:
    """A wait in words: a per-day limit's wait is hours, not 50,000 seconds."""
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 2 * 3600:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"
