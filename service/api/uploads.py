"""Receiving an upload: the body is parsed as it streams in, hashed and written to a scratch file, and cut off
with 413 as soon as the video part passes the limit, whatever the client says (or does not say) in
Content-Length, so a chunked upload cannot bypass it. FastAPI's ``UploadFile`` would read the whole body first.

Accepted bodies: ``multipart/form-data`` with one file part (named ``file``) plus small text fields, or the raw
video bytes (any other content type, e.g. ``video/mp4`` or ``application/octet-stream``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.contract.errors import InvalidRequest, PayloadTooLarge

MAX_FIELD_BYTES = 64 << 10  # one text field (queries are checked against the settings afterwards)
MAX_FIELDS = 256
MULTIPART_OVERHEAD = 1 << 20  # boundaries, part headers and text fields on top of the video itself


@dataclass
class Upload:
    """A received video in a scratch file (delete it with :meth:`discard`)."""

    path: Path
    size: int
    sha256: str
    filename: str | None
    fields: dict[str, list[str]] = field(default_factory=dict)

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _Sink:
    """Hashes, counts and writes the video bytes; 413 once they pass the limit."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 - closed in receive_upload
        self.digest = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise too_large(self.max_bytes)
        self.digest.update(data)
        self.file.write(data)


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the video is larger than the limit of {max_bytes} bytes (R2_MAX_UPLOAD_BYTES)")


class _Form:
    """python-multipart callbacks: the file part goes to the sink, text fields are collected (bounded)."""

    def __init__(self, boundary: bytes, sink: _Sink, file_field: str) -> None:
        self.sink, self.file_field = sink, file_field
        self.fields: dict[str, list[str]] = defaultdict(list)
        self.filename: str | None = None
        self.files = 0
        self.done = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": self._header_field, "on_header_value": self._header_val,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_done, "on_end": self._end})

    def _part_begin(self) -> None:
        self._headers, self._name, self._is_file = {}, None, False
        self._value.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_val(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.decode("latin-1").lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._is_file = filename is not None or self._name == self.file_field
        if self._is_file:
            if self._name != self.file_field:
                raise InvalidRequest(f"unexpected file part {self._name!r}; send the video as the part "
                                     f"named {self.file_field!r}", code="invalid_upload")
            self.files += 1
            if self.files > 1:
                raise InvalidRequest("send exactly one video per request", code="invalid_upload")
            self.filename = filename.decode("utf-8", "replace") if filename else None
        elif sum(len(v) for v in self.fields.values()) >= MAX_FIELDS:
            raise InvalidRequest(f"too many form fields (at most {MAX_FIELDS})", code="invalid_upload")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.sink.write(data[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes",
                                 code="invalid_upload")

    def _part_end(self) -> None:
        if not self._is_file and self._name:
            try:
                self.fields[self._name].append(self._value.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidRequest(f"form field {self._name!r} is not UTF-8 text", code="invalid_upload") from None

    def _end(self) -> None:
        self.done = True


async def receive_upload(request: Request, *, max_bytes: int, directory: Path | None,
                         file_field: str = "file") -> Upload:
    """Stream the request body into a scratch file; 413 past ``max_bytes``, 422 for a malformed body."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + MULTIPART_OVERHEAD:
        raise too_large(max_bytes)  # refused before reading a byte
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type == b"multipart/form-data" and not boundary:  # checked before a scratch file exists
        raise InvalidRequest("multipart body without a boundary: set Content-Type: multipart/form-data; "
                             "boundary=...", code="invalid_upload")
    folder = Path(directory or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="r2-upload-", suffix=".part", dir=folder)
    os.close(fd)
    path = Path(name)
    try:
        sink = _Sink(path, max_bytes)
        form = _Form(boundary, sink, file_field) if content_type == b"multipart/form-data" and boundary else None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + MULTIPART_OVERHEAD:
                raise too_large(max_bytes)
            if form is not None:
                form.parser.write(chunk)
            else:
                sink.write(chunk)
        if form is not None:
            form.parser.finalize()
            if not form.done:
                raise InvalidRequest("the multipart body ended early", code="invalid_upload")
            if form.files == 0:
                raise InvalidRequest(f"no video in the request: send it as the multipart file part named "
                                     f"{file_field!r}", code="missing_file")
        if sink.size == 0:
            raise InvalidRequest("the uploaded video is empty (0 bytes)", code="empty_video")
    except FormParserError as err:
        sink.file.close()
        path.unlink(missing_ok=True)
        raise InvalidRequest(f"malformed multipart body: {err}", code="invalid_upload") from None
    except ClientDisconnect:
        sink.file.close()
        path.unlink(missing_ok=True)
        raise InvalidRequest("the client disconnected during the upload", code="upload_incomplete") from None
    except BaseException:
        sink.file.close()
        path.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            sink.file.close()
    return Upload(path, sink.size, sink.digest.hexdigest(), form.filename if form else None,
                  dict(form.fields) if form else {})
