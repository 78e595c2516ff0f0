"""Fetch jobs: download a video given by URL, then store it and queue its encoding as an upload would.

The limits are the upload's: ``R2_MAX_UPLOAD_BYTES`` counted on the bytes received (a Content-Length over it
is refused before reading; a server that sends more than it announced, or announces nothing, is cut off at
the limit), ``R2_FETCH_TIMEOUT_S`` for the whole download and ``R2_FETCH_STALL_S`` without a byte; the
duration limit applies when the encoding decodes it. Every hop (the URL and each redirect) is checked against
the allowlist and connected to at the address checked. A dropped connection is resumed with a ``Range``
request (``If-Range`` on the validator of the first answer) when the server said it accepts ranges; a server
that answers the range with the whole file again starts the hash over. The video's id is the SHA-256 of the
bytes, as for an upload.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import httpx

from service.contract.errors import InvalidRequest, PayloadTooLarge, classify
from service.contract.metrics import URL_FETCHES, MetricsBatch
from service.contract.settings import Settings
from service.contract.urls import UrlPolicy
from service.store.backend import Backend
from service.store.jobs import Delivery, Outcome

from . import outbound

log = logging.getLogger("service.worker")

_CONNECT_S = 10.0  # connecting is bounded separately (and by the stall limit when that is shorter)


def fetch_error(message: str, code: str) -> InvalidRequest:
    return InvalidRequest(message[:400], code=code)


class Download:
    """The bytes of one URL arriving in a file: counted, hashed, cut off at the limit."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.file = open(path, "wb")  # noqa: SIM115 - closed by fetch_url
        self.digest = hashlib.sha256()
        self.size = 0

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(f"the video at the URL is larger than the limit of {self.max_bytes} bytes "
                                  "(R2_MAX_UPLOAD_BYTES)")
        self.digest.update(data)
        self.file.write(data)


