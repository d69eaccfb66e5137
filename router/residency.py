"""Where a URL sends bytes: on the premises or off them (invariant 4, decided by the address).

A self-hosted backend's catalog entry says what the *model* is, not where the *server* is: the same
model id can be served on a GPU box down the hall or by a public API. So an HTTP backend decides
from its ``base_url``'s host:

- on the premises: ``localhost`` (and ``*.localhost``, RFC 6761), loopback addresses
  (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10), private networks (RFC 1918:
  10/8, 172.16/12, 192.168/16; RFC 4193: fc00::/7), and IPv4-mapped IPv6 forms of those;
- also on the premises: a host name the operator lists explicitly as internal (an exact name, or a
  ``.domain`` suffix entry that matches every name under it);
- off the premises: every other host (public addresses, and every other name: a name does not say
  where it resolves, so ``gpu-box`` or ``vllm.internal`` count as internal only when listed).

No DNS lookup is made: what decides is the URL as written and the operator's list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["HostResidency", "host_residency", "normalize_host"]

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")  # RFC 1918, RFC 4193
)


@dataclass(frozen=True, slots=True)
class HostResidency:
    """Whether a URL's host is on the premises, and why, in words for an explanation."""

    host: str
    on_premise: bool
    reason: str


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets."""
    return host.strip().strip("[]").rstrip(".").lower()


def _address_kind(host: str) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if any(address in network for network in _PRIVATE_NETWORKS):
        return "a private address"
    return ""


def _listed(host: str, internal_hosts: Iterable[str]) -> bool:
    for entry in internal_hosts:
        name = normalize_host(entry)
        if not name:
            continue
        if name.startswith("."):  # a domain: every name under it, and the domain itself
            if host.endswith(name) or host == name[1:]:
                return True
        elif host == name:
            return True
    return False


def host_residency(url: str, internal_hosts: Iterable[str] = ()) -> HostResidency:
    """Where ``url`` sends bytes, judged from its host and the operator's ``internal_hosts``."""
    try:
        host = normalize_host(urlsplit(url).hostname or "")
    except ValueError:
        host = ""
    if not host:
        return HostResidency("", False, f"its URL has no host that can be judged ({url[:60]!r})")
    if host == "localhost" or host.endswith(".localhost"):
        return HostResidency(host, True, f"{host} is this machine")
    kind = _address_kind(host.split("%")[0])
    if kind:
        return HostResidency(host, True, f"{host} is {kind}")
    if _listed(host, internal_hosts):
        return HostResidency(host, True, f"{host} is listed in internal_hosts")
    what = "a public address" if kind == "" else "a host name not listed in internal_hosts"
    return HostResidency(
        host,
        False,
        f"sends documents to {host}, {what} (not loopback, link-local or private; list the host in "
        "internal_hosts if it is inside your network)",
    )
