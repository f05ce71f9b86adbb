"""Service settings, read from the environment (prefix FACEAUDIT_) or given by the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from limits import parse as parse_limit
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from faceaudit.models.sessions import Device
from faceaudit.models.thresholds import MAX_RESULTS, TARGET_EXPECTED_STRANGERS
from faceaudit.removals.state_dir import default_state_dir

# Several folders in one environment variable: a JSON list, or paths separated as in PATH.
Folders = Annotated[list[Path], NoDecode]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEAUDIT_", protected_namespaces=())

    # The index folders served; a search searches them all. One path, a list, or in the
    # environment FACEAUDIT_INDEX=/a:/b (or a JSON list).
    index: Folders
    models: str | None = None  # pack folder; None: buffalo_s (or FACEAUDIT_MODELS)
    device: Device = "auto"
    # Where each index's photos are now, in the order of `index`; empty: where they were when
    # indexed.
    dataset: Folders = []
    # The default threshold is derived from the size of the indexes searched, so that a search
    # is expected to show at most target_expected_strangers faces of other people (never below
    # the pack's calibrated one), and no search runs below it: a lower threshold asked for is
    # raised to it, and the response says so. `threshold` can only raise it. The target can
    # only be made stricter than 0.1: no public search may show more strangers.
    threshold: float | None = Field(default=None, gt=0, le=1)
    target_expected_strangers: float = Field(default=TARGET_EXPECTED_STRANGERS, gt=0,
                                             le=TARGET_EXPECTED_STRANGERS)
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 40_000_000
    max_results: int = Field(default=MAX_RESULTS, ge=1)  # photos per search, at most
    thumbnail_size: int = 384
    # Engine replicas that detect and embed selfies side by side (None: one per core on CPU,
    # one on CUDA), and onnxruntime threads of each (None: cores // replicas).
    replicas: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, ge=1)
    # Searches admitted at once, running or waiting for an engine replica; beyond it a search
    # is refused with 503 and Retry-After. Each waiting search holds its upload in memory (at
    # most 5 selfies of max_upload_bytes each), so this bounds the memory searches take.
    max_searches: int = Field(default=64, ge=1)
    # Selfies are decoded with their longer side reduced to this: the detector works at 1024 px
    # anyway, and it bounds the memory a 40-megapixel upload takes while it is embedded.
    selfie_max_side: int = 2048
    thumbnail_ttl: int = 3600  # seconds a thumbnail link from a search result stays valid
    rate_limit: str | None = "30/minute"  # searches per client address (`limits` syntax); None: off
    daily_limit: str | None = "200/day"  # the same, per day, beside rate_limit; None: off
    # Removal requests and the search audit log (SQLite), outside the index folders: by default
    # the one every faceaudit command uses (faceaudit.removals.default_state_dir).
    state_dir: Path = Field(default_factory=default_state_dir)
    # False (serve --no-removals): no removal requests, no audit log, search results carry no
    # match_id, and POST /api/removals says whom to write to instead.
    removals: bool = True
    # Automatic expansion of one-selfie searches without confirmed photos (serve --no-expand:
    # off): their "very likely you" matches join the selfie for a second pass
    # (faceaudit.indexer.expansion); measured to gain recall for one selfie only.
    expand: bool = True
    # The maintainers' address per dataset name (JSON object in the environment), for the
    # letter's mailto: link.
    dataset_contacts: dict[str, str] = {}
    # Bearer token of the admin routes (/api/admin/...); None: they do not exist (404, and
    # absent from the OpenAPI document).
    admin_token: SecretStr | None = None
    # Seconds between checks for a newly published index at each folder of `index`, loaded in
    # the background and swapped in when ready (None: never reload).
    reload_interval: float | None = Field(default=5.0, gt=0)

    @field_validator("state_dir", mode="before")
    @classmethod
    def _default_state_dir(cls, value: Any) -> Any:
        # FACEAUDIT_STATE_DIR="" or None: the default, never Path("") (the working folder).
        return default_state_dir() if value is None or str(value).strip() == "" else value

    @field_validator("rate_limit", "daily_limit")
    @classmethod
    def _limit(cls, value: str | None) -> str | None:
        if not value:  # "" in the environment: off
            return None
        try:
            item = parse_limit(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit: write it as 30/minute or "
                             "200/day") from None
        if item.amount < 1:
            raise ValueError(f"{value!r} lets no search through: use at least 1, or turn the "
                             "limit off") from None
        return value

    @field_validator("index", "dataset", mode="before")
    @classmethod
    def _folders(cls, value: Any) -> Any:
        if isinstance(value, Path):
            return [value]
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part]
        return value

    @model_validator(mode="after")
    def _one_dataset_per_index(self) -> ServiceSettings:
        if not self.index:
            raise ValueError("index: give at least one index folder")
        resolved = [folder.resolve() for folder in self.index]
        if len(set(resolved)) != len(resolved):
            raise ValueError("index: the same index folder is given twice")
        if self.dataset and len(self.dataset) != len(self.index):
            raise ValueError(f"dataset: {len(self.dataset)} photo folders for "
                             f"{len(self.index)} indexes; give one per index, in the same "
                             "order, or none")
        return self
