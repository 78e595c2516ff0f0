"""R2_FETCH_ALLOWLIST: which hosts and addresses the service may call (webhooks, ingest by URL)."""

from __future__ import annotations

import pytest

from service.contract.errors import InvalidRequest
from service.contract.urls import UrlPolicy


def refused(policy: UrlPolicy, url: str) -> str:
    with pytest.raises(InvalidRequest) as caught:
        policy.check(url)
    assert caught.value.code == "url_not_allowed" and caught.value.status == 422
    return caught.value.message


def test_an_empty_allowlist_allows_nothing() -> None:
    assert "R2_FETCH_ALLOWLIST" in refused(UrlPolicy([]), "https://example.com/a.mp4")


def test_a_listed_loopback_address_passes_and_nothing_else_private_does() -> None:
    policy = UrlPolicy(["127.0.0.1"])
    assert policy.check("http://127.0.0.1:8080/v.mp4").addresses == ("127.0.0.1",)
    for url in ("http://10.0.0.1/v.mp4", "http://[::1]/v.mp4", "http://127.0.0.2/v.mp4", "http://localhost/v.mp4",
                "http://169.254.169.254/latest/meta-data"):
        refused(policy, url)
    assert policy.check("http://[::ffff:127.0.0.1]:9/x").addresses == ("127.0.0.1",)  # mapped = the same


def test_a_listed_name_resolving_into_a_private_range_is_refused_unless_the_range_is_listed() -> None:
    assert "non-public address" in refused(UrlPolicy(["localhost"]), "http://localhost:9/v.mp4")
    checked = UrlPolicy(["localhost", "127.0.0.0/8", "::1"]).check("http://localhost:9/v.mp4")
    assert checked.host == "localhost" and checked.port == 9 and "127.0.0.1" in checked.addresses


def test_wildcards_match_public_hosts_only() -> None:
    policy = UrlPolicy(["*.example.com"])
    assert policy.check("https://cdn.example.com/v.mp4", resolve=False).port == 443
    refused(policy, "https://example.com/v.mp4")
    refused(policy, "https://cdn.example.com.evil.org/v.mp4")
    anywhere = UrlPolicy(["*"])
    assert anywhere.check("http://8.8.8.8/v.mp4").addresses == ("8.8.8.8",)
    for url in ("http://127.0.0.1/", "http://192.168.1.1/", "http://[fe80::1]/", "http://0.0.0.0/"):
        refused(anywhere, url)


def test_only_plain_http_urls_without_credentials() -> None:
    policy = UrlPolicy(["*"])
    for url in ("ftp://8.8.8.8/v.mp4", "file:///etc/passwd", "http://user:pw@8.8.8.8/", "http:///nohost",
                "http://8.8.8.8:99999/", "x" * 3000):
        refused(policy, url)
