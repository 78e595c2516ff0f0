"""Outbound HTTP of the worker (webhooks, videos fetched by URL): always to an address the allowlist checked.

The host name is looked up once, by :class:`UrlPolicy`, and the request goes to that address with the name in
the ``Host`` header and as the TLS server name (so certificates are still checked against the name): a DNS
answer that changes between the check and the connection cannot point the request somewhere else.
"""

from __future__ import annotations

from typing import Any

import httpx

from service.contract.urls import CheckedUrl

USER_AGENT = "r2tuning-service"


def pinned(checked: CheckedUrl, headers: dict[str, str] | None = None) -> tuple[httpx.URL, dict[str, str],
                                                                                dict[str, Any]]:
    """URL, headers and request extensions that reach ``checked`` at its first checked address."""
    url = httpx.URL(checked.url)
    out = {"User-Agent": USER_AGENT, **(headers or {})}
    extensions: dict[str, Any] = {}
    address = checked.addresses[0]
    if address != checked.host.strip("[]"):
        out["Host"] = url.netloc.decode("ascii")
        if checked.scheme == "https":
            extensions["sni_hostname"] = checked.host
        url = url.copy_with(host=address)
    return url, out, extensions


def client(connect_s: float, stall_s: float) -> httpx.Client:
    """A client that follows no redirects itself (each hop is checked by the caller) and ignores proxy
    variables (a proxy would do its own lookup)."""
    return httpx.Client(timeout=httpx.Timeout(stall_s, connect=connect_s), follow_redirects=False,
                        trust_env=False)
