"""Model packs, checksums and device choice."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from faceaudit.errors import DeviceUnavailable, ModelFileError
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import buffalo_s, pack_from_folder, resolve_pack, verify_file
from faceaudit.models.sessions import CPU, CUDA, choose_providers


def test_default_pack_verifies_its_published_digests() -> None:
    pack = buffalo_s()
    assert pack.detector.path.name == "scrfd_500m_bnkps.onnx"
    assert pack.recognizer.path.name == "w600k_mbf.onnx"
    assert verify_file(pack.detector) == pack.detector.sha256
    assert verify_file(pack.recognizer) == pack.recognizer.sha256
    assert "non-commercial" in pack.licence


def _copy_as_buffalo(folder: Path) -> Path:
    folder.mkdir()
    pack = buffalo_s()
    shutil.copy(pack.detector.path, folder / "det_500m.onnx")
    shutil.copy(pack.recognizer.path, folder / "w600k_mbf.onnx")
    (folder / "1k3d68.onnx").write_bytes(b"not used")  # other pack members are ignored
    return folder


def test_a_tampered_file_is_refused(tmp_path: Path) -> None:
    folder = _copy_as_buffalo(tmp_path / "buffalo_x")
    data = bytearray((folder / "w600k_mbf.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "w600k_mbf.onnx").write_bytes(bytes(data))
    (folder / "SHA256SUMS").write_text(
        f"{buffalo_s().detector.sha256}  det_500m.onnx\n"
        f"{buffalo_s().recognizer.sha256}  w600k_mbf.onnx\n"
    )
    pack = pack_from_folder(folder)
    assert verify_file(pack.detector) == buffalo_s().detector.sha256
    with pytest.raises(ModelFileError, match="SHA-256"):
        verify_file(pack.recognizer)
    with pytest.raises(ModelFileError, match="w600k_mbf.onnx"):
        FaceEngine(pack, device="cpu")


def test_a_pack_folder_is_read_by_file_names(tmp_path: Path) -> None:
    folder = _copy_as_buffalo(tmp_path / "buffalo_sc")
    pack = resolve_pack(str(folder))
    assert pack.name == "buffalo_sc"
    assert pack.detector.path.name == "det_500m.onnx"
    assert pack.recognizer.path.name == "w600k_mbf.onnx"
    engine = FaceEngine(pack, device="cpu")
    assert engine.dimension == 512
    assert set(engine.sha256) == {"det_500m.onnx", "w600k_mbf.onnx"}


def test_a_folder_without_known_files_says_what_it_has(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="model.onnx"):
        pack_from_folder(tmp_path)
    with pytest.raises(ModelFileError, match="does not exist"):
        pack_from_folder(tmp_path / "nowhere")


def test_environment_variable_selects_the_pack(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _copy_as_buffalo(tmp_path / "buffalo_env")
    monkeypatch.setenv("FACEAUDIT_MODELS", str(folder))
    assert resolve_pack().name == "buffalo_env"
    assert resolve_pack("buffalo_s").name == "buffalo_s"


def test_provider_choice() -> None:
    assert choose_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers("auto", [CPU]) == [CPU]
    assert choose_providers("cpu", [CUDA, CPU]) == [CPU]
    assert choose_providers("cuda", [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(DeviceUnavailable, match="no CUDA provider"):
        choose_providers("cuda", [CPU])
    with pytest.raises(ValueError):
        choose_providers("tpu", [CPU])  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="no CUDA provider here")
def test_cuda_engine_embeds_like_cpu(engine: FaceEngine) -> None:
    from faceaudit.demo import vectron_image
    from faceaudit.imaging import decode_image

    image = decode_image(vectron_image("yaoming.jpg"))
    gpu = FaceEngine(buffalo_s(), device="cuda")
    assert gpu.device == "cuda"
    cpu_vector = engine.embed(image, engine.detect(image))[0]
    gpu_vector = gpu.embed(image, gpu.detect(image))[0]
    assert float(cpu_vector @ gpu_vector) > 0.99
