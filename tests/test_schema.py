"""The OpenAPI document tells the truth: every documented route, fed what Schemathesis makes of
its schema (valid and invalid), answers only the status codes, content types and bodies the
document gives, and never a 5xx. Seeded and bounded, in process: no socket is opened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi

from faceaudit.models.engine import FaceEngine
from faceaudit.service.app import create_app
from faceaudit.service.settings import ServiceSettings

ADMIN_TOKEN = "schema-test-admin-token-0123456789"
EXAMPLES = 25  # per route and phase: about 30 s on two cores for every route


@pytest.fixture(scope="module")
def app(built_index: Path, engine: FaceEngine,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    settings = ServiceSettings(index=built_index, device="cpu", rate_limit=None,
                               daily_limit=None, admin_token=ADMIN_TOKEN,
                               state_dir=tmp_path_factory.mktemp("schema") / "state")
    application = create_app(settings, engine=engine)
    yield application
    asgi.shutdown_lifespans()  # Schemathesis started its lifespan: stop it with the module


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_route_answers_as_documented(case: schemathesis.Case) -> None:
    # The operator's token, so that the admin routes are tried past their 401.
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
