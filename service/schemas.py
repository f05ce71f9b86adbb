"""The API's response models, for validation and for the OpenAPI page.

The search result allows extra keys: ``faceaudit.indexer.results.search_response`` is the source of
truth for it, and fields added there reach clients without a change here. Not so a match and
its provenance: only the fields declared here leave the server, so that nothing added to a
match (a path, which can name the person pictured) reaches whoever searched by accident.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from faceaudit.service.thumbnails import FACE_SIZE

_EXPECTED_DOC = (
    "How many faces of other people a search of this index is expected to return at this "
    "threshold: the faces in the index times the model pack's calibrated false-match rate. "
    "Null when the model pack is not calibrated (the figure is then unknown, not zero)."
)


class IndexEntry(BaseModel):
    """One of the indexes served."""

    dataset: str = Field(description="The dataset it indexes.")
    index_size: int = Field(description="Faces in it.")
    index_images: int = Field(description="Photos in it, with or without faces.")


_INDEXES_DOC = ("Every index served, in the order given to the service; a search searches "
                "them all, and the sizes above are their sums.")


class Health(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    status: str = "ok"
    model_pack: str
    index_size: int = Field(description="Faces in the indexes served.")
    images: int = Field(description="Photos in the indexes served, with or without faces.")


class GuidePoint(BaseModel):
    threshold: float
    expected_false_matches: float | None = Field(description=_EXPECTED_DOC)


class IndexSummary(BaseModel):
    """What a result's numbers mean: the index searched and the thresholds to choose from."""

    model_config = ConfigDict(protected_namespaces=())

    model_pack: str
    index_size: int = Field(description="Faces in the indexes searched.")
    index_images: int = Field(description="Photos in the indexes, with or without faces.")
    indexes: list[IndexEntry] = Field(description=_INDEXES_DOC)
    calibrated: bool = Field(description="Whether the model pack has a calibrated false-match "
                             "rate; if not, expected_false_matches are null.")
    default_threshold: float = Field(
        description="The threshold a search uses when it names none: the lowest at which at "
        "most 0.1 faces of other people are expected per search at this index's size (or fewer, "
        "as the operator sets), never below the model pack's calibrated one; the operator's "
        "fixed threshold instead when it is higher. It is that of the template searched (in "
        "/api/info: of one selfie): a template of several selfies or confirmed faces scores "
        "strangers higher, so its default is higher.")
    min_threshold: float = Field(
        description="The lowest threshold a search may use: over HTTP, the default threshold "
        "(a search never runs where more faces of other people are expected). A lower "
        "threshold asked for is raised to it (see threshold_clamped).")
    threshold_guide: list[GuidePoint] = Field(
        description="Expected faces of other people per search at thresholds across the usable "
        "range, ascending; interpolate between them on a log scale.")


class Info(IndexSummary):
    """What a client needs before its first search."""

    max_upload_bytes: int = Field(description="The largest selfie accepted, in bytes.")
    max_results: int = Field(description="The most photos one search returns.")
    max_selfies: int = Field(description="The most selfies one search takes.")
    max_template_faces: int = Field(
        description="The most faces a search's template holds: selfies and confirmed photos "
        "together.")


class Provenance(BaseModel):
    """Where a photo comes from, as its dataset states it; null where the dataset says
    nothing (never guessed). Never where the photo is on the server's disk: a path can name
    the person pictured (LFW's Firstname_Lastname/...)."""

    model_config = ConfigDict(extra="ignore")

    dataset: str | None = Field(description="The dataset the photo is part of.")
    photo_id: str | None = Field(description="The photo's id on its platform (e.g. Flickr).")
    page_url: str | None = Field(description="The photo's page.")
    image_url: str | None = Field(description="The image's address, as the dataset lists it.")
    uploader_id: str | None = Field(description="Who uploaded it: platform account id.")
    uploader_name: str | None = Field(description="Who uploaded it: name.")
    title: str | None
    licence_name: str | None = Field(description="The licence, as the dataset states it.")
    licence_url: str | None
    date_taken: str | None = Field(description="As the dataset gives it, verbatim.")
    date_uploaded: str | None
    sha256: str | None = Field(description="SHA-256 of the image bytes that were indexed.")


