"""Service settings, read from the environment (prefix FACEAUDIT_) or given by the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from faceaudit.indexer.search import DEFAULT_THRESHOLD
from faceaudit.models.sessions import Device


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEAUDIT_", protected_namespaces=())

    index: Path
    models: str | None = None  # pack folder; None: buffalo_s (or FACEAUDIT_MODELS)
    device: Device = "auto"
    dataset: Path | None = None  # where the indexed photos are now; default: as built
    threshold: float = DEFAULT_THRESHOLD
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 40_000_000
    max_results: int = 200
    thumbnail_size: int = 384
    threads: int | None = None
