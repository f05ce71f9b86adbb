"""The one place that creates onnxruntime sessions: provider choice, threads, no silent fallback."""

from __future__ import annotations

import logging
from typing import Literal

import onnxruntime as ort

from faceaudit.errors import DeviceUnavailable

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(device: Device, available: list[str] | None = None) -> list[str]:
    """Ordered execution providers for ``device``; ``cuda`` without CUDA is an error."""
    available = ort.get_available_providers() if available is None else available
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise DeviceUnavailable(
                "--device cuda was asked for, but onnxruntime offers no CUDA provider "
                f"(it offers {', '.join(available)}). Install the GPU extra "
                "(pip install 'faceaudit[gpu]', which brings onnxruntime-gpu, in place of "
                "onnxruntime) on a host with an NVIDIA driver, or use --device cpu."
            )
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")


def create_session(
    model: bytes, providers: list[str], *, threads: int | None = None
) -> ort.InferenceSession:
    """A session over verified model bytes (hashed and loaded from the same buffer)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, sess_options=options, providers=providers)
    if providers[0] == CUDA and session.get_providers()[0] != CUDA:
        raise DeviceUnavailable(
            "onnxruntime could not start its CUDA provider (driver or CUDA/cuDNN libraries "
            "missing?); use --device cpu, or fix the GPU installation."
        )
    return session