class MatchOut(BaseModel):
    model_config = ConfigDict(extra="ignore")  # only these fields leave the server

    dataset: str = Field(description="The dataset of the index the photo was found in.")
    image_key: str = Field(description="The photo's stable key: dataset:photo_id, or "
                           "dataset:sha256:... when the platform gives no id.")
    face_id: str = Field(description="Stable 64-bit id of the matching face (the same in "
                         "every rebuild of the index), in decimal: as a string, because "
                         "JavaScript numbers lose integers above 2^53.")
    provenance: Provenance
    match_id: str | None = Field(
        default=None, description="Opaque, signed, expiring id of this match, to name it in "
        "POST /api/removals; null when the service keeps no state (removals are off).")
    score: float = Field(description="Cosine similarity of the best face in the photo.")
    bbox: list[float] = Field(description="x1, y1, x2, y2 of that face, in photo pixels.")
    strength: Literal["strong", "possible"] = Field(
        description='"strong": fewer than 0.01 faces of other people are expected to score this '
        'high in this index, so it is very likely the same person. "possible": look at the '
        "photo to decide (always so for an uncalibrated model pack).")
    meaning: str = Field(description='The strength in plain words: "This is very likely you" '
                         '(strong) or "Possibly you: check the photo" (possible).')
    thumbnail: str = Field(description="Signed link to a thumbnail, valid for a limited time.")
    face_thumbnail: str = Field(
        description=f"Signed link to a square close-up of that face (JPEG, at most {FACE_SIZE} "
        "pixels a side), valid for a limited time.")
    width: int | None = Field(description="Width of the upright photo, in pixels.")
    height: int | None = Field(description="Height of the upright photo, in pixels.")
    new: bool = Field(
        default=False, description="True for a photo that the selfies alone, searched at their "
        "own default threshold (template.selfies_default_threshold), would not have returned: "
        "found thanks to the confirmed photos. Always false in a search without confirmed "
        "photos.")
    expanded: bool = Field(
        default=False, description="True for a photo found only by the second pass of an "
        "automatic expansion: one selfie's \"very likely you\" matches joined it (see "
        "template.expanded), and the grown template found this photo, which the selfie alone "
        "did not.")


class TemplateOut(BaseModel):
    """What the search searched with: the template of the selfies and confirmed faces."""

    selfies: int = Field(description="Selfies fused into the template.")
    confirmed: int = Field(description="Confirmed faces that joined it.")
    confirmed_sent: int = Field(description="Confirmed faces sent (each face once).")
    max_faces: int = Field(description="The most faces a template holds: when more were "
                           "confirmed, those most like the selfies joined.")
    selfies_default_threshold: float = Field(
        description="The default threshold of the selfies alone: every confirmed face scored "
        "at least this against them, and a match is new when the selfies alone would not "
        "have returned it at this threshold.")
    expanded: int = Field(
        default=0, description="Faces that joined the template automatically: with one selfie "
        "and no confirmed photo, its matches scoring where fewer than 0.001 faces of other "
        "people are expected in the index (\"very likely you\") join it, the strongest up to "
        "max_faces in all, for a second pass at the default threshold of that template. 0 when "
        "none joined (or the server's expansion is off).")
    note: str | None = Field(description="Said when some confirmed faces did not join.")


class SearchResult(IndexSummary):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    faces_in_selfie: int
    template: TemplateOut
    threshold: float = Field(description="The similarity threshold this search used.")
    threshold_requested: float | None = Field(
        description="The threshold the search asked for; null when it named none.")
    threshold_clamped: bool = Field(
        description="Whether the threshold asked for was below min_threshold and was raised to "
        "it: a lower one would show faces of other people. The threshold used is in threshold.")
    expected_false_matches: float | None = Field(description=_EXPECTED_DOC)
    matches: list[MatchOut] = Field(description="Photos with a face like the selfie's, best "
                                    "first, each once with its best face.")
