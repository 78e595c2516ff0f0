"""Which URLs the service may call: webhook receivers and videos ingested by URL (``R2_FETCH_ALLOWLIST``).

The API checks a URL when it is submitted (422 ``url_not_allowed``), and the worker checks it again right
before each connection and each redirect hop, because a host's DNS answer can change in between. Every address
a name resolves to must pass: a public address of a listed host, or an address inside a listed IP network.
Private, loopback, link-local and other non-public addresses pass only when an entry names them, so a listed
host whose DNS points into the internal network is still refused. The caller connects to the address checked
here (:attr:`CheckedUrl.addresses`), never to a fresh lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_CHARS = 2048


def url_error(message: str) -> InvalidRequest:
    return InvalidRequest(message[:300], code="url_not_allowed")


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the allowlist, with the addresses it may be reached at."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def _address(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


class UrlPolicy:
    """The allowlist, parsed once: host names, ``*.domain`` wildcards, ``*``, and IP networks."""

    def __init__(self, allowlist: list[str]) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.any_public = False
        self.networks: list[IPNetwork] = []
        for raw in allowlist:
            entry = raw.strip().lower().rstrip(".")
            if entry == "*":
                self.any_public = True
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])
            else:
                try:
                    self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                except ValueError:
                    self.names.add(entry)

    @property
    def enabled(self) -> bool:
        return bool(self.names or self.suffixes or self.any_public or self.networks)

    def _listed_name(self, host: str) -> bool:
        return self.any_public or host in self.names or any(host.endswith(s) for s in self.suffixes)

    def _listed_address(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)

    def check(self, url: str, *, what: str = "the URL", resolve: bool = True) -> CheckedUrl:
        """The URL with the addresses it may be reached at; :class:`InvalidRequest` (422) saying why not."""
        if not self.enabled:
            raise url_error(f"{what} cannot be called: this service allows no outbound hosts "
                            "(set R2_FETCH_ALLOWLIST)")
        if len(url) > MAX_URL_CHARS:
            raise url_error(f"{what} is longer than {MAX_URL_CHARS} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as err:
            raise url_error(f"{what} {url[:100]!r} is not a valid URL: {err}") from None
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        if scheme not in ("http", "https") or not host:
            raise url_error(f"{what} {url[:100]!r} must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise url_error(f"{what} must not carry credentials")
        port = port or (443 if scheme == "https" else 80)
        literal = _address(host)
        if literal is not None:
            listed = self._listed_address(literal) or (self.any_public and literal.is_global)
            if not listed:
                raise url_error(f"{what}: address {host[:60]} is not in R2_FETCH_ALLOWLIST")
            return CheckedUrl(url, scheme, host, port, (str(literal),))
        if not self._listed_name(host):
            raise url_error(f"{what}: host {host[:100]!r} is not in R2_FETCH_ALLOWLIST")
        if not resolve:
            return CheckedUrl(url, scheme, host, port, ())
        return CheckedUrl(url, scheme, host, port, self.resolve(host, port, what))

    def resolve(self, host: str, port: int, what: str) -> tuple[str, ...]:
        """Every address of ``host``; refused when any is non-public and not listed (no mixed answers)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise url_error(f"{what}: host {host[:100]!r} does not resolve ({err})") from None
        addresses: list[str] = []
        for info in infos:
            ip = _address(str(info[4][0]))
            if ip is None:
                continue
            if not ip.is_global and not self._listed_address(ip):
                raise url_error(f"{what}: host {host[:100]!r} resolves to the non-public address {ip}, which "
                                "R2_FETCH_ALLOWLIST does not name")
            if str(ip) not in addresses:
                addresses.append(str(ip))
        if not addresses:
            raise url_error(f"{what}: host {host[:100]!r} has no address")
        return tuple(addresses)
