"""Flickr URLs, ids and licences: derive provenance a dataset implies but does not spell out.

Every rule here reads a URL the dataset gives; nothing is looked up and nothing is guessed. An
image URL names the photo but never its uploader, so a page URL is only built when the dataset
gives the uploader too.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

# Size suffixes of Flickr's URL documentation; "_d" after one asks for a download and is common
# in copied links.
_SIZES = r"(?:s|q|t|m|n|w|z|c|b|h|k|3k|4k|f|5k|6k|o)"
# {id}_{secret}[_{size}][_d].{ext}, after 0-2 numeric folders: none on photos{N}.flickr.com
# (2004-05), the server on farm/live/static hosts, farm and server on c{N}.staticflickr.com.
_IMAGE_PATH = re.compile(
    r"/(?:\d+/){0,2}(?P<id>\d{1,19})_[0-9a-f]+(?:_" + _SIZES + r")?(?:_d)?\.(?:jpe?g|png|gif)",
    re.IGNORECASE | re.ASCII)
_IMAGE_HOST = re.compile(
    r"(?:farm\d+\.static\.?flickr\.com|live\.staticflickr\.com|c\d+\.staticflickr\.com"
    r"|static\.?flickr\.com|photos\d+\.flickr\.com)", re.ASCII)
_PAGE_HOSTS = frozenset({"www.flickr.com", "flickr.com", "m.flickr.com", "secure.flickr.com"})
_PAGE_PATH = re.compile(r"/photos/(?P<user>[^/]+)/(?P<id>\d{1,19})(?:/.*)?", re.DOTALL | re.ASCII)
_USER = re.compile(r"[A-Za-z0-9@._-]+")  # NSIDs (12345678@N00) and path aliases
_NOT_USERS = frozenset({"tags"})  # /photos/tags/{tag}: a numeric tag is not a photo id
_SHORT_HOSTS = frozenset({"flic.kr", "www.flic.kr"})
_SHORT_PATH = re.compile(r"/p/(?P<code>[1-9a-km-zA-HJ-NP-Z]{1,20})/?", re.ASCII)
_B58 = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
_B58_VALUE = {char: value for value, char in enumerate(_B58)}

# flickr.photos.licenses.getInfo. Ids 7-10 have no verified URL, and Flickr has added ids (4.0
# licences) whose meaning is not verified: those resolve to unknown.
FLICKR_LICENCES: dict[int, tuple[str, str | None]] = {
    0: ("All Rights Reserved", None),
    1: ("Attribution-NonCommercial-ShareAlike License",
        "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    2: ("Attribution-NonCommercial License", "https://creativecommons.org/licenses/by-nc/2.0/"),
    3: ("Attribution-NonCommercial-NoDerivs License",
        "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    4: ("Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
    5: ("Attribution-ShareAlike License", "https://creativecommons.org/licenses/by-sa/2.0/"),
    6: ("Attribution-NoDerivs License", "https://creativecommons.org/licenses/by-nd/2.0/"),
    7: ("No known copyright restrictions", None),
    8: ("United States Government Work", None),
    9: ("Public Domain Dedication (CC0)", None),
    10: ("Public Domain Mark", None),
}


def _split(url: object) -> tuple[str, str] | None:
    """(lower-case host, path) of an http(s) URL; None for anything else."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced "[" in the host
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return host, parts.path


def _decimal(digits: str) -> str | None:
    value = int(digits)
    return str(value) if value > 0 else None


def _image_photo_id(host: str, path: str) -> str | None:
    if not _IMAGE_HOST.fullmatch(host):
        return None
    match = _IMAGE_PATH.fullmatch(path)
    return _decimal(match["id"]) if match else None


def _page_match(host: str, path: str) -> re.Match[str] | None:
    if host not in _PAGE_HOSTS:
        return None
    match = _PAGE_PATH.fullmatch(path)
    if match is None:
        return None
    user = unquote(match["user"])  # "12345678%40N00" is the same NSID
    if not _USER.fullmatch(user) or user.lower() in _NOT_USERS:
        return None
    return match


def _short_photo_id(host: str, path: str) -> str | None:
    if host not in _SHORT_HOSTS:
        return None
    match = _SHORT_PATH.fullmatch(path)
    if match is None:
        return None
    value = 0
    for char in match["code"]:
        value = value * 58 + _B58_VALUE[char]
    return str(value) if value > 0 else None


def photo_id_from_url(url: str | None) -> str | None:
    """The Flickr photo id (decimal text) in an image URL (any farm/live/c{N}/static host, any
    size suffix), a photo page URL or a flic.kr short link; None for anything else."""
    split = _split(url)
    if split is None:
        return None
    host, path = split
    photo_id = _image_photo_id(host, path) or _short_photo_id(host, path)
    if photo_id is None and (match := _page_match(host, path)):
        photo_id = _decimal(match["id"])
    return photo_id


def uploader_from_page_url(url: str | None) -> str | None:
    """The user part (NSID such as ``12345678@N00``, or the user's alias) of a Flickr photo page
    URL; None for any other URL, image URLs included (they never name the uploader)."""
    split = _split(url)
    match = _page_match(*split) if split else None
    return unquote(match["user"]) if match else None


def flickr_page_url(uploader_id: str, photo_id: str) -> str:
    """``https://www.flickr.com/photos/{uploader_id}/{photo_id}/``."""
    if not uploader_id or not uploader_id.strip():
        raise ValueError("flickr_page_url: the uploader id is empty; a Flickr page URL needs the "
                         "uploader's NSID or alias.")
    if not (photo_id.isascii() and photo_id.isdecimal()):
        raise ValueError(f"flickr_page_url: photo id {photo_id!r} is not a Flickr photo id "
                         "(decimal digits).")
    return f"https://www.flickr.com/photos/{quote(uploader_id.strip(), safe='@')}/{photo_id}/"


def licence_from_flickr_id(value: str | int | None) -> tuple[str | None, str | None]:
    """(licence name, licence URL) of a Flickr licence id; (None, None) when the id is unknown
    or not an id. The URL is None where it is not verified (ids 0, 7-10)."""
    if isinstance(value, bool):
        return None, None
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdecimal()):
            return None, None
        value = int(value)
    if not isinstance(value, int):
        return None, None
    return FLICKR_LICENCES.get(value, (None, None))


