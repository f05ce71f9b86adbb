"""What the report reads of an index: its manifest and its memory-mapped face tables and
vectors, never its search structure (an exact FAISS index holds 2 KB per face in memory, 20 GB
at 10^7 faces), which only a clustering made for the report needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import IncompatibleIndex
from faceaudit.indexer.ann import VECTOR_STORE
from faceaudit.indexer.store import FACES_DIR, SMALL_FACES_DIR, BoxTable, FaceTable, read_manifest


@dataclass(frozen=True)
class IndexFiles:
    folder: Path
    manifest: dict[str, Any]
    faces: FaceTable
    small_faces: BoxTable
    vectors: NDArray[np.float16]  # row i: face i's embedding (memory-mapped)

    @classmethod
    def open(cls, folder: Path) -> IndexFiles:
        manifest = read_manifest(folder)
        try:
            faces = FaceTable.load(folder / FACES_DIR, mmap=True)
            small = BoxTable.load(folder / SMALL_FACES_DIR, mmap=True)
            vectors = np.load(folder / manifest["index"].get("vectors", VECTOR_STORE),
                              mmap_mode="r")
        except (OSError, KeyError, ValueError) as error:
            raise IncompatibleIndex(
                f"{folder} is incomplete or damaged ({error}): rebuild it with "
                f"`faceaudit index SOURCE --out {folder} --fresh`.") from error
        if len(vectors) != len(faces):
            raise IncompatibleIndex(f"{folder} is inconsistent: {len(vectors)} vectors, "
                                    f"{len(faces)} faces.")
        return cls(folder, manifest, faces, small, vectors)

    @property
    def dataset(self) -> str:
        return str(self.manifest["dataset"]["name"])

    @property
    def size(self) -> int:
        return len(self.faces)

    @property
    def model_pack(self) -> str:
        return str(self.manifest["model_pack"]["name"])
