"""Flickr URL forms -> photo id / uploader, licence ids, and completing provenance fields."""

from __future__ import annotations

import pytest

from faceaudit.indexer.readers.base import GIVEN_FIELDS
from faceaudit.indexer.readers.flickr import (
    FLICKR_LICENCES,
    complete_flickr_fields,
    flickr_page_url,
    licence_from_flickr_id,
    photo_id_from_url,
    uploader_from_page_url,
)

B58 = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"


def flic_kr(photo_id: int) -> str:
    """Flickr's short link, encoded independently of the module under test."""
    code = ""
    while True:
        photo_id, rest = divmod(photo_id, 58)
        code = B58[rest] + code
        if photo_id == 0:
            return "https://flic.kr/p/" + code


@pytest.mark.parametrize(("url", "photo_id"), [
    # Flickr's own documentation examples (reference 6.1)
    ("https://farm1.staticflickr.com/2/1418878_1e92283336_m.jpg", "1418878"),
    ("https://live.staticflickr.com/7372/12502775644_acfd415fa7_w.jpg", "12502775644"),
    ("https://c2.staticflickr.com/2/1534/24707294836_9da6ea7c2e_o.jpg", "24707294836"),
    # YFCC100M downloadurl: farm host, no size suffix (500 px)
    ("http://farm1.staticflickr.com/59/123_7b9dd1d7e5.jpg", "123"),
    # before November 2011
    ("http://farm3.static.flickr.com/2154/2088245219_2a7c5ef8cf.jpg", "2088245219"),
    ("http://farm5.static.flickr.com/4086/5138692210_2f2974cca8_o_d.jpg", "5138692210"),
    # pre-farm hosts, and the bare host of Flickr's current embed code
    ("http://static.flickr.com/76/186292024_d2a830f4c7_m.jpg", "186292024"),
    ("http://photos1.flickr.com/3145428_9c267d3cc8_m.jpg", "3145428"),
    ("https://staticflickr.com/65535/52443622430_c442b75502.jpg", "52443622430"),
    # large sizes, originals in other formats, download suffix, query and fragment
    ("https://live.staticflickr.com/65535/49999422362_3ed48af520_3k.jpg", "49999422362"),
    ("https://live.staticflickr.com/65535/49999422362_0123abcdef_o.png", "49999422362"),
    ("https://live.staticflickr.com/65535/49999422362_0123abcdef_o.gif", "49999422362"),
    ("https://live.staticflickr.com/65535/49999422362_0123abcdef_o.jpeg", "49999422362"),
    ("https://live.staticflickr.com/7569/15784162651_852ef747a0_o_d.jpg", "15784162651"),
    ("https://farm9.staticflickr.com/8292/29109233745_0e8cd6f695_s.jpg?zz=1", "29109233745"),
    ("HTTPS://FARM9.STATICFLICKR.COM/8292/29109233745_0e8cd6f695_6k.JPG#top", "29109233745"),
    ("  https://c1.staticflickr.com/3/2936/14387367072_85312c31b3_b.jpg\n", "14387367072"),
])
def test_image_urls(url: str, photo_id: str) -> None:
    assert photo_id_from_url(url) == photo_id
    assert uploader_from_page_url(url) is None  # an image URL never names the uploader


@pytest.mark.parametrize("size", ["", "_s", "_q", "_t", "_m", "_n", "_w", "_z", "_c", "_b",
                                  "_h", "_k", "_3k", "_4k", "_f", "_5k", "_6k", "_o"])
def test_every_size_suffix(size: str) -> None:
    assert photo_id_from_url(f"https://live.staticflickr.com/7372/12502775644_acfd415fa7"
                             f"{size}.jpg") == "12502775644"


@pytest.mark.parametrize(("url", "photo_id", "user"), [
    ("https://www.flickr.com/photos/12345678@N00/123/", "123", "12345678@N00"),
    ("http://www.flickr.com/photos/12345678@N00/123/", "123", "12345678@N00"),
    ("https://flickr.com/photos/example-user/52443622430", "52443622430", "example-user"),
    ("https://m.flickr.com/photos/example_user/52443622430/in/photostream/", "52443622430",
     "example_user"),
    ("https://www.flickr.com/photos/12345678%40N00/123/?ref=x#c", "123", "12345678@N00"),
    ("https://www.flickr.com/photos/12345678@N00/123/sizes/l/", "123", "12345678@N00"),
])
def test_page_urls(url: str, photo_id: str, user: str) -> None:
    assert photo_id_from_url(url) == photo_id
    assert uploader_from_page_url(url) == user


@pytest.mark.parametrize("photo_id", [1, 57, 58, 1418878, 12502775644, 52443622430,
                                      9_223_372_036_854_775_807])
def test_flic_kr_round_trip(photo_id: int) -> None:
    url = flic_kr(photo_id)
    assert photo_id_from_url(url) == str(photo_id)
    assert photo_id_from_url(url.replace("https://", "http://") + "/") == str(photo_id)
    assert uploader_from_page_url(url) is None


def test_flic_kr_known_code() -> None:
    # digits 8 g M q = 7, 15, 45, 24: 7*58**3 + 15*58**2 + 45*58 + 24 = 1418878
    assert flic_kr(1418878) == "https://flic.kr/p/8gMq"
    assert photo_id_from_url("https://flic.kr/p/8gMq") == "1418878"


