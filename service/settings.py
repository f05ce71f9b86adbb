"""Service settings, read from the environment (prefix FACEAUDIT_) or given by the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from faceaudit.models.calibration import (
    MAX_EXPECTED_STRANGERS,
    MAX_RESULTS,
    TARGET_EXPECTED_STRANGERS,
)
from faceaudit.models.sessions import Device


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEAUDIT_", protected_namespaces=())

    index: Path
    models: str | None = None  # pack folder; None: buffalo_s (or FACEAUDIT_MODELS)
    device: Device = "auto"
    dataset: Path | None = None  # where the indexed photos are now; default: as built
    # None: derived from the index size, so that a search is expected to show at most
    # target_expected_strangers faces of other people (never below the pack's calibrated one).
    threshold: float | None = None
    target_expected_strangers: float = Field(default=TARGET_EXPECTED_STRANGERS, gt=0)
    # No search runs where more faces of other people than this are expected (no browsing):
    # a lower threshold asked for is raised to that floor, and the response says so.
    max_expected_strangers: float = Field(default=MAX_EXPECTED_STRANGERS, gt=0)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 40_000_000
    max_results: int = Field(default=MAX_RESULTS, ge=1)  # photos per search, at most
    thumbnail_size: int = 384
    threads: int | None = None
    # Selfies are decoded with their longer side reduced to this: the detector works at 1024 px
    # anyway, and it bounds the memory a 40-megapixel upload takes while it waits for the engine.
    selfie_max_side: int = 2048
    thumbnail_ttl: int = 3600  # seconds a thumbnail link from a search result stays valid
    rate_limit: str | None = "30/minute"  # searches per client address (`limits` syntax); None: off
    daily_limit: str | None = "200/day"  # the same, per day, beside rate_limit; None: off
    # Removal requests and the search audit log (SQLite), outside the index folder. None: no
    # removal requests, no audit log, and search results carry no match_id.
    state_dir: Path | None = None
    # The maintainers' address per dataset name (JSON object in the environment), for the
    # letter's mailto: link.
    dataset_contacts: dict[str, str] = {}
    # Bearer token of the admin routes (/api/admin/...); None: they answer 404.
    admin_token: SecretStr | None = None
    # Seconds between checks for a newly published index at `index` (None: never reload).
    reload_interval: float | None = 5.0