def complete_flickr_fields(fields: dict[str, str | None]) -> dict[str, str | None]:
    """A copy of ``fields`` (provenance, keys of GIVEN_FIELDS) with the missing Flickr fields
    that its URLs determine: ``photo_id`` from a Flickr image or page URL, ``uploader_id`` from
    a Flickr page URL, and ``page_url`` from the uploader and the photo id. Given values are
    never replaced, and nothing is derived when the URLs are not Flickr's or disagree."""
    result = dict(fields)
    image_url, page_url = fields.get("image_url"), fields.get("page_url")
    ids = {i for i in (photo_id_from_url(image_url), photo_id_from_url(page_url)) if i}
    url_id = ids.pop() if len(ids) == 1 else None  # two different ids: trust neither
    if not result.get("photo_id") and url_id:
        result["photo_id"] = url_id
    if not result.get("uploader_id") and (uploader := uploader_from_page_url(page_url)):
        result["uploader_id"] = uploader
    uploader, photo_id = result.get("uploader_id"), result.get("photo_id")
    # Only when a Flickr URL shows this very photo id: a dataset's own photo_id (a row number,
    # another site's id) must not become a Flickr link to someone else's photo.
    if (not page_url and uploader and _USER.fullmatch(uploader) and photo_id
            and photo_id == url_id):
        result["page_url"] = flickr_page_url(uploader, photo_id)
    return result
