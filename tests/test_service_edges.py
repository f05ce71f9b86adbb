"""What a new user tripped over: /docs offline, the favicon, a 413 a client can read."""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from python_multipart.multipart import MultipartParser

from faceaudit.models.engine import FaceEngine
from faceaudit.service import uploads
from faceaudit.service.app import create_app
from faceaudit.service.hardening import safe_log_config
from faceaudit.service.settings import ServiceSettings
from faceaudit.service.uploads import discard_rest
from tests.live_server import serve
from tests.serving_probe import parser_messages

MB = 2**20


def test_docs_load_nothing_from_another_origin(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url:\s*["']([^"']+)["']""", page.text)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls)
    assert any(u.endswith("swagger-ui.css") for u in urls)
    assert "/openapi.json" in urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    # The browser is told so too: nothing may load from another origin.
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy
    assert '"validatorUrl": null' in page.text
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN


def test_favicon(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert 0 < len(icon.content) < 8 * 1024
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/").text


def test_discard_rest_reads_a_bounded_amount() -> None:
    read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal read
        while True:
            read += 1
            yield b"a" * 1000

    async def body(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"a" * 1000

    assert anyio.run(lambda: discard_rest(body(50), content_length=None, max_bytes=100_000))
    assert not anyio.run(lambda: discard_rest(endless(), content_length=None, max_bytes=10_000))
    assert read <= 11
    read = 0
    assert not anyio.run(lambda: discard_rest(endless(), content_length="10001",
                                              max_bytes=10_000))
    assert read == 0  # declared over the bound: not a byte read


def form_body(size: int) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://test/",
                            files={"selfie": ("big.jpg", b"\xff" * size, "image/jpeg")})
    return request.read(), request.headers["content-type"]


def test_an_upload_over_the_limit_gets_a_413_the_client_can_read(
        settings: ServiceSettings, engine: FaceEngine) -> None:
    body, content_type = form_body(30 * MB)
    with serve(create_app(settings, engine=engine)) as base:
        # urllib sends "Connection: close": the server closes right after answering, and an
        # answer sent before the body was read used to reach the client as a connection reset.
        request = urllib.request.Request(f"{base}/api/search", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        assert json.loads(refused.value.read())["error"]["code"] == "upload_too_large"

        with httpx.Client(base_url=base, timeout=30) as http:
            for headers in ({"content-type": content_type},
                            {"content-type": content_type, "connection": "close"}):
                response = http.post("/api/search", content=body, headers=headers)
                assert response.status_code == 413
                assert response.json()["error"]["code"] == "upload_too_large"
                assert "10.0 MiB" in response.json()["error"]["message"]
            # Chunked (no Content-Length): refused while streaming, then read to its end.
            chunks = (body[i : i + MB] for i in range(0, len(body), MB))
            response = http.post("/api/search", content=chunks,
                                 headers={"content-type": content_type})
            assert response.status_code == 413
            assert http.get("/healthz").status_code == 200  # the connection is still usable


def test_the_parsers_warnings_stay_off_after_uvicorn_configures_logging(
        client: TestClient, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # uvicorn's start-up runs logging.config.dictConfig(disable_existing_loggers=False), which
    # switches every logger of logging's registry back on: the multipart parser's warnings quote
    # bytes of the body, and must stay off all the same.
    uvicorn.Config(client.app, log_level="warning", log_config=safe_log_config())
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.name}: {record.getMessage()}")

    keep = Keep(logging.DEBUG)
    watched = [logging.getLogger()]  # where every logger of the registry ends

    class WatchedParser(MultipartParser):
        # Whatever logger the parser is given (its own, then the one uploads hands it) gets
        # the handler too: a logger outside the registry reaches no root.
        def __setattr__(self, name: str, value: object) -> None:
            if name == "logger" and isinstance(value, logging.Logger):
                value.addHandler(keep)
                watched.append(value)
            super().__setattr__(name, value)

    monkeypatch.setattr(uploads, "MultipartParser", WatchedParser)
    root = logging.getLogger()
    level, root.level = root.level, logging.DEBUG
    root.addHandler(keep)
    marker = b"BODY-BYTES-MARKER"
    body = b"--x\r\n" + marker + b"\x00: a\r\n"
    try:
        malformed = client.post("/api/search", content=body,
                                headers={"content-type": "multipart/form-data; boundary=x"})
    finally:
        root.level = level
        for logger in watched:
            logger.removeHandler(keep)
    assert malformed.status_code == 400
    assert not [r for r in records if "multipart" in r or "uploads" in r], records
    printed = "".join(capfd.readouterr())  # a logger without handlers prints to stderr
    quoted = parser_messages(body, b"x")
    assert quoted
    for text in (marker.decode(), *quoted):
        assert text not in printed
        assert not [r for r in records if text in r]
    assert len(watched) == 3  # the root, python_multipart's logger and the one uploads gives
