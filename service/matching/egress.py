"""Where the service may send requests: webhooks go to the public internet only, unless an
administrator allows a host or network (``HOMEWARD_WEBHOOK_ALLOWED_TARGETS``), so a key
holder cannot make the service probe loopback or the private network behind it."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from service.errors import InvalidInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressPolicy:
    def __init__(self, allowed: list[str]) -> None:
        self.hosts = {a.lower() for a in allowed if not _is_network(a)}
        self.networks: list[Network] = [
            ipaddress.ip_network(a, strict=False) for a in allowed if _is_network(a)
        ]

    def check(self, url: str) -> None:
        """InvalidInput unless ``url`` is http(s) to a public address or an allowed one."""
        try:
            parts = urlsplit(url)
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError as err:  # e.g. "http://[": an unclosed IPv6 address, a bad port
            raise InvalidInput("the webhook URL is malformed") from err
        if parts.scheme not in ("http", "https") or not host:
            raise InvalidInput("a webhook URL must be http:// or https:// with a host")
        if host in self.hosts:
            return
        try:
            port = port or (443 if parts.scheme == "https" else 80)
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except (OSError, ValueError) as err:
            raise InvalidInput(f"the webhook host {host!r} cannot be resolved") from err
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not self._allowed(address):
                raise InvalidInput(
                    "a webhook URL must not point at a loopback, private, link-local, "
                    "multicast or reserved address"
                )

    def _allowed(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
