"""What a photo's licence allows, decided from the licence's name and URL as the dataset
states them (Flickr's and YFCC100M's names, Creative Commons URLs and short names)."""

from __future__ import annotations

import re

NOT_STATED = "(not stated)"

NON_COMMERCIAL = "non-commercial"
COMMERCIAL_REUSE = "reuse allowed, commercial included"
PUBLIC_DOMAIN = "public domain or no known restrictions"
ALL_RIGHTS_RESERVED = "all rights reserved"
UNRECOGNISED = "unrecognised"
ABSENT = "not stated"
CATEGORIES = (NON_COMMERCIAL, COMMERCIAL_REUSE, PUBLIC_DOMAIN, ALL_RIGHTS_RESERVED,
              UNRECOGNISED, ABSENT)

# "Attribution-NonCommercial-ShareAlike License", "CC BY-NC 4.0", ".../licenses/by-nc-nd/2.0/"
_NC = re.compile(r"non-?commercial|\bnc\b", re.IGNORECASE)
_PUBLIC = re.compile(r"public domain|no known copyright|\bcc0\b|\bpdm\b|/publicdomain/"
                     r"|united states government work", re.IGNORECASE)
_RESERVED = re.compile(r"all rights reserved", re.IGNORECASE)
# Creative Commons licences without NC: BY, BY-SA, BY-ND (Flickr: "Attribution License",
# "Attribution-ShareAlike License", "Attribution-NoDerivs License").
_CC = re.compile(r"creativecommons\.org/licenses/by\b|^\s*(cc[ -])?by(-sa|-nd)?\b"
                 r"|creative commons attribution"
                 r"|^\s*attribution(-sharealike|-noderivs)?( license)?\s*$", re.IGNORECASE)


def licence_label(name: str | None, url: str | None) -> str:
    """How the report names a photo's licence: its name, else its URL, else "(not stated)"."""
    return name or url or NOT_STATED


def licence_category(name: str | None, url: str | None) -> str:
    """One of CATEGORIES. Non-commercial is checked first: "CC BY-NC" is a CC licence that
    forbids commercial use."""
    text = " ".join(t for t in (name, url) if t)
    if not text:
        return ABSENT
    if _NC.search(text):
        return NON_COMMERCIAL
    if _PUBLIC.search(text):
        return PUBLIC_DOMAIN
    if _RESERVED.search(text):
        return ALL_RIGHTS_RESERVED
    if any(_CC.search(t) for t in (name, url) if t):
        return COMMERCIAL_REUSE
    return UNRECOGNISED
