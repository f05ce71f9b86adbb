"""What a real `faceaudit serve` process leaves outside its memory: no core dump, and nothing of
an upload in what it prints, even with every logger at DEBUG and the engine failing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving_probe import (
    FAULT_LANDMARKS,
    FAULT_TRIGGER,
    Served,
    parser_messages,
    serve_process,
)

YAO_PHOTOS = {"team/players.jpg", "street/group_with_yao_behind.jpg",
              "portraits/yao_flipped.jpg", "portraits/yao_bright_small.jpg"}


@pytest.fixture(scope="module")
def served(built_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("serve-process")
    with serve_process(["--index", str(built_index), "--device", "cpu", "--replicas", "1",
                        "--state-dir", str(folder / "state")], folder / "output.log",
                       env={"FACEAUDIT_RATE_LIMIT": "", "FACEAUDIT_DAILY_LIMIT": ""}) as server:
        yield server


def test_the_serving_process_cannot_dump_core(served: Served) -> None:
    limits = Path(f"/proc/{served.pid}/limits").read_text()
    core = re.search(r"^Max core file size\s+(\S+)\s+(\S+)", limits, re.MULTILINE)
    assert core is not None and core.groups() == ("0", "0")  # soft and hard
    # Printed by the test hook as uvicorn starts, after serve turned dumps off.
    assert "test hook: dumpable=0" in served.output()


def test_what_an_upload_holds_is_never_printed(served: Served, yao: bytes) -> None:
    marker = b"SELFIE-BYTES-MARKER"
    name = "jane-doe-private.jpg"
    malformed = b"--x\r\n" + marker + b"\x00: a\r\n"
    # What the parser would say about the malformed form, were its logger on.
    quoted = parser_messages(malformed, b"x")
    assert quoted
    with httpx.Client(base_url=served.base, timeout=60) as http:
        found = http.post("/api/search", files={"selfie": ("selfie.jpg", yao + marker * 10,
                                                           "image/jpeg")})
        assert found.status_code == 200
        assert len(found.json()["matches"]) == len(YAO_PHOTOS)  # the marker changed nothing
        unreadable = http.post("/api/search", files={"selfie": (name, marker * 10, "image/jpeg")})
        assert unreadable.json()["error"]["code"] == "unreadable_image"
        refused = http.post("/api/search", content=malformed,
                            headers={"content-type": "multipart/form-data; boundary=x"})
        assert refused.json()["error"]["code"] == "malformed_upload"
        # Several selfies and a confirmed photo: nothing of them, nor the confirmed set.
        confirmed = found.json()["matches"][0]["match_id"]
        template = http.post("/api/search", files=[
            ("selfie", (name, yao + marker * 10, "image/jpeg")),
            ("selfie", ("second-" + name, yao + marker * 20, "image/jpeg"))],
            data={"confirmed": confirmed})
        assert template.status_code == 200, template.text
        assert template.json()["template"]["confirmed"] == 1
        assert http.get("/healthz").status_code == 200  # the last answer is out: all printed
    printed = served.output()
    assert "DEBUG" in printed  # everything was printed, down to DEBUG
    assert marker.decode() not in printed
    assert name not in printed
    assert confirmed not in printed
    for message in quoted:
        assert message not in printed


def test_an_unexpected_exception_is_logged_by_type_and_place_only(served: Served,
                                                                 yao: bytes) -> None:
    with httpx.Client(base_url=served.base, timeout=60) as http:
        try:
            response: httpx.Response | None = http.post(
                "/api/search", files={"selfie": ("selfie.jpg", yao + FAULT_TRIGGER, "image/jpeg")})
        except httpx.TransportError:
            response = None  # checked below, once the logs are
    # A later request, on a new connection: all is printed by now.
    assert httpx.get(f"{served.base}/healthz", timeout=60).status_code == 200
    printed = served.output()
    for coordinate in FAULT_LANDMARKS[0]:
        assert str(coordinate) not in printed
    assert "cannot align" not in printed  # the message's words, not only its numbers
    line = next(line for line in printed.splitlines() if "POST /api/search failed" in line)
    assert "ValueError" in line and "engine.py" in line and "align_face" in line
    assert response is not None and response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert str(FAULT_LANDMARKS[0][0]) not in response.text
