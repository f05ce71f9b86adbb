"""Read a multipart/form-data upload into memory, so a selfie never touches the disk.

How the guarantee is kept:

- The body is read from the ASGI stream (``request.stream()``) into memory. Starlette's
  ``request.form()`` / ``UploadFile`` are not used: their parser spools any file part above
  1 MB to a temporary file on disk.
- It is parsed with python_multipart's low-level ``MultipartParser``, whose callbacks only hand
  back slices of the bytes given to them. Its ``FormParser``/``File`` classes, which can write
  files, are not used.
- The size is capped twice: a declared Content-Length above the cap is refused before a byte is
  read, and reading stops as soon as the running total passes the cap (a chunked upload
  declares no length).
- Nothing here logs part data or file names. The parser's own warnings (which can quote a byte
  of a malformed part header) go to a logger that is switched off, and errors carry fixed
  messages, never bytes of the body.

Decoding (Pillow on a ``BytesIO``) and inference (onnxruntime) work in memory too. What the
operating system does with the process's memory (swap) is outside this guarantee: run the
service without swap, or with encrypted swap, where that matters.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from faceaudit.errors import FaceAuditError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Up to 5 selfies, the match ids the person confirmed (at most a search's photos, 200 by
# default) and a couple of small fields; no form of ours sends more.
MAX_PARTS = 256
MAX_HEADER_BYTES = 4096
# A refused body is still read, up to this much, so that the client can read the refusal
# (see discard_rest).
DISCARD_MAX_BYTES = 64 * 2**20

# Made directly, not by logging.getLogger: a logger in logging's registry is switched back on by
# any logging.config.dictConfig(disable_existing_loggers=False), which uvicorn runs at start-up.
_parser_log = logging.Logger(__name__ + ".parser")
_parser_log.disabled = True


class UploadRejected(FaceAuditError):
    code = "bad_upload"


class UploadTooLarge(UploadRejected):
    code = "upload_too_large"


class NotMultipart(UploadRejected):
    code = "not_multipart"


class MalformedUpload(UploadRejected):
    code = "malformed_upload"


class MissingField(UploadRejected):
    code = "missing_field"


class EmptyUpload(UploadRejected):
    code = "empty_file"


@dataclass(frozen=True)
class Part:
    """One field of the form. ``filename`` is None for a text field."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    def text(self, max_chars: int = 64) -> str:
        """The value of a short text field; MalformedUpload when it is not one."""
        try:
            value = self.data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise MalformedUpload(f"The form field {self.name!r} is not UTF-8 text.") from None
        if len(value) > max_chars:
            raise MalformedUpload(f"The form field {self.name!r} is too long.")
        return value


def human_size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


def too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"The upload is larger than the limit of {human_size(limit)}: use a smaller photo "
        "(a phone's front camera photo is well below it)."
    )


class Form(dict[str, Part]):
    """A parsed form: the part of each field name, and ``every`` part of a field that may be
    repeated (``read_multipart``'s ``repeatable``)."""

    def __init__(self) -> None:
        super().__init__()
        self.repeated: dict[str, list[Part]] = {}

    def add(self, part: Part, repeatable: Collection[str]) -> None:
        if part.name in self and part.name not in repeatable:
            raise MalformedUpload(f"The form field {part.name!r} was sent more than once.")
        self.setdefault(part.name, part)
        self.repeated.setdefault(part.name, []).append(part)

    def every(self, name: str) -> list[Part]:
        """Every part named ``name``, in the order sent (empty when none)."""
        return list(self.repeated.get(name, []))


