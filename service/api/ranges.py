"""Serving a stored payload with HTTP Range support (RFC 9110 section 14), streamed piece by piece.

One range per request (what ``<video>`` elements send); a request with several ranges, or a Range header that
does not parse, gets the whole payload with 200, as the RFC allows.
"""

from __future__ import annotations

import re

from fastapi.responses import StreamingResponse
from starlette.requests import Request

from service.contract.errors import ServiceError
from service.store.media import Blob

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) asked by a ``Range`` header; None to send everything; 416 when nothing of it exists."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # a suffix: the last N bytes
        length = int(match[2])
        if length == 0:
            raise unsatisfiable(size)
        return max(0, size - length), size
    start = int(match[1])
    end = min(size, int(match[2]) + 1) if match[2] else size
    if match[2] and int(match[2]) < start:
        return None  # invalid: ignored
    if start >= size:
        raise unsatisfiable(size)
    return start, end


def unsatisfiable(size: int) -> ServiceError:
    return ServiceError(f"the range starts past the end of the {size} bytes", code="range_not_satisfiable",
                        status=416, headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})


def serve(request: Request, blob: Blob, media_type: str, *, cache: str = "private, max-age=3600") -> StreamingResponse:
    """200 with the whole payload, or 206 with the range asked for (``Content-Range``)."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": cache}
    found = byte_range(request.headers.get("range"), blob.size)
    start, end = found if found is not None else (0, blob.size)
    headers["Content-Length"] = str(end - start)
    status = 200
    if found is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
    return StreamingResponse(blob.read(start, end), status_code=status, media_type=media_type, headers=headers)


def sniff_video_type(head: bytes) -> str:
    """The media type of uploaded bytes from their first bytes (uploads do not say reliably)."""
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head[:4] == b"OggS":
        return "video/ogg"
    return "application/octet-stream"
