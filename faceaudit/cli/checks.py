"""Checks the CLI makes before any work: settings in their ranges, a port that is free. Each
failure is a ``FaceAuditError`` whose message names the flag to change."""

from __future__ import annotations

import errno
import socket

from faceaudit.errors import FaceAuditError, InvalidSetting

# The flag that sets each setting InvalidSetting names.
SETTING_FLAGS = {"det_size": "--det-size", "min_face": "--min-face",
                 "threshold": "--det-threshold", "workers": "--workers",
                 "unit_size": "--unit-size"}


def check_index_settings(*, det_size: int, min_face: int, det_threshold: float, workers: int,
                         unit_size: int | None = None, threads: int | None = None) -> None:
    """The detection settings, decoding and onnxruntime threads and (with --ray) unit size,
    checked against the ranges they work in before a source is opened or a folder written."""
    check_threads(threads)
    from faceaudit.indexer.pipeline import check_workers
    from faceaudit.indexer.units import check_unit_size
    from faceaudit.models.engine import DetectionSettings

    try:
        DetectionSettings(det_size=det_size, min_face=min_face, threshold=det_threshold)
        check_workers(workers)
        if unit_size is not None:
            check_unit_size(unit_size)
    except InvalidSetting as error:
        flag = SETTING_FLAGS.get(error.setting, error.setting)
        raise FaceAuditError(f"{flag}: {error.message}.") from None


def check_threads(threads: int | None) -> None:
    """onnxruntime's threads: none given (all cores) or 1 and more."""
    if threads is not None and threads < 1:
        raise FaceAuditError(f"--threads: onnxruntime threads must be 1 or more, not {threads}.")


def check_port(host: str, port: int) -> None:
    """Refuse, before models load or a demo is built, a port another process listens on."""
    if not 0 < port < 65536:
        raise FaceAuditError(f"--port {port}: a port is a number from 1 to 65535.")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise FaceAuditError(f"--host {host}: not an address of this machine "
                             f"({error.strerror}).") from None
    with socket.socket(info[0], info[1]) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(info[4])
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise FaceAuditError(
                    f"--port {port}: {host}:{port} is already in use (another faceaudit serve "
                    "or demo?); stop it, or choose another --port.") from None
            raise FaceAuditError(f"--host {host} --port {port}: cannot listen there "
                                 f"({error.strerror}).") from None