@pytest.mark.parametrize("url", [
    None, "", "   ", "not a url", "123", "http://[::1", 12345,
    "https://example.com/2/1418878_1e92283336_m.jpg",  # a Flickr-shaped path elsewhere
    "https://staticflickr.com.evil.example/2/1418878_1e92283336_m.jpg",
    "https://evilstaticflickr.com/2/1418878_1e92283336_m.jpg",
    "ftp://farm1.staticflickr.com/2/1418878_1e92283336_m.jpg",
    "https://farm1.staticflickr.com/2/1418878_1e92283336_x.jpg",  # not a size
    "https://farm1.staticflickr.com/2/1418878_1e92283336_m.webp",
    "https://farm1.staticflickr.com/2/1418878_1e92283336_m.jpg/200x150",
    "https://farm1.staticflickr.com/1/buddyicons/12345678@N00.jpg",
    "https://www.flickr.com/photos/12345678@N00/",  # a photostream, not a photo
    "https://www.flickr.com/photos/12345678@N00/albums/72157698702806445",
    "https://www.flickr.com/photos/tags/2010",
    "https://www.flickr.com/groups/12345678@N00/123/",
    "https://www.example.com/photos/12345678@N00/123/",
    "https://flic.kr/s/aHsk",  # an album
    "https://flic.kr/p/0OIl",  # not base58
    "https://flic.kr/p/1",  # decodes to 0
    "https://live.staticflickr.com/7372/" + "9" * 5000 + "_acfd415fa7.jpg",
    "https://live.staticflickr.com/7372/\u0661\u0662\u0663_acfd415fa7.jpg",  # Arabic digits
])
def test_other_urls_are_none(url: object) -> None:
    assert photo_id_from_url(url) is None  # type: ignore[arg-type]
    assert uploader_from_page_url(url) is None  # type: ignore[arg-type]


def test_flickr_page_url() -> None:
    assert (flickr_page_url("12345678@N00", "123")
            == "https://www.flickr.com/photos/12345678@N00/123/")
    assert flickr_page_url("example-user", "52443622430") == (
        "https://www.flickr.com/photos/example-user/52443622430/")
    with pytest.raises(ValueError, match="uploader"):
        flickr_page_url(" ", "123")
    with pytest.raises(ValueError, match="not a Flickr photo id"):
        flickr_page_url("12345678@N00", "abc")


def test_licences() -> None:
    assert set(FLICKR_LICENCES) == set(range(11))
    assert licence_from_flickr_id(4) == ("Attribution License",
                                         "https://creativecommons.org/licenses/by/2.0/")
    assert licence_from_flickr_id(" 1 ") == (
        "Attribution-NonCommercial-ShareAlike License",
        "https://creativecommons.org/licenses/by-nc-sa/2.0/")
    assert licence_from_flickr_id("0") == ("All Rights Reserved", None)
    assert licence_from_flickr_id(9) == ("Public Domain Dedication (CC0)", None)
    for licence_id in range(1, 7):
        name, url = FLICKR_LICENCES[licence_id]
        assert name.endswith("License") and url and url.endswith("/2.0/")
    for unknown in (11, 99, -1, "11", "by", "4.0", "", None, True, 4.0):
        assert licence_from_flickr_id(unknown) == (None, None)  # type: ignore[arg-type]


IMAGE = "https://farm1.staticflickr.com/2/1418878_1e92283336_m.jpg"


def test_complete_derives_from_image_url() -> None:
    fields = {"image_url": IMAGE, "uploader_id": "12345678@N00", "page_url": None}
    completed = complete_flickr_fields(fields)
    assert completed["photo_id"] == "1418878"
    assert completed["page_url"] == "https://www.flickr.com/photos/12345678@N00/1418878/"
    assert fields == {"image_url": IMAGE, "uploader_id": "12345678@N00", "page_url": None}
    assert set(completed) <= set(GIVEN_FIELDS)


def test_complete_image_url_alone_gives_no_page() -> None:
    completed = complete_flickr_fields({"image_url": IMAGE})
    assert completed == {"image_url": IMAGE, "photo_id": "1418878"}


def test_complete_derives_from_page_url() -> None:
    page = "https://www.flickr.com/photos/12345678@N00/123/"
    completed = complete_flickr_fields({"page_url": page, "photo_id": None, "uploader_id": None})
    assert completed == {"page_url": page, "photo_id": "123", "uploader_id": "12345678@N00"}


def test_complete_never_overwrites() -> None:
    given = {"photo_id": "999", "uploader_id": "87654321@N00",
             "page_url": "https://example.org/photo/999", "image_url": IMAGE, "title": "t"}
    assert complete_flickr_fields(given) == given


def test_complete_never_links_a_different_photo() -> None:
    # The dataset's own photo_id is not the id of the Flickr photo in its image URL.
    given = {"photo_id": "999", "uploader_id": "12345678@N00", "image_url": IMAGE}
    assert complete_flickr_fields(given) == given
    # Image and page URLs that disagree: no id is derived from either.
    page = "https://www.flickr.com/photos/12345678@N00/123/"
    completed = complete_flickr_fields({"image_url": IMAGE, "page_url": page})
    assert completed.get("photo_id") is None
    assert completed["uploader_id"] == "12345678@N00"


@pytest.mark.parametrize("image_url", [
    None, "https://example.com/photos/1418878.jpg",
    "https://images.example.org/2/1418878_1e92283336_m.jpg",
])
def test_complete_never_invents_flickr_for_other_datasets(image_url: str | None) -> None:
    given = {"photo_id": "1418878", "uploader_id": "12345678@N00", "image_url": image_url,
             "page_url": None}
    assert complete_flickr_fields(given) == given


def test_complete_needs_a_plausible_uploader() -> None:
    given = {"uploader_id": "Example User / Team", "image_url": IMAGE}
    completed = complete_flickr_fields(given)
    assert completed["photo_id"] == "1418878"
    assert "page_url" not in completed