class _Collector:
    """MultipartParser callbacks that gather each part's headers and bytes."""

    def __init__(self, repeatable: Collection[str] = ()) -> None:
        self.parts = Form()
        self.repeatable = repeatable
        self.count = 0
        self.finished = False
        self._headers: dict[str, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._data = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > MAX_PARTS:
            raise MalformedUpload(f"The form has more than {MAX_PARTS} fields.")
        self._headers, self._data = {}, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = bytes(self._value)
        self._field, self._value = bytearray(), bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def on_part_end(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition"))
        name = params.get(b"name")
        if disposition != b"form-data" or name is None:
            raise MalformedUpload("A part of the form has no form-data field name.")
        field = name.decode("utf-8", errors="replace")
        filename = params.get(b"filename")
        content_type = self._headers.get("content-type")
        self.parts.add(Part(
            name=field,
            filename=None if filename is None else filename.decode("utf-8", errors="replace"),
            content_type=None if content_type is None else content_type.decode("latin-1"),
            data=bytes(self._data),
        ), self.repeatable)
        self._data = bytearray()

    def on_end(self) -> None:
        self.finished = True


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type; NotMultipart for anything else."""
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise NotMultipart(
            "Send the selfie as multipart/form-data with a file field named 'selfie' (what an "
            "HTML form, or fetch with a FormData body, sends)."
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedUpload("The multipart/form-data Content-Type has no boundary.")
    return boundary


async def read_multipart(
    chunks: AsyncIterable[bytes],
    *,
    content_type: str | None,
    content_length: str | None,
    max_bytes: int,
    repeatable: Collection[str] = (),
) -> Form:
    """Read and parse a multipart/form-data body in memory, by field name.

    ``chunks`` is the raw body (``request.stream()``); ``content_type``/``content_length`` are
    the request's headers. More than ``max_bytes`` of body raises UploadTooLarge: at once when
    Content-Length declares it, else as soon as that many bytes have arrived. A field sent
    more than once is refused (MalformedUpload) unless ``repeatable`` names it.
    """
    boundary = multipart_boundary(content_type)
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise MalformedUpload("The Content-Length header is not a number.") from None
        if declared > max_bytes:
            raise too_large(max_bytes)
    collector = _Collector(repeatable)
    parser = MultipartParser(boundary, collector.callbacks(), max_header_size=MAX_HEADER_BYTES)
    parser.logger = _parser_log
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise too_large(max_bytes)
        if chunk:
            try:
                parser.write(chunk)
            except MultipartParseError:
                raise MalformedUpload(
                    "The upload is not well-formed multipart/form-data."
                ) from None
    if not collector.finished:
        raise MalformedUpload(
            "The upload ended before the end of the form: it was cut off, or its body is not "
            "the multipart/form-data that its Content-Type says."
        )
    return collector.parts


async def discard_rest(chunks: AsyncIterable[bytes], *, content_length: str | None,
                       max_bytes: int = DISCARD_MAX_BYTES) -> bool:
    """Read and drop what is left of a refused body, at most ``max_bytes``; whether it all was.

    A server that answers while the client is still sending, then closes the connection (as
    uvicorn does for a client that sent ``Connection: close``, like Python's urllib), makes the
    kernel reset it: the client sees "connection reset" instead of the answer. Read to the end
    first and the client gets the answer. Past ``max_bytes`` (declared, or read), it stops: a
    reset is then the price of not reading an unbounded body.
    """
    try:
        if content_length is not None and int(content_length) > max_bytes:
            return False
    except ValueError:
        return False
    read = 0
    async for chunk in chunks:
        read += len(chunk)
        if read > max_bytes:
            return False
    return True


def file_field(form: dict[str, Part], name: str, max_bytes: int) -> bytes:
    """The bytes of the file field ``name``: MissingField, EmptyUpload, UploadTooLarge."""
    part = form.get(name)
    if part is None:
        raise MissingField(f"No photo was sent: the form needs a file field named {name!r}.")
    return file_bytes(part, max_bytes)


def file_bytes(part: Part, max_bytes: int) -> bytes:
    """The bytes of a file part: EmptyUpload, UploadTooLarge."""
    if not part.data:
        raise EmptyUpload("The photo sent is empty (0 bytes): choose the photo again.")
    if len(part.data) > max_bytes:
        raise too_large(max_bytes)
    return part.data
