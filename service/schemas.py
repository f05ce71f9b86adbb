"""The API's response models, for validation and for the OpenAPI page.

They allow extra keys: ``faceaudit.results.search_response`` is the source of truth for the
search result, and fields added there reach clients without a change here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    status: str = "ok"
    model_pack: str
    index_size: int = Field(description="Faces in the index.")
    images: int = Field(description="Photos in the index, with or without faces.")


class MatchOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    image: str = Field(description="Path of the photo, relative to the dataset root.")
    score: float = Field(description="Cosine similarity of the best face in the photo.")
    bbox: list[float] = Field(description="x1, y1, x2, y2 of that face, in photo pixels.")
    thumbnail: str = Field(description="Signed link to a thumbnail, valid for a limited time.")
    width: int | None = Field(description="Width of the upright photo, in pixels.")
    height: int | None = Field(description="Height of the upright photo, in pixels.")


class SearchResult(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    faces_in_selfie: int
    threshold: float
    model_pack: str
    index_size: int
    matches: list[MatchOut]
