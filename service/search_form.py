"""The search form: up to MAX_SELFIES selfies, the match ids of photos the person confirmed,
and the threshold and number of photos asked for; its OpenAPI description."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from faceaudit.errors import FaceAuditError, about_selfie
from faceaudit.models.thresholds import MAX_SELFIES, MAX_TEMPLATE_FACES
from faceaudit.service.confirmations import CONFIRMED_FIELD
from faceaudit.service.errors import STATUS, InvalidParameter
from faceaudit.service.settings import ServiceSettings
from faceaudit.service.uploads import Form, MissingField, file_bytes

SELFIE_FIELD = "selfie"
REPEATABLE = (SELFIE_FIELD, CONFIRMED_FIELD)
# The most confirmed match ids one search reads: every photo of one answer may be ticked.
MAX_CONFIRMED_SENT = 200
MATCH_ID_CHARS = 200  # a match id has 82
# Multipart boundaries, part headers, the small text fields and the confirmed match ids.
FORM_OVERHEAD = 64 * 1024


class TooManySelfies(FaceAuditError):
    code = "too_many_selfies"


STATUS.update({TooManySelfies: 422})

THRESHOLD_DOC = ("Similarity from which a face counts as the same person, in (0, 1]. One "
                 "below the default threshold of the template searched is raised to it.")
TOP_DOC = "At most this many photos (capped by the server's max_results)."
SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [SELFIE_FIELD],
                    "properties": {
                        SELFIE_FIELD: {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_SELFIES,
                            "items": {"type": "string", "format": "binary",
                                      "contentMediaType": "application/octet-stream"},
                            "description": f"1 to {MAX_SELFIES} photos of one face each, all "
                            "of the same person (the field repeated): JPEG, PNG, WebP, HEIC... "
                            "They are fused into one template in memory and not stored.",
                        },
                        CONFIRMED_FIELD: {
                            "type": "array",
                            "maxItems": MAX_CONFIRMED_SENT,
                            "items": {"type": "string", "minLength": 1,
                                      "maxLength": MATCH_ID_CHARS},
                            "description": "Optional, repeated: the match_id of photos of "
                            "this person's previous answer that they confirm are them. Each "
                            "face must score at or above the default threshold of the selfies "
                            "alone (else 422 confirmation_refused); those that score highest "
                            f"join the template, up to {MAX_TEMPLATE_FACES} faces with the "
                            "selfies. Their embeddings are read from the index.",
                        },
                        "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                                      "description": THRESHOLD_DOC},
                        "top": {"type": "integer", "minimum": 1, "description": TOP_DOC},
                    },
                }
            }
        },
    }
}


class SearchOptions(BaseModel):
    threshold: float | None = Field(default=None, gt=0, le=1)
    top: int = Field(ge=1)


@dataclass(frozen=True)
class SearchForm:
    """What a search asks: the selfies' bytes, the confirmed match ids as sent, the threshold
    asked for (None: the default of the template searched) and ``top``, capped."""

    selfies: list[bytes]
    confirmed: list[str]
    threshold: float | None
    top: int


def max_form_bytes(settings: ServiceSettings) -> int:
    """The largest search body read: MAX_SELFIES selfies at the upload limit each, and the
    rest of the form."""
    return MAX_SELFIES * settings.max_upload_bytes + FORM_OVERHEAD


def search_form(form: Form, settings: ServiceSettings, threshold: float | None,
                top: int | None) -> SearchForm:
    """Form fields over query parameters over the server's defaults; ``top`` capped at
    max_results. Errors name the selfie or the confirmed photo they are about."""
    parts = form.every(SELFIE_FIELD)
    if not parts:
        raise MissingField(f"No photo was sent: the form needs a file field named "
                           f"{SELFIE_FIELD!r}.")
    if len(parts) > MAX_SELFIES:
        raise TooManySelfies(f"{len(parts)} selfies were sent: a search takes at most "
                             f"{MAX_SELFIES}. Keep the {MAX_SELFIES} clearest.")
    selfies = []
    for number, part in enumerate(parts, start=1):
        try:
            selfies.append(file_bytes(part, settings.max_upload_bytes))
        except FaceAuditError as error:
            raise (about_selfie(error, number) if len(parts) > 1 else error) from None
    confirmed = [part.text(MATCH_ID_CHARS) for part in form.every(CONFIRMED_FIELD)]
    if len(confirmed) > MAX_CONFIRMED_SENT:
        raise InvalidParameter(f"{len(confirmed)} confirmed photos were sent: at most "
                               f"{MAX_CONFIRMED_SENT}.")
    if any(not match_id for match_id in confirmed):
        raise InvalidParameter("A confirmed field is empty: send the match_id of a photo.")
    values: dict[str, Any] = {"top": settings.max_results}
    values.update({k: v for k, v in {"threshold": threshold, "top": top}.items() if v is not None})
    values.update({k: form[k].text() for k in ("threshold", "top") if k in form})
    try:
        options = SearchOptions.model_validate(values)
    except ValidationError as error:
        raise InvalidParameter("; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
        )) from None
    return SearchForm(selfies, confirmed, options.threshold,
                      min(options.top, settings.max_results))
