"""The `faceaudit` command."""

from faceaudit.cli.main import app

__all__ = ["app"]