class Fetcher:
    """Downloads URLs under the settings' limits and allowlist."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = UrlPolicy(settings.fetch_allowlist)

    def open(self, client: httpx.Client, url: str, headers: dict[str, str], deadline: float) -> httpx.Response:
        """The answer for ``url`` after following its redirects, each hop checked; streaming, not read yet."""
        for hop in range(self.settings.fetch_max_redirects + 1):
            if time.monotonic() > deadline:
                raise self.timeout()
            checked = self.policy.check(url, what="the video URL" if hop == 0 else "a redirect of the video URL")
            target, sent, extensions = outbound.pinned(checked, headers)
            response = client.send(client.build_request("GET", target, headers=sent, extensions=extensions),
                                   stream=True)
            location = response.headers.get("location")
            if not (response.is_redirect and location):
                return response
            response.close()
            url = str(httpx.URL(url).join(location))
        raise fetch_error(f"the video URL redirected more than {self.settings.fetch_max_redirects} times "
                          "(R2_FETCH_MAX_REDIRECTS)", "too_many_redirects")

    def timeout(self) -> InvalidRequest:
        return fetch_error(f"fetching the video took longer than {self.settings.fetch_timeout_s:g} s "
                           "(R2_FETCH_TIMEOUT_S)", "fetch_timeout")

    def fetch(self, url: str, path: Path) -> tuple[int, str]:
        """Download ``url`` into ``path``; returns (size, SHA-256 hex). Raises a 4xx :class:`ServiceError`."""
        s = self.settings
        deadline = time.monotonic() + s.fetch_timeout_s
        download = Download(path, s.max_upload_bytes)
        validator: str | None = None
        ranges = False
        total: int | None = None
        resumes = 0
        try:
            with outbound.client(min(_CONNECT_S, s.fetch_stall_s), s.fetch_stall_s) as client:
                while True:
                    headers = {"Accept-Encoding": "identity"}  # the bytes as stored: the hash is the video's id
                    if download.size:
                        headers["Range"] = f"bytes={download.size}-"
                        if validator:
                            headers["If-Range"] = validator
                    try:
                        response = self.open(client, url, headers, deadline)
                    except httpx.TimeoutException:
                        raise self.stalled() from None
                    except httpx.TransportError as err:
                        raise fetch_error(f"the video URL cannot be reached: {err}", "fetch_failed") from None
                    try:
                        if download.size and response.status_code == 206 and response.headers.get(
                                "content-range", "").startswith(f"bytes {download.size}-"):
                            pass  # the rest of the same file
                        elif response.status_code == 200:
                            download.restart()  # a first answer, or a server sending the whole file again
                            total = _length(response)
                            if total is not None and total > s.max_upload_bytes:
                                raise download_too_large(total, s.max_upload_bytes)
                            ranges = response.headers.get("accept-ranges", "").lower() == "bytes"
                            validator = response.headers.get("etag") or response.headers.get("last-modified")
                        else:
                            raise fetch_error(f"the video URL answered HTTP {response.status_code}", "fetch_failed")
                        for chunk in response.iter_raw():
                            download.write(chunk)
                            if time.monotonic() > deadline:
                                raise self.timeout()
                        if total is not None and download.size < total:
                            raise httpx.RemoteProtocolError("the server closed the connection early")
                        break
                    except httpx.TimeoutException:
                        raise self.stalled() from None
                    except (httpx.RemoteProtocolError, httpx.ReadError) as err:
                        if not (ranges and download.size and resumes < s.fetch_resume_tries):
                            raise fetch_error(f"the download of the video broke off after {download.size} bytes "
                                              f"({err}) and the server does not support resuming it",
                                              "fetch_incomplete") from None
                        resumes += 1
                        log.info("fetch of %s broke off at %d bytes; resuming (%d)", url[:100], download.size,
                                 resumes)
                    finally:
                        response.close()
        finally:
            download.file.close()
        if download.size == 0:
            raise fetch_error("the video at the URL is empty (0 bytes)", "empty_video")
        return download.size, download.digest.hexdigest()

    def stalled(self) -> InvalidRequest:
        return fetch_error(f"the video URL sent nothing for {self.settings.fetch_stall_s:g} s (R2_FETCH_STALL_S)",
                           "fetch_stalled")


def _length(response: httpx.Response) -> int | None:
    raw = response.headers.get("content-length", "")
    return int(raw) if raw.isdigit() else None


def download_too_large(length: int, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the video at the URL is {length} bytes, over the limit of {max_bytes} bytes "
                           "(R2_MAX_UPLOAD_BYTES)")


class FetchRunner:
    """Runs fetch jobs for one worker: download, store and queue the encoding, finish the job."""

    def __init__(self, settings: Settings, backend: Backend, consumer: str, scratch: Path) -> None:
        self.settings, self.backend, self.consumer, self.scratch = settings, backend, consumer, scratch
        self.fetcher = Fetcher(settings)
        self._gateway: Any = None

    def gateway(self) -> Any:
        """The API's upload logic (one place decides how a new video is stored and its encoding queued)."""
        if self._gateway is None:
            from service.api.gateway import Gateway

            self._gateway = Gateway(self.settings, self.backend)
        return self._gateway

    def run(self, delivery: Delivery) -> None:
        from service.api.uploads import Upload

        job = delivery.job
        assert job is not None
        metrics = MetricsBatch()
        self.scratch.mkdir(parents=True, exist_ok=True)
        path = self.scratch / f"fetch-{job.job_id}.part"
        try:
            if not job.url:
                raise fetch_error("the fetch job names no URL", "invalid_request")
            size, sha256 = self.fetcher.fetch(job.url, path)
            gw = self.gateway()
            record, _ = gw.store_upload(Upload(path, size, sha256, None), job.model, encode=True,
                                        preprocess=job.preprocess)
            gw.watch_video(record, job.callback_url)
            outcome = Outcome(delivery, result={"video_id": sha256, "size_bytes": size})
            metrics.inc(URL_FETCHES, outcome="ready")
        except Exception as err:
            status, code, message = classify(err)
            log.warning("fetch job %s failed: %s (%s)", job.job_id, message, code)
            outcome = Outcome(delivery, error_status=status, error_code=code, error_message=message)
            metrics.inc(URL_FETCHES, outcome="failed")
        finally:
            path.unlink(missing_ok=True)
        self.backend.jobs.finish(self.consumer, [outcome], metrics.values)
