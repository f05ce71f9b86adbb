"""Per-client limits on searches (per minute and per day), so the service cannot be used to
scan many faces quickly, nor slowly one day after another.

The hits are kept in SQLite: in the state folder (``ratelimit.sqlite3``) when the service has
one, so that every process serving from that folder (several ``serve`` behind one proxy, or
worker processes) shares one budget per client; in memory otherwise. A limit is a moving
window: ``30/minute`` refuses a search when the client made 30 in the last 60 seconds. A hit is
a row, kept until the longest window has passed over it.

A client is its IPv4 address, or its IPv6 /64 (one subscriber's network, in which any host can
take a new address at will); an IPv4-mapped IPv6 address counts as the IPv4 address. The
database holds no address: a client is a keyed digest (HMAC-SHA256 under ``ratelimit.key``,
32 random bytes made on first use, mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

from limits import parse

from faceaudit.errors import FaceAuditError
from faceaudit.removals.state_dir import secret_file

DATABASE = "ratelimit.sqlite3"
SECRET = "ratelimit.key"
BUSY_TIMEOUT_S = 5.0
PRUNE_EVERY_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (
    client BLOB NOT NULL,  -- HMAC of the client key, 16 bytes
    at REAL NOT NULL       -- Unix time of a search that was let through
);
CREATE INDEX IF NOT EXISTS hits_by_client ON hits (client, at);
CREATE INDEX IF NOT EXISTS hits_by_time ON hits (at);
"""


class RateLimited(FaceAuditError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def client_key(host: str) -> str:
    """What one budget is counted for: an IPv4 address, an IPv6 /64, or the host string as
    given when it is not an address (a Unix socket's peer, a test client)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # without an IPv6 zone
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class SearchRateLimit:
    """``specs``: limits in `limits` syntax (``30/minute``, ``200/day``), all counted over
    the same hits. ``state_dir``: where the counts are shared (None: this process's memory).
    Behind a reverse proxy every client has the proxy's address: run uvicorn with
    ``--proxy-headers`` and the proxy's address in ``--forwarded-allow-ips``."""

    def __init__(self, specs: Sequence[str], state_dir: Path | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.items = [parse(spec) for spec in specs]
        self._clock = clock
        self._lock = threading.Lock()
        self._pruned = 0.0
        if state_dir is None:
            self._secret = secrets.token_bytes(32)
            self._db = sqlite3.connect(":memory:", check_same_thread=False)
        else:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._secret = secret_file(state_dir / SECRET, damaged="delete it, and a new one "
                                       "is made at the next start.")
            path = state_dir / DATABASE
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # 0600 from the first byte
            os.close(fd)
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # counts, not records: no fsync
        self._db.isolation_level = None  # transactions are explicit (BEGIN IMMEDIATE)
        self._db.executescript(_SCHEMA)
        weakref.finalize(self, self._db.close)

    def hit(self, client: str) -> None:
        """Count a search by ``client`` (its address), or RateLimited when any limit is
        reached (then nothing is counted)."""
        digest = hmac.new(self._secret, client_key(client).encode(), hashlib.sha256).digest()
        key = digest[:16]
        with self._lock:
            now = self._clock()
            self._db.execute("BEGIN IMMEDIATE")  # one writer at a time across processes
            try:
                refusals = []
                for item in self.items:
                    wait = self._wait(item.amount, item.get_expiry(), key, now)
                    if wait is not None:
                        refusals.append((wait, item))
                if not refusals:
                    self._db.execute("INSERT INTO hits VALUES (?, ?)", (key, now))
                    self._prune(now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if refusals:
            wait, item = max(refusals, key=lambda refusal: refusal[0])
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"Too many searches from your address (the limit is {item}): try again in "
                f"{_wait_in_words(retry_after)}.",
                retry_after=retry_after,
            )

    def _wait(self, amount: int, window: int, key: bytes, now: float) -> float | None:
        """None when one more hit keeps the client within ``amount`` per ``window`` seconds;
        else the seconds until the hit that has to leave the window does."""
        since = now - window
        (count,) = self._db.execute("SELECT count(*) FROM hits WHERE client = ? AND at > ?",
                                    (key, since)).fetchone()
        if count < amount:
            return None
        (leaving,) = self._db.execute(
            "SELECT at FROM hits WHERE client = ? AND at > ? ORDER BY at LIMIT 1 OFFSET ?",
            (key, since, count - amount)).fetchone()
        return float(leaving) + window - now

    def _prune(self, now: float) -> None:
        if now - self._pruned < PRUNE_EVERY_S:
            return
        self._pruned = now
        longest = max(item.get_expiry() for item in self.items)
        self._db.execute("DELETE FROM hits WHERE at <= ?", (now - longest,))


def _wait_in_words(seconds: int) -> str:
    """A wait in words: a per-day limit's wait is hours, not 50,000 seconds."""
    if seconds < 120:
        return f"{seconds} seconds"
    if seconds < 2 * 3600:
        return f"{math.ceil(seconds / 60)} minutes"
    return f"{math.ceil(seconds / 3600)} hours"
