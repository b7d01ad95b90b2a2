"""Which URLs a model may ask to read: public http(s) hosts only.

:func:`check_url` refuses anything but ``http``/``https`` with a host, then every address the host
stands for: a literal IP in any spelling a browser or ``inet_aton`` accepts (``127.1``,
``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``[::1]``, ``[::ffff:127.0.0.1]``,
percent-encoded hosts) or, for a name, every address the resolver returns. Refused: loopback,
private, link-local, multicast, reserved, unspecified and other non-global addresses, including
IPv4 addresses embedded in IPv6 ones (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo).

The resolver is injectable (``resolver(host) -> addresses``; the default is ``socket.getaddrinfo``),
and :func:`acheck_url` runs it in a thread. What this cannot see: a page that redirects elsewhere,
or a name that resolves differently for the reader service (DNS rebinding); the reader fetches the
page, not this process, so those reach the reader's network, not ours.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import string
import urllib.parse
from collections.abc import Callable, Iterable

from metis_pytest.tools.web import ToolError

__all__ = ["Resolver", "UnsafeURL", "acheck_url", "address_problem", "check_url", "system_resolver"]

Resolver = Callable[[str], Iterable[str]]
"""``resolver(host)`` -> the IP addresses (strings) the host name stands for."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + "-._~")


class UnsafeURL(ToolError):
    """A URL the tools will not read; never retryable. The message is one line naming the reason."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused {_shown(url)}: {reason}", retryable=False)
        self.url = url
        self.reason = reason


def _shown(url: str, limit: int = 200) -> str:
    one_line = " ".join(str(url).split())
    return one_line if len(one_line) <= limit else one_line[:limit] + "..."


def system_resolver(host: str) -> list[str]:
    """Every address ``socket.getaddrinfo`` gives for ``host`` (blocking)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        transient = exc.errno in {getattr(socket, "EAI_AGAIN", None), getattr(socket, "EAI_SYSTEM", None)}
        raise ToolError(f"cannot resolve host {host!r}: {exc.strerror or exc}", retryable=transient) from None
    except UnicodeError:
        raise ToolError(f"cannot resolve host {host!r}: not a valid host name", retryable=False) from None
    return sorted({str(info[4][0]) for info in infos})


# --------------------------------------------------------------------- addresses


def _v4_problem(ip: ipaddress.IPv4Address) -> str | None:
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:  # before is_private, which includes 240.0.0.0/4 too
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 one carries, with the name of the scheme, if any."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be read from (``"a loopback address"``...), or ``None`` for a public address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_problem(ip)
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    embedded = _embedded_v4(ip)
    if embedded is not None:
        scheme, v4 = embedded
        problem = _v4_problem(v4)
        if problem is not None:
            return f"{scheme} {v4}, {problem}"
        if scheme == "IPv4-mapped":
            return None  # it is that public IPv4 address
    if ip.is_site_local or ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address"
    return None


# --------------------------------------------------------------------- hosts


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 literal as ``inet_aton`` reads it: decimal, ``0x`` hex or ``0``-led octal."""
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if digits == "":
            return 0
        if not all(c in string.hexdigits for c in digits):
            return None
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
        if not all(c in "01234567" for c in digits):
            return None
    else:
        digits, base = part, 10
        if not digits or not all(c in string.digits for c in digits):
            return None
    return int(digits, base)


def _looks_numeric(part: str) -> bool:
    """WHATWG's "ends in a number": the last label is all digits or ``0x`` hex."""
    if part and all(c in string.digits for c in part):
        return True
    return part[:2] in ("0x", "0X") and all(c in string.hexdigits for c in part[2:])


def parse_ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """``host`` as an IPv4 address in any form browsers accept (``127.1``, ``0x7f000001``, ``2130706433``,
    ``0177.0.0.1``, a trailing dot), ``None`` for a name; ``ValueError`` for a malformed numeric host."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    if not parts or not _looks_numeric(parts[-1]):
        return None
    if len(parts) > 4:
        raise ValueError("a malformed IPv4 address")
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        raise ValueError("a malformed IPv4 address")
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        raise ValueError("an out-of-range IPv4 address")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _split(url: str) -> tuple[str, str | IPAddress]:
    """The host of ``url`` (a name, or the address it spells), or :class:`UnsafeURL`."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeURL(str(url), "not a URL")
    if any(c in url for c in "\r\n\t\x00"):
        raise UnsafeURL(url, "control characters in the URL")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        hostname = parts.hostname
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError as exc:
        raise UnsafeURL(url, f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL(url, f"only http and https URLs can be read, not {scheme + ':' if scheme else 'this'}")
    if not hostname:
        raise UnsafeURL(url, "no host")
    if "[" in parts.netloc:  # a bracketed IPv6 literal
        try:
            return hostname, ipaddress.IPv6Address(urllib.parse.unquote(hostname))
        except ValueError:
            raise UnsafeURL(url, f"{hostname!r} is not a valid IPv6 address") from None
    host = urllib.parse.unquote(hostname).lower()
    if not host or any(c not in _HOST_CHARS and ord(c) < 128 for c in host):
        raise UnsafeURL(url, f"{hostname!r} is not a valid host name")
    try:
        v4 = parse_ipv4_literal(host)
    except ValueError as exc:
        raise UnsafeURL(url, f"{hostname!r} is {exc}") from None
    if v4 is not None:
        return host, v4
    name = host.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        raise UnsafeURL(url, f"{hostname} is a loopback name")
    return name, name


def _verdict(url: str, host: str, addresses: Iterable[str]) -> None:
    seen = False
    for text in addresses:
        seen = True
        try:
            ip = ipaddress.ip_address(str(text))
        except ValueError:
            raise UnsafeURL(url, f"{host} resolved to {text!r}, not an IP address") from None
        problem = address_problem(ip)
        if problem is not None:
            raise UnsafeURL(url, f"{host} resolves to {ip}, {problem}")
    if not seen:
        raise UnsafeURL(url, f"{host} resolves to no address")


def check_url(url: str, resolver: Resolver | None = None, *, resolve: bool = True) -> str:
    """``url`` if the tools may read it; raises :class:`UnsafeURL` (one line, never retryable) if not.

    A name is resolved with ``resolver`` (default :func:`system_resolver`, which raises a
    :class:`ToolError` when the name cannot be resolved); ``resolve=False`` checks the URL's form and
    literal addresses only (no DNS)."""
    host, target = _split(url)
    if not isinstance(target, str):
        problem = address_problem(target)
        if problem is not None:
            raise UnsafeURL(url, f"{target} is {problem}")
        return url
    if resolve:
        _verdict(url, host, (resolver or system_resolver)(host))
    return url


async def acheck_url(url: str, resolver: Resolver | None = None, *, resolve: bool = True) -> str:
    """:func:`check_url`, with the resolver (which may block on DNS) run in a thread."""
    host, target = _split(url)
    if not isinstance(target, str) or not resolve:
        return check_url(url, resolve=False)
    addresses = await asyncio.to_thread(lambda: list((resolver or system_resolver)(host)))
    _verdict(url, host, addresses)
    return url
