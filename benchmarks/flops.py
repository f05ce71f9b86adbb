"""Multiply-accumulates of an ONNX vision model for one input size, from its graph's shapes,
and a measured matmul ceiling of this machine: the yardsticks of the indexing benchmark."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference


def model_macs(path: Path, height: int, width: int) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes for one
    (1, 3, height, width) input. Activations, pooling and element-wise work are left out."""
    model = onnx.load(str(path))
    graph_input = model.graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, height, width), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for value in [*model.graph.value_info, *model.graph.output, *model.graph.input]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            out = shapes.get(node.output[0])
            kernel = weights.get(node.input[1])
            if out and kernel:
                # out elements x (input channels per group x kernel area)
                macs += int(np.prod(out)) * int(np.prod(kernel[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0]) or weights.get(node.input[0])
            out = shapes.get(node.output[0])
            if a and out:
                macs += int(np.prod(out)) * int(a[-1])
    return macs


def matmul_gflops(size: int = 2048, seconds: float = 2.0) -> float:
    """float32 GFLOP/s of numpy's matmul (BLAS, all cores): a practical ceiling."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - started) / 1e9


if __name__ == "__main__":
    from faceaudit.models.packs import buffalo_s

    pack = buffalo_s()
    for h, w in ((256, 256), (640, 640)):
        print(f"detector {h}x{w}: {model_macs(pack.detector.path, h, w) / 1e9:.3f} GMAC")
    print(f"recognizer 112x112: {model_macs(pack.recognizer.path, 112, 112) / 1e9:.3f} GMAC")
    print(f"matmul: {matmul_gflops():.1f} GFLOP/s")
